//! Crypto-shredding on every read path above the store: replay to a
//! version or an instant, a projection run, snapshots (deleted on forget,
//! rebuilt redacted) and caches (in-process and Redis: after a forget no
//! entry holds the subject's plaintext).

use std::sync::Arc;
use std::time::Duration;

use annals::aggregate::snapshot::SnapshotSettings;
use annals::cache::{CacheKey, CachingEventStore, EventCache, InProcessCache, RedisCache};
use annals::pii::{DEFAULT_FORGET_WATCH, MasterKey, NotReached, PiiEventStore};
use annals::prelude::*;
use annals::projection::runner::{InMemory, ProjectionRunner, ProjectionState};
use annals_tests::backends::{TestStore, redis_url};
use annals_tests::pii::{Join, Member, MemberEmails, PiiBackend, joined};

const ADA_EMAIL: &str = "ada.lovelace@planted.test";
const BOB_EMAIL: &str = "bob.babbage@planted.test";

fn join(member: &str, email: &str) -> Join {
    Join {
        member_id: member.to_owned(),
        email: email.to_owned(),
    }
}

async fn join_both(members: &Repository<Member>) {
    members
        .execute("ada", &join("ada", ADA_EMAIL), Metadata::new())
        .await
        .expect("ada joins");
    members
        .execute("bob", &join("bob", BOB_EMAIL), Metadata::new())
        .await
        .expect("bob joins");
}

async fn replay_yields_redacted_state(b: PiiBackend) {
    let members = Repository::<Member>::new(b.pii.clone());
    join_both(&members).await;
    let joined_at = chrono::Utc::now();
    assert_eq!(
        members
            .load_at("ada", 1)
            .await
            .expect("load_at")
            .state
            .email,
        ADA_EMAIL
    );

    b.pii.forget("ada").await.expect("forget");
    let at_version = members.load_at("ada", 1).await.expect("load_at");
    assert_eq!(at_version.version, 1);
    assert_eq!(at_version.state.email, "[redacted]");
    assert_eq!(at_version.state.display_name, "[redacted]");
    assert_eq!(at_version.state.plan, "pro");
    let as_of = members
        .load_as_of("ada", joined_at)
        .await
        .expect("load_as_of");
    assert_eq!(as_of.state.email, "[redacted]");
    let bob = members.load_at("bob", 1).await.expect("load_at");
    assert_eq!(bob.state.email, BOB_EMAIL);
}

async fn a_projection_run_after_forget_sees_redacted_values(b: PiiBackend) {
    let members = Repository::<Member>::new(b.pii.clone());
    join_both(&members).await;
    b.pii.forget("ada").await.expect("forget");

    let running = ProjectionRunner::new(b.pii.clone(), InMemory)
        .poll_interval(Duration::from_millis(20))
        .start(MemberEmails::default());
    tokio::time::timeout(
        Duration::from_secs(30),
        running.wait_until(std::time::Duration::from_secs(30), |s| {
            s.applied >= 2 && s.state == ProjectionState::Running
        }),
    )
    .await
    .expect("caught up within 30 s")
    .expect("running");
    {
        let model = running.read().await;
        assert_eq!(
            model.emails.get("ada").map(String::as_str),
            Some("[redacted]")
        );
        assert_eq!(model.emails.get("bob").map(String::as_str), Some(BOB_EMAIL));
    }
    running.stop().await.expect("stop");
}

async fn snapshots_are_deleted_and_rebuilt_redacted(b: PiiBackend) {
    let members = Repository::<Member>::new(b.pii.clone()).with_snapshots(SnapshotSettings::new());
    join_both(&members).await;
    assert_eq!(members.snapshot("ada").await.expect("snapshot"), Some(1));
    assert_eq!(members.snapshot("bob").await.expect("snapshot"), Some(1));
    let ada = StreamId::new("member-ada").expect("stream id");
    let bob = StreamId::new("member-bob").expect("stream id");
    let before = b
        .backend
        .store
        .snapshots()
        .load(&ada, None)
        .await
        .expect("load snapshot")
        .expect("a snapshot before forget");
    assert_eq!(before.version, 1);

    let forgotten = b.pii.forget("ada").await.expect("forget");
    assert_eq!(forgotten.snapshots_deleted, 1);
    assert!(
        b.backend
            .store
            .snapshots()
            .load(&ada, None)
            .await
            .expect("load snapshot")
            .is_none(),
        "the snapshot holding ada's plaintext is gone"
    );
    assert!(
        b.backend
            .store
            .snapshots()
            .load(&bob, None)
            .await
            .expect("load snapshot")
            .is_some(),
        "other subjects' snapshots stay"
    );
    let reloaded = members.load("ada").await.expect("load");
    assert_eq!(reloaded.version, 1);
    assert_eq!(reloaded.state.email, "[redacted]");
    assert_eq!(
        members.load("bob").await.expect("load").state.email,
        BOB_EMAIL
    );
}

#[tokio::test]
async fn sqlite_replay_after_forget_is_redacted() {
    replay_yields_redacted_state(PiiBackend::sqlite().await).await;
}

#[tokio::test]
async fn postgres_replay_after_forget_is_redacted() {
    replay_yields_redacted_state(PiiBackend::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_projection_after_forget_is_redacted() {
    a_projection_run_after_forget_sees_redacted_values(PiiBackend::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_projection_after_forget_is_redacted() {
    a_projection_run_after_forget_sees_redacted_values(PiiBackend::postgres().await).await;
}

#[tokio::test]
async fn memory_snapshots_are_deleted_on_forget() {
    snapshots_are_deleted_and_rebuilt_redacted(PiiBackend::memory().await).await;
}

#[tokio::test]
async fn sqlite_snapshots_are_deleted_on_forget() {
    snapshots_are_deleted_and_rebuilt_redacted(PiiBackend::sqlite().await).await;
}

#[tokio::test]
async fn postgres_snapshots_are_deleted_on_forget() {
    snapshots_are_deleted_and_rebuilt_redacted(PiiBackend::postgres().await).await;
}

/// The documented layering: repository (state cache) over `PiiEventStore`
/// over `CachingEventStore` (event cache) over SQLite, both caches purged
/// on forget.
async fn layered(
    state_cache: Arc<dyn EventCache>,
    event_cache: Arc<dyn EventCache>,
) -> (Repository<Member>, Arc<PiiEventStore>, TestStore) {
    let (backend, keys) = TestStore::sqlite_with_keys().await;
    let cached = Arc::new(CachingEventStore::new(
        backend.store.clone(),
        event_cache.clone(),
    ));
    let pii = Arc::new(
        PiiEventStore::new(cached, keys, MasterKey::generate())
            .purge_stream_cache(event_cache)
            .purge_state_cache::<Member>(state_cache.clone(), None),
    );
    let members = Repository::<Member>::new(pii.clone()).with_cache(state_cache);
    (members, pii, backend)
}

#[tokio::test]
async fn in_process_caches_drop_the_plaintext_on_forget() {
    let state_cache = Arc::new(InProcessCache::new());
    let event_cache = Arc::new(InProcessCache::new());
    let (members, pii, _backend) = layered(state_cache.clone(), event_cache.clone()).await;
    join_both(&members).await;
    assert_eq!(
        members.load_cached("ada").await.expect("load").state.email,
        ADA_EMAIL
    );
    // The event cache sits below the encryption: it only ever holds ciphertext.
    let stream_key = CacheKey::new(None, "stream", "member-ada");
    let cached_events = event_cache
        .get(&stream_key)
        .await
        .expect("get")
        .expect("the stream is cached");
    let text = String::from_utf8_lossy(&cached_events);
    assert!(
        text.contains("annals_pii") && !text.contains(ADA_EMAIL),
        "{text}"
    );

    pii.forget("ada").await.expect("forget");
    assert!(
        event_cache.get(&stream_key).await.expect("get").is_none(),
        "the forgotten subject's cached stream is dropped"
    );
    // `load_cached` answers from the cache alone when it can: it can only
    // be redacted if the plaintext state entry was dropped.
    let after = members.load_cached("ada").await.expect("load");
    assert_eq!(after.state.email, "[redacted]");
    assert_eq!(
        members.load_cached("bob").await.expect("load").state.email,
        BOB_EMAIL
    );
}

/// Every value stored under `prefix` in the test Redis.
async fn redis_values(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let client = redis::Client::open(redis_url()).expect("client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut raw)
        .await
        .expect("keys");
    let mut values = Vec::new();
    for key in keys {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .expect("get");
        if let Some(value) = value {
            values.push((key, value));
        }
    }
    values
}

fn holding(values: &[(String, Vec<u8>)], needle: &str) -> Vec<String> {
    values
        .iter()
        .filter(|(_, value)| {
            value
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .map(|(key, _)| key.clone())
        .collect()
}

#[tokio::test]
async fn redis_caches_hold_no_plaintext_after_forget() {
    let prefix = format!("pii-{}", uuid::Uuid::now_v7().simple());
    let redis: Arc<dyn EventCache> = Arc::new(
        RedisCache::builder(redis_url())
            .prefix(prefix.clone())
            .time_to_live(Duration::from_secs(300))
            .connect()
            .await
            .expect("connect to the test Redis"),
    );
    let (members, pii, _backend) = layered(redis.clone(), redis).await;
    join_both(&members).await;
    assert_eq!(
        members.load_cached("ada").await.expect("load").state.email,
        ADA_EMAIL
    );
    let before = redis_values(&prefix).await;
    assert_eq!(
        holding(&before, ADA_EMAIL),
        vec![format!("{prefix}:_:state:member-ada@1")],
        "only the state entry holds plaintext before the forget"
    );

    pii.forget("ada").await.expect("forget");
    let after = redis_values(&prefix).await;
    assert!(
        holding(&after, ADA_EMAIL).is_empty(),
        "no entry holds ada's email"
    );
    assert!(
        !holding(&after, BOB_EMAIL).is_empty(),
        "bob's state is still cached"
    );

    let reloaded = members.load_cached("ada").await.expect("load");
    assert_eq!(reloaded.state.email, "[redacted]");
    let recached = redis_values(&prefix).await;
    assert!(holding(&recached, ADA_EMAIL).is_empty());
    assert!(
        !holding(&recached, "[redacted]").is_empty(),
        "the redacted state is cached"
    );
}

#[tokio::test]
async fn two_subjects_in_one_stream_are_forgotten_independently() {
    let b = PiiBackend::sqlite().await;
    let stream = StreamId::new("team-1").expect("stream id");
    let events = vec![
        NewEvent::from_event(&joined("ada", ADA_EMAIL)).expect("encode"),
        NewEvent::from_event(&joined("bob", BOB_EMAIL)).expect("encode"),
    ];
    b.pii
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .expect("append");
    b.pii.forget("bob").await.expect("forget bob");
    let read = b.pii.read_stream(&stream, 1, 10).await.expect("read");
    let decoded: Vec<annals_tests::pii::MemberJoined> =
        read.iter().map(|e| e.decode().expect("decode")).collect();
    assert_eq!(decoded[0].email, ADA_EMAIL);
    assert_eq!(decoded[1].email, "[redacted]");
    b.pii.forget("ada").await.expect("forget ada");
    let read = b.pii.read_stream(&stream, 1, 10).await.expect("read");
    let first: annals_tests::pii::MemberJoined = read[0].decode().expect("decode");
    assert_eq!(first.email, "[redacted]");
}

/// Two instances of a service over one PostgreSQL database, each with its
/// own in-process state cache: a forget in one reaches the other's cache
/// and key cache through its forget watch (before, the other kept serving
/// the plaintext state from its cache, with no time limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_in_one_instance_reaches_the_others_caches() {
    let (backend, keys) = TestStore::postgres_with_keys().await;
    let master = MasterKey::generate();
    let instance = || {
        let states = Arc::new(InProcessCache::new());
        let pii = Arc::new(
            PiiEventStore::new(backend.store.clone(), keys.clone(), master.clone())
                .purge_state_cache::<Member>(states.clone(), None),
        );
        let members = Repository::<Member>::new(pii.clone()).with_cache(states);
        (pii, members)
    };
    let (_one, members_one) = instance();
    let (two, members_two) = instance();
    join_both(&members_one).await;
    for members in [&members_one, &members_two] {
        assert_eq!(
            members.load_cached("ada").await.expect("load").state.email,
            ADA_EMAIL
        );
    }

    let forgotten = two.forget("ada").await.expect("forget");
    assert_eq!(forgotten.caches_purged, 1);
    assert!(forgotten.not_reached.contains(&NotReached::OtherProcesses {
        within: Some(DEFAULT_FORGET_WATCH)
    }));
    assert_eq!(
        members_two
            .load_cached("ada")
            .await
            .expect("load")
            .state
            .email,
        "[redacted]"
    );
    // The other instance drops it within its watch interval.
    let until = std::time::Instant::now() + DEFAULT_FORGET_WATCH * 5;
    loop {
        let state = members_one.load_cached("ada").await.expect("load").state;
        if state.email == "[redacted]" {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the other instance still serves the forgotten subject's plaintext"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        members_one
            .load_cached("bob")
            .await
            .expect("load")
            .state
            .email,
        BOB_EMAIL
    );
}
