//! Crypto-shredding at the store: every store read (forward, backward, the
//! global log, queries) yields a forgotten subject's fields redacted and
//! other subjects' fields intact, and the hash chain verifies as before; the backend never holds the plaintext; a
//! forgotten key leaves a tombstone; appending for a forgotten subject and
//! reading altered ciphertext (or keys under another master key) are typed
//! errors. On memory, SQLite (a file) and PostgreSQL.

use annals::Error;
use annals::pii::{StoredSubjectKey, SubjectKeyStore};
use annals::prelude::*;
use annals_tests::backends::RawAccess;
use annals_tests::pii::{MemberJoined, PiiBackend, joined};

const ADA_EMAIL: &str = "ada.lovelace@planted.test";
const BOB_EMAIL: &str = "bob.babbage@planted.test";

/// The global log once all `expected` events are readable: PostgreSQL
/// shows an event only once no older transaction is still running (other
/// tests' transactions may hold it back briefly).
async fn read_all_settled(store: &dyn EventStore, expected: usize) -> Vec<RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let events = store
            .read_all(LogPosition::START, 100)
            .await
            .expect("read_all");
        if events.len() >= expected || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("stream id")
}

/// Ada and Bob join a shared directory stream; Ada also has her own stream.
async fn write_both(b: &PiiBackend) {
    let directory = vec![
        NewEvent::from_event(&joined("ada", ADA_EMAIL)).expect("encode"),
        NewEvent::from_event(&joined("bob", BOB_EMAIL)).expect("encode"),
    ];
    b.pii
        .append(&stream("directory-1"), ExpectedVersion::NoStream, directory)
        .await
        .expect("append directory");
    let own = vec![NewEvent::from_event(&joined("ada", ADA_EMAIL)).expect("encode")];
    b.pii
        .append(&stream("member-ada"), ExpectedVersion::NoStream, own)
        .await
        .expect("append member");
}

fn decode_all(events: &[RecordedEvent]) -> Vec<MemberJoined> {
    events
        .iter()
        .map(|event| event.decode().expect("decodes after reveal"))
        .collect()
}

fn assert_ada_redacted_bob_intact(read_path: &str, events: Vec<MemberJoined>) {
    assert_eq!(events.len(), 3, "{read_path}: {events:?}");
    for event in events {
        match event.member_id.as_str() {
            "ada" => {
                assert_eq!(event.email, "[redacted]", "{read_path}");
                assert_eq!(event.display_name, "[redacted]", "{read_path}");
                assert_eq!(event.plan, "pro", "{read_path}: other fields stay");
            }
            "bob" => {
                assert_eq!(event.email, BOB_EMAIL, "{read_path}");
                assert_eq!(event.display_name, "Name of bob", "{read_path}");
            }
            other => panic!("{read_path}: unexpected member {other}"),
        }
    }
}

async fn every_store_read(b: &PiiBackend) -> Vec<(&'static str, Vec<MemberJoined>)> {
    let mut forward = b
        .pii
        .read_stream(&stream("directory-1"), 1, 10)
        .await
        .expect("read_stream");
    forward.extend(
        b.pii
            .read_stream(&stream("member-ada"), 1, 10)
            .await
            .expect("read_stream"),
    );
    let mut backward = b
        .pii
        .read_stream_backward(&stream("directory-1"), None, 10)
        .await
        .expect("read_stream_backward");
    backward.extend(
        b.pii
            .read_stream_backward(&stream("member-ada"), None, 10)
            .await
            .expect("read_stream_backward"),
    );
    let all = read_all_settled(&*b.pii, 3).await;
    let queried = b
        .pii
        .query(&EventQuery::new().event_type("test.pii.member_joined"))
        .await
        .expect("query")
        .events;
    vec![
        ("read_stream", decode_all(&forward)),
        ("read_stream_backward", decode_all(&backward)),
        ("read_all", decode_all(&all)),
        ("query", decode_all(&queried)),
    ]
}

async fn store_reads_redact_only_the_forgotten_subject(b: PiiBackend) {
    write_both(&b).await;
    for (read_path, events) in every_store_read(&b).await {
        let emails: Vec<&str> = events.iter().map(|e| e.email.as_str()).collect();
        assert!(
            emails.contains(&ADA_EMAIL),
            "{read_path} before forget: {emails:?}"
        );
        assert!(
            emails.contains(&BOB_EMAIL),
            "{read_path} before forget: {emails:?}"
        );
    }

    let chain_before = b.pii.verify_log().await.expect("verify");
    assert!(chain_before.is_intact(), "{:?}", chain_before.first_break);
    let forgotten = b.pii.forget("ada").await.expect("forget");
    // The chain covers the stored ciphertext, which forgetting leaves alone.
    let chain_after = b.pii.verify_log().await.expect("verify after forget");
    assert_eq!(chain_after, chain_before);
    assert_eq!(forgotten.subject, "ada");
    assert_eq!(
        forgotten.streams,
        vec![stream("directory-1"), stream("member-ada")]
    );
    for (read_path, events) in every_store_read(&b).await {
        assert_ada_redacted_bob_intact(read_path, events);
    }
    // Forgetting twice is harmless.
    assert!(b.pii.forget("ada").await.is_ok());
}

async fn the_backend_never_holds_the_plaintext(b: PiiBackend) {
    write_both(&b).await;
    let stored = read_all_settled(&*b.backend.store, 3).await;
    assert_eq!(stored.len(), 3);
    for event in &stored {
        let json = event.payload.as_json();
        assert!(!json.contains("planted.test"), "{json}");
        assert!(!json.contains("Name of"), "{json}");
        assert!(json.contains("\"annals_pii\""), "{json}");
        assert_eq!(event.payload.to_value()["plan"], "pro", "{json}");
    }
    match &b.backend.raw {
        RawAccess::Memory => {}
        RawAccess::Sqlite(pool) => {
            // Everything SQLite wrote: the database and its write-ahead log.
            sqlx::query("PRAGMA wal_checkpoint(FULL)")
                .execute(pool)
                .await
                .expect("checkpoint");
            let dir = b.backend.dir().expect("a file-backed store");
            let mut scanned = 0;
            for entry in std::fs::read_dir(dir).expect("list the store's files") {
                let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
                scanned += bytes.len();
                assert!(
                    !bytes
                        .windows(b"planted.test".len())
                        .any(|w| w == b"planted.test"),
                    "the SQLite files hold a planted email"
                );
                assert!(
                    !bytes.windows(b"Name of".len()).any(|w| w == b"Name of"),
                    "the SQLite files hold a planted name"
                );
            }
            assert!(scanned > 0, "scanned the SQLite files");
        }
        RawAccess::Postgres(pool) => {
            let payloads: Vec<String> =
                sqlx::query_scalar(b.backend.sql("SELECT payload::text FROM annals_events"))
                    .fetch_all(pool)
                    .await
                    .expect("payloads");
            assert_eq!(payloads.len(), 3);
            for payload in payloads {
                assert!(!payload.contains("planted.test"), "{payload}");
            }
        }
    }
}

async fn a_forgotten_key_leaves_a_tombstone_and_is_never_recreated(
    b: PiiBackend,
    keys: &dyn SubjectKeyStore,
) {
    write_both(&b).await;
    assert!(matches!(
        keys.load_subject_key(None, "ada").await.expect("load"),
        Some(StoredSubjectKey::Wrapped(_))
    ));
    b.pii.forget("ada").await.expect("forget");
    assert!(matches!(
        keys.load_subject_key(None, "ada").await.expect("load"),
        Some(StoredSubjectKey::Forgotten { .. })
    ));
    assert!(matches!(
        keys.load_subject_key(None, "bob").await.expect("load"),
        Some(StoredSubjectKey::Wrapped(_))
    ));
    let row: Option<(bool, bool)> = match &b.backend.raw {
        RawAccess::Memory => None,
        RawAccess::Sqlite(pool) => Some(
            sqlx::query_as(b.backend.sql(
                "SELECT wrapped_key IS NULL, forgotten_at IS NOT NULL FROM annals_subject_keys WHERE subject = 'ada'",
            ))
            .fetch_one(pool)
            .await
            .expect("tombstone row"),
        ),
        RawAccess::Postgres(pool) => Some(
            sqlx::query_as(b.backend.sql(
                "SELECT wrapped_key IS NULL, forgotten_at IS NOT NULL FROM annals_subject_keys WHERE subject = 'ada'",
            ))
            .fetch_one(pool)
            .await
            .expect("tombstone row"),
        ),
    };
    if let Some(row) = row {
        assert_eq!(row, (true, true), "the key is gone, the tombstone stays");
    }

    let again = NewEvent::from_event(&joined("ada", ADA_EMAIL)).expect("encode");
    let error = b
        .pii
        .append(&stream("member-ada"), ExpectedVersion::Any, vec![again])
        .await
        .expect_err("a forgotten subject takes no new personal data");
    match error {
        Error::SubjectForgotten {
            subject,
            event_type,
        } => {
            assert_eq!(subject, "ada");
            assert_eq!(event_type, "test.pii.member_joined");
        }
        other => panic!("expected SubjectForgotten, got {other:?}"),
    }
    assert_eq!(
        b.pii
            .stream_version(&stream("member-ada"))
            .await
            .expect("version"),
        1,
        "nothing was written"
    );
    // Bob still appends.
    let bob = NewEvent::from_event(&joined("bob", BOB_EMAIL)).expect("encode");
    b.pii
        .append(&stream("member-bob"), ExpectedVersion::NoStream, vec![bob])
        .await
        .expect("bob appends");
}

/// A stored envelope moved to another event (another event id) does not
/// open: the read is a typed error naming stream, version and field.
async fn altered_ciphertext_is_a_typed_error(b: PiiBackend) {
    write_both(&b).await;
    let stored = b
        .backend
        .store
        .read_stream(&stream("member-ada"), 1, 1)
        .await
        .expect("raw read");
    let sealed = stored[0].payload.as_json().to_owned();
    b.backend
        .plant_raw_event("member-eve", 1, "test.pii.member_joined", &sealed)
        .await
        .expect("planted");
    let error = b
        .pii
        .read_stream(&stream("member-eve"), 1, 10)
        .await
        .expect_err("an envelope bound to another event does not open");
    match error {
        Error::PiiField {
            stream,
            version,
            field,
            ..
        } => {
            assert_eq!(stream, "member-eve");
            assert_eq!(version, 1);
            assert_eq!(field, "email");
        }
        other => panic!("expected PiiField, got {other:?}"),
    }

    // A flipped ciphertext byte in place of the original, on its own stream.
    let mut value: serde_json::Value = serde_json::from_str(&sealed).expect("json");
    let text = value["email"]["annals_pii"]
        .as_str()
        .expect("an envelope")
        .to_owned();
    let mut chars: Vec<char> = text.chars().collect();
    let at = chars.len() - 6;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    value["email"]["annals_pii"] = serde_json::Value::String(chars.into_iter().collect());
    b.backend
        .plant_raw_event(
            "member-mallory",
            1,
            "test.pii.member_joined",
            &value.to_string(),
        )
        .await
        .expect("planted");
    assert!(matches!(
        b.pii.read_stream(&stream("member-mallory"), 1, 10).await,
        Err(Error::PiiField { version: 1, .. })
    ));
    // The forgotten subject's altered envelope is redacted, never an error.
    b.pii.forget("ada").await.expect("forget");
    let redacted: MemberJoined = b
        .pii
        .read_stream(&stream("member-eve"), 1, 10)
        .await
        .expect("a forgotten subject's fields are redacted, whatever they hold")[0]
        .decode()
        .expect("decode");
    assert_eq!(redacted.email, "[redacted]");
}

/// Opening a payload's sealed fields replaces each envelope in the stored
/// text with the field's value and keeps every other member as the backend
/// returned it (the memory store returns the text it was given).
#[tokio::test]
async fn an_opened_payload_is_the_stored_text_with_its_envelopes_replaced() {
    let b = PiiBackend::memory().await;
    write_both(&b).await;
    b.pii.forget("ada").await.expect("forget ada");
    let stored = b
        .backend
        .store
        .read_stream(&stream("directory-1"), 1, 10)
        .await
        .expect("read_stream");
    let opened = b
        .pii
        .read_stream(&stream("directory-1"), 1, 10)
        .await
        .expect("read_stream");
    let expected = |event: &RecordedEvent, email: &str, name: &str| {
        let members: serde_json::Map<String, serde_json::Value> =
            event.payload.decode().expect("an object");
        let mut text = event.payload.as_json().to_owned();
        for (field, value) in [("email", email), ("name", name)] {
            let envelope = members[field].to_string();
            assert!(text.contains(&envelope), "{field} is sealed in {text}");
            text = text.replace(&envelope, &serde_json::Value::from(value).to_string());
        }
        text
    };
    assert_eq!(
        opened[0].payload.as_json(),
        expected(&stored[0], "[redacted]", "[redacted]"),
        "the forgotten subject's fields redacted in place"
    );
    assert_eq!(
        opened[1].payload.as_json(),
        expected(&stored[1], BOB_EMAIL, "Name of bob")
    );
}

#[tokio::test]
async fn memory_store_reads_redact_only_the_forgotten_subject() {
    store_reads_redact_only_the_forgotten_subject(PiiBackend::memory().await).await;
}

#[tokio::test]
async fn sqlite_store_reads_redact_only_the_forgotten_subject() {
    store_reads_redact_only_the_forgotten_subject(PiiBackend::sqlite().await).await;
}

#[tokio::test]
async fn postgres_store_reads_redact_only_the_forgotten_subject() {
    store_reads_redact_only_the_forgotten_subject(PiiBackend::postgres().await).await;
}

#[tokio::test]
async fn memory_backend_never_holds_the_plaintext() {
    the_backend_never_holds_the_plaintext(PiiBackend::memory().await).await;
}

#[tokio::test]
async fn sqlite_files_never_hold_the_plaintext() {
    the_backend_never_holds_the_plaintext(PiiBackend::sqlite().await).await;
}

#[tokio::test]
async fn postgres_rows_never_hold_the_plaintext() {
    the_backend_never_holds_the_plaintext(PiiBackend::postgres().await).await;
}

#[tokio::test]
async fn memory_forgotten_key_is_a_tombstone() {
    let store = std::sync::Arc::new(InMemoryEventStore::new());
    let mut backend = annals_tests::backends::TestStore::memory().await;
    backend.store = store.clone();
    let b = PiiBackend::over(backend, store.clone());
    a_forgotten_key_leaves_a_tombstone_and_is_never_recreated(b, &*store).await;
}

#[tokio::test]
async fn sqlite_forgotten_key_is_a_tombstone() {
    let (backend, keys) = annals_tests::backends::TestStore::sqlite_with_keys().await;
    let b = PiiBackend::over(backend, keys.clone());
    a_forgotten_key_leaves_a_tombstone_and_is_never_recreated(b, &*keys).await;
}

#[tokio::test]
async fn postgres_forgotten_key_is_a_tombstone() {
    let (backend, keys) = annals_tests::backends::TestStore::postgres_with_keys().await;
    let b = PiiBackend::over(backend, keys.clone());
    a_forgotten_key_leaves_a_tombstone_and_is_never_recreated(b, &*keys).await;
}

#[tokio::test]
async fn sqlite_altered_ciphertext_is_a_typed_error() {
    altered_ciphertext_is_a_typed_error(PiiBackend::sqlite().await).await;
}

#[tokio::test]
async fn postgres_altered_ciphertext_is_a_typed_error() {
    altered_ciphertext_is_a_typed_error(PiiBackend::postgres().await).await;
}

/// Keys wrapped by one master key do not open under another: a typed error
/// naming the subject, never plaintext and never a silent redaction.
#[tokio::test]
async fn another_master_key_is_a_typed_error() {
    let b = PiiBackend::sqlite().await;
    write_both(&b).await;
    let path = b.backend.dir().expect("a SQLite file").join("events.db");
    let reopened = std::sync::Arc::new(
        annals::store::SqliteEventStore::open(path)
            .await
            .expect("reopen"),
    );
    let other = annals::pii::PiiEventStore::new(
        reopened.clone(),
        reopened,
        annals::pii::MasterKey::generate(),
    );
    match other.read_stream(&stream("member-ada"), 1, 10).await {
        Err(Error::SubjectKey { subject }) => assert_eq!(subject, "ada"),
        other => panic!("expected SubjectKey, got {other:?}"),
    }
}

/// Subjects are named within their tenant: acme's and globex's member `42`
/// have keys of their own, forgetting acme's leaves globex's readable, and
/// the unscoped `forget("42")` (the subjects of events without a tenant)
/// touches neither.
async fn subjects_are_named_within_their_tenant(b: PiiBackend) {
    for tenant in ["acme", "globex"] {
        let event = NewEvent::from_event(&joined("42", &format!("m42@{tenant}.test")))
            .expect("encode")
            .with_metadata(Metadata::new().with_tenant(tenant));
        b.pii
            .append(
                &stream(&format!("member-{tenant}-42")),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .expect("append");
    }
    let emails = |events: Vec<RecordedEvent>| -> Vec<String> {
        decode_all(&events)
            .into_iter()
            .map(|member| member.email)
            .collect()
    };
    let read = || async {
        let acme = b
            .pii
            .read_stream(&stream("member-acme-42"), 1, 10)
            .await
            .expect("read");
        let globex = b
            .pii
            .read_stream(&stream("member-globex-42"), 1, 10)
            .await
            .expect("read");
        (emails(acme), emails(globex))
    };
    let forgotten = b.pii.forget("42").await.expect("forget the tenant-less 42");
    assert_eq!((forgotten.tenant, forgotten.streams.len()), (None, 0));
    assert_eq!(
        read().await,
        (
            vec!["m42@acme.test".to_owned()],
            vec!["m42@globex.test".to_owned()]
        )
    );
    let forgotten = b
        .pii
        .forget_in_tenant(Some("acme"), "42")
        .await
        .expect("forget acme's 42");
    assert_eq!(forgotten.streams, vec![stream("member-acme-42")]);
    assert_eq!(
        read().await,
        (
            vec!["[redacted]".to_owned()],
            vec!["m42@globex.test".to_owned()]
        )
    );
}

#[tokio::test]
async fn memory_subjects_are_named_within_their_tenant() {
    subjects_are_named_within_their_tenant(PiiBackend::memory().await).await;
}

#[tokio::test]
async fn sqlite_subjects_are_named_within_their_tenant() {
    subjects_are_named_within_their_tenant(PiiBackend::sqlite().await).await;
}

#[tokio::test]
async fn postgres_subjects_are_named_within_their_tenant() {
    subjects_are_named_within_their_tenant(PiiBackend::postgres().await).await;
}
