//! `import_log` on SQLite and PostgreSQL: a log copied between them keeps
//! every event's id, stream, version, type, payload, metadata, tags and
//! recording time, in the same order, and the target's hash chain holds;
//! an import that cannot be written whole writes nothing.

use std::sync::Arc;
use std::time::Duration;

use annals::pii::{MasterKey, PiiEventStore, StoredSubjectKey, SubjectKeyRecord, SubjectKeyStore};
use annals::prelude::*;
use annals::store::import::ImportItem;
use annals::store::{EventQuery, ImportReport, PostgresEventStore, SqliteEventStore};
use annals_tests::backends::{application_role_store, fresh_postgres_store};
use annals_tests::pii::join_members;
use futures_util::stream;
use serde_json::json;

/// Either store, for the round trips.
enum Store {
    /// The store, and the directory its file lives in while it does.
    Sqlite(SqliteEventStore, #[allow(dead_code)] tempfile::TempDir),
    Postgres(PostgresEventStore),
}

impl Store {
    async fn sqlite() -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteEventStore::open(dir.path().join("events.db"))
            .await
            .expect("open SQLite");
        Store::Sqlite(store, dir)
    }

    async fn postgres() -> Store {
        Store::Postgres(fresh_postgres_store().await)
    }

    fn events(&self) -> &dyn EventStore {
        match self {
            Store::Sqlite(store, _) => store,
            Store::Postgres(store) => store,
        }
    }

    async fn import(&self, events: Vec<Result<RecordedEvent>>) -> Result<ImportReport> {
        match self {
            Store::Sqlite(store, _) => store.import_log(stream::iter(events)).await,
            Store::Postgres(store) => store.import_log(stream::iter(events)).await,
        }
    }
}

/// The whole log, once `expected` events are visible (other tests'
/// transactions on the shared server hold back a gap-safe read).
async fn whole_log(store: &dyn EventStore, expected: usize) -> Vec<RecordedEvent> {
    for _ in 0..300 {
        let log = store
            .read_all(LogPosition::START, 10_000)
            .await
            .expect("read the log");
        if log.len() >= expected {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log never showed {expected} events");
}

/// How many events the store holds, committed or not yet visible to a
/// gap-safe read.
async fn stored(store: &dyn EventStore) -> u64 {
    store.count(&EventQuery::new()).await.expect("count")
}

/// A log with what an import must keep: two tenants holding one stream
/// id, a stream without a tenant, several events per append (one
/// recording time) and appends at different times, full metadata, tags,
/// a later schema version, and a payload whose text PostgreSQL would
/// reformat.
async fn write_source(store: &dyn EventStore) -> usize {
    let user = StreamId::new("user-1").expect("stream id");
    let role = StreamId::new("role-admin").expect("stream id");
    let acme = |actor: &str| {
        Metadata::new()
            .with_tenant("acme")
            .with_actor(actor)
            .with_correlation_id(uuid::Uuid::now_v7())
            .with_causation_id(uuid::Uuid::now_v7())
            .with_trace_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .with_header("client", "web")
    };
    let registered = NewEvent::new(
        "iam.user.registered",
        Payload::from_json(r#"{"name": "Ada \u00e9", "email":"ada@example.test",  "n": 1.50, "nested": {"b": [1, 2], "a": null}}"#)
            .expect("json"),
    )
    .with_metadata(acme("admin"))
    .with_tags(["email:ada@example.test"]);
    let renamed = NewEvent::json("iam.user.renamed", &json!({ "name": "Ada L." }))
        .expect("json")
        .with_metadata(acme("admin"))
        .with_schema_version(3);
    store
        .append(&user, ExpectedVersion::NoStream, vec![registered, renamed])
        .await
        .expect("append acme's user");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let other = NewEvent::json(
        "iam.user.registered",
        &json!({ "email": "bob@example.test" }),
    )
    .expect("json")
    .with_metadata(Metadata::new().with_tenant("globex"))
    .with_tags(["email:bob@example.test"]);
    let role_created =
        NewEvent::json("iam.role.created", &json!({ "permissions": ["read"] })).expect("json");
    store
        .append_batch(vec![
            StreamAppend::new(user.clone(), ExpectedVersion::NoStream, vec![other]),
            StreamAppend::new(role.clone(), ExpectedVersion::NoStream, vec![role_created]),
        ])
        .await
        .expect("append globex's user and a role");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let deactivated = NewEvent::json("iam.user.deactivated", &json!({}))
        .expect("json")
        .with_metadata(acme("ops"));
    let granted = NewEvent::json("iam.role.granted", &json!({ "to": "user-1" })).expect("json");
    store
        .append_batch(vec![
            StreamAppend::new(user, ExpectedVersion::Exact(2), vec![deactivated]),
            StreamAppend::new(role, ExpectedVersion::Exact(1), vec![granted]),
        ])
        .await
        .expect("append a third acme event and a grant");
    6
}

/// Everything but the position, which is the target's; payloads as JSON
/// values (PostgreSQL keeps `jsonb`'s normal form of the text).
fn assert_same_events(source: &[RecordedEvent], target: &[RecordedEvent]) {
    assert_eq!(source.len(), target.len());
    for (from, to) in source.iter().zip(target) {
        let what = format!(
            "{} v{} of {}",
            from.event_type, from.version, from.stream_id
        );
        assert_eq!(from.event_id, to.event_id, "{what}");
        assert_eq!(from.stream_id, to.stream_id, "{what}");
        assert_eq!(from.version, to.version, "{what}");
        assert_eq!(from.event_type, to.event_type, "{what}");
        assert_eq!(from.schema_version, to.schema_version, "{what}");
        assert_eq!(from.payload.to_value(), to.payload.to_value(), "{what}");
        assert_eq!(from.metadata, to.metadata, "{what}");
        assert_eq!(from.recorded_at, to.recorded_at, "{what}");
        assert_eq!(from.tags, to.tags, "{what}");
    }
}

async fn round_trip(source: Store, target: Store) {
    let count = write_source(source.events()).await;
    let log = whole_log(source.events(), count).await;
    assert_eq!(log.len(), count);
    let report = target
        .import(log.iter().cloned().map(Ok).collect())
        .await
        .expect("import");
    assert_eq!(report.events, count as u64);
    assert_eq!(
        report.streams, 3,
        "user-1 of acme and of globex, and the role"
    );
    let copied = whole_log(target.events(), count).await;
    assert_same_events(&log, &copied);
    assert_eq!(
        report.last_position,
        copied.last().map(|event| event.position)
    );
    let chain = target.events().verify_log().await.expect("verify");
    assert!(chain.is_intact(), "{:?}", chain.first_break);
    assert_eq!(chain.events_checked, count as u64);
    // Tags are indexed as on an append.
    let tagged = target
        .events()
        .query(&EventQuery::new().tag("email:bob@example.test"))
        .await
        .expect("query by tag");
    assert_eq!(tagged.events.len(), 1);
    assert_eq!(tagged.events[0].event_id, log[2].event_id);
    // The streams go on from their imported versions.
    let next = NewEvent::json("iam.role.revoked", &json!({})).expect("json");
    let appended = target
        .events()
        .append(
            &StreamId::new("role-admin").expect("id"),
            ExpectedVersion::Exact(2),
            vec![next],
        )
        .await
        .expect("append after the import");
    assert_eq!(appended.last_version, 3);
    assert!(appended.position > copied[count - 1].position);
}

/// An import can run on a task of its own (`tokio::spawn` needs `Send`).
#[test]
fn imports_can_be_spawned() {
    fn send<T: Send>(_: &T) {}
    let _ = |sqlite: SqliteEventStore, postgres: PostgresEventStore| async move {
        let nothing = || stream::iter(Vec::<Result<RecordedEvent>>::new());
        let on_sqlite = sqlite.import_log(nothing());
        send(&on_sqlite);
        let on_postgres = postgres.import_log(nothing());
        send(&on_postgres);
    };
}

#[tokio::test]
async fn a_sqlite_log_imported_into_postgres_keeps_every_event_as_recorded() {
    round_trip(Store::sqlite().await, Store::postgres().await).await;
}

#[tokio::test]
async fn a_postgres_log_imported_into_sqlite_keeps_every_event_as_recorded() {
    round_trip(Store::postgres().await, Store::sqlite().await).await;
}

/// An import that fails part-way (a stream the target already has, an
/// event id it already holds, an error from the source) leaves the target
/// exactly as it was.
async fn refusals_write_nothing(target: Store) {
    let source = Store::sqlite().await;
    let count = write_source(source.events()).await;
    let log = whole_log(source.events(), count).await;

    let role = StreamId::new("role-admin").expect("id");
    let existing = NewEvent::json("iam.role.created", &json!({})).expect("json");
    target
        .events()
        .append(&role, ExpectedVersion::NoStream, vec![existing])
        .await
        .expect("a stream the target already has");
    let error = target
        .import(log.iter().cloned().map(Ok).collect())
        .await
        .expect_err("the role stream exists");
    assert!(
        matches!(&error, Error::VersionConflict { stream, actual: 1, .. } if stream == "role-admin"),
        "{error}"
    );
    assert_eq!(stored(target.events()).await, 1);

    // An id the target already holds, in a stream it does not.
    let held = NewEvent::json("iam.user.registered", &json!({}))
        .expect("json")
        .with_event_id(log[4].event_id);
    target
        .events()
        .append(
            &StreamId::new("other").expect("id"),
            ExpectedVersion::NoStream,
            vec![held],
        )
        .await
        .expect("an event id the import repeats");
    let without_role: Vec<_> = log
        .iter()
        .filter(|event| event.stream_id.as_str() != "role-admin")
        .cloned()
        .map(Ok)
        .collect();
    let error = target
        .import(without_role)
        .await
        .expect_err("a duplicate event id");
    assert!(error.to_string().contains("event id"), "{error}");

    // The source fails after some events were written.
    let mut failing: Vec<_> = log
        .iter()
        .filter(|event| event.stream_id.as_str() == "user-1")
        .cloned()
        .map(Ok)
        .collect();
    failing.insert(
        2,
        Err(Error::InvalidInput {
            field: "export file",
            reason: "line 4 is not JSON".to_owned(),
        }),
    );
    let error = target.import(failing).await.expect_err("the source failed");
    assert!(error.to_string().contains("line 4"), "{error}");
    assert_eq!(
        stored(target.events()).await,
        2,
        "only the two events appended directly"
    );
    let user = StreamId::new("user-1").expect("id");
    assert_eq!(target.events().stream_version(&user).await.ok(), Some(0));
}

#[tokio::test]
async fn a_sqlite_import_that_cannot_be_written_whole_writes_nothing() {
    refusals_write_nothing(Store::sqlite().await).await;
}

#[tokio::test]
async fn a_postgres_import_that_cannot_be_written_whole_writes_nothing() {
    refusals_write_nothing(Store::postgres().await).await;
}

#[tokio::test]
async fn a_postgres_tenant_handle_imports_only_its_tenants_events() {
    let source = Store::sqlite().await;
    let count = write_source(source.events()).await;
    let log = whole_log(source.events(), count).await;
    let owner = fresh_postgres_store().await;
    let acme = application_role_store(&owner)
        .await
        .for_tenant("acme")
        .await
        .expect("tenant handle");

    let error = acme
        .import_log(stream::iter(log.iter().cloned().map(Ok)))
        .await
        .expect_err("globex's event is in the log");
    assert!(error.to_string().contains("globex"), "{error}");
    assert_eq!(stored(&owner).await, 0);

    let own: Vec<_> = log
        .iter()
        .filter(|event| event.metadata.tenant_id.as_deref() == Some("acme"))
        .cloned()
        .collect();
    let report = acme
        .import_log(stream::iter(own.iter().cloned().map(Ok)))
        .await
        .expect("acme's own events");
    assert_eq!(report.events, 3);
    assert_same_events(&own, &whole_log(&owner, 3).await);
}

impl Store {
    fn keys(&self) -> Arc<dyn SubjectKeyStore> {
        match self {
            Store::Sqlite(store, _) => Arc::new(store.clone()),
            Store::Postgres(store) => Arc::new(store.clone()),
        }
    }

    fn shared(&self) -> Arc<dyn EventStore> {
        match self {
            Store::Sqlite(store, _) => Arc::new(store.clone()),
            Store::Postgres(store) => Arc::new(store.clone()),
        }
    }

    async fn import_items(&self, items: Vec<ImportItem>) -> Result<ImportReport> {
        let items = stream::iter(items.into_iter().map(Ok));
        match self {
            Store::Sqlite(store, _) => store.import_log(items).await,
            Store::Postgres(store) => store.import_log(items).await,
        }
    }
}

/// Every key record, a page of one at a time (so paging is exercised).
async fn all_keys(keys: &dyn SubjectKeyStore) -> Vec<SubjectKeyRecord> {
    let mut all: Vec<SubjectKeyRecord> = Vec::new();
    loop {
        let page = keys
            .list_subject_keys(all.last(), 1)
            .await
            .expect("list subject keys");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Personal data travels with its keys: an imported `#[pii]` field opens
/// with the same master key, and a forgotten subject stays forgotten.
async fn subject_keys_travel_with_the_log(source: Store, target: Store) {
    let master = MasterKey::generate();
    let pii = PiiEventStore::new(source.shared(), source.keys(), master.clone());
    join_members(&pii, &["m1", "m2"]).await;
    pii.forget("m2").await.expect("forget m2");
    let keys = all_keys(source.keys().as_ref()).await;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].subject, "m1");
    assert!(matches!(keys[0].key, StoredSubjectKey::Wrapped(_)));
    assert_eq!(keys[0].streams, [StreamId::new("member-m1").expect("id")]);
    assert!(matches!(keys[1].key, StoredSubjectKey::Forgotten { .. }));
    let log = whole_log(source.events(), 2).await;
    let items: Vec<ImportItem> = log
        .iter()
        .cloned()
        .map(ImportItem::from)
        .chain(keys.iter().cloned().map(ImportItem::from))
        .collect();

    // A store holding another key for m1 refuses, and keeps nothing.
    let clashing = Store::sqlite().await;
    clashing
        .keys()
        .create_subject_key(None, "m1", vec![9; 60])
        .await
        .expect("another key for m1");
    let error = clashing
        .import_items(items.clone())
        .await
        .expect_err("m1 has another key there");
    assert!(error.to_string().contains("subject `m1`"), "{error}");
    assert_eq!(stored(clashing.events()).await, 0);

    let report = target.import_items(items).await.expect("import");
    assert_eq!((report.events, report.subject_keys), (2, 2));
    assert_eq!(all_keys(target.keys().as_ref()).await, keys);
    let reader = PiiEventStore::new(target.shared(), target.keys(), master);
    let m1 = reader
        .read_stream(&StreamId::new("member-m1").expect("id"), 1, 10)
        .await
        .expect("read m1");
    assert_eq!(m1[0].payload.to_value()["email"], "m1@example.test");
    let m2 = reader
        .read_stream(&StreamId::new("member-m2").expect("id"), 1, 10)
        .await
        .expect("read m2");
    assert_eq!(m2[0].payload.to_value()["email"], "[redacted]");
}

#[tokio::test]
async fn subject_keys_travel_from_sqlite_to_postgres() {
    subject_keys_travel_with_the_log(Store::sqlite().await, Store::postgres().await).await;
}

#[tokio::test]
async fn subject_keys_travel_from_postgres_to_sqlite() {
    subject_keys_travel_with_the_log(Store::postgres().await, Store::sqlite().await).await;
}
