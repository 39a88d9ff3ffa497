//! The caches on their own: in-process bounds, time to live and statistics;
//! Redis against the test server; the two-level stack.

use std::sync::Arc;
use std::time::Duration;

use annals::cache::{CacheKey, EventCache, InProcessCache, RedisCache, TwoLevelCache};
use annals_tests::backends::redis_url;

fn key(n: usize) -> CacheKey {
    CacheKey::new(Some("acme"), "state", format!("user-{n}"))
}

#[tokio::test]
async fn in_process_cache_counts_hits_misses_and_removals() {
    let cache = InProcessCache::new();
    assert!(cache.get(&key(1)).await.expect("get").is_none());
    cache
        .put(&key(1), b"one".as_slice().into())
        .await
        .expect("put");
    assert_eq!(
        cache.get(&key(1)).await.expect("get").as_deref(),
        Some(b"one".as_slice())
    );
    cache.remove(&[key(1), key(2)]).await.expect("remove");
    assert!(cache.get(&key(1)).await.expect("get").is_none());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
    assert!((stats.hit_rate() - 1.0 / 3.0).abs() < 1e-9);
    assert!(stats.operations >= 4);
}

#[tokio::test]
async fn in_process_cache_stays_within_its_byte_bound() {
    let cache = InProcessCache::builder().max_bytes(10_000).build();
    for n in 0..100 {
        cache
            .put(&key(n), vec![0_u8; 1_000].into())
            .await
            .expect("put");
    }
    cache.run_pending_tasks().await;
    let mut present = 0;
    for n in 0..100 {
        present += usize::from(cache.get(&key(n)).await.expect("get").is_some());
    }
    assert!(present <= 10, "{present} entries of 1 kB in a 10 kB cache");
    assert!(cache.stats().evictions >= 90, "{:?}", cache.stats());
}

#[tokio::test]
async fn in_process_entries_expire() {
    let cache = InProcessCache::builder()
        .time_to_live(Duration::from_millis(50))
        .build();
    cache
        .put(&key(1), b"short-lived".as_slice().into())
        .await
        .expect("put");
    assert!(cache.get(&key(1)).await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(cache.get(&key(1)).await.expect("get").is_none());
}

#[test]
fn keys_carry_the_tenant() {
    assert_eq!(key(7).render(), "t4:acme:state:user-7");
    assert_eq!(
        CacheKey::new(None, "state", "user-7").render(),
        "_:state:user-7"
    );
}

/// Two tenants' repositories, each over its own store, share one cache. A
/// tenant whose name would have rendered onto another's keys (`_`, the
/// unscoped store's marker, or a name holding `:`) must load its own state,
/// never the other's cached one.
#[tokio::test]
async fn tenants_whose_names_look_like_keys_never_share_cached_state() {
    use annals::prelude::*;
    use annals::store::InMemoryEventStore;
    use annals_tests::domain::{CreateTenant, Tenant};

    async fn created(
        cache: &Arc<InProcessCache>,
        tenant: Option<&str>,
        id: &str,
        name: &str,
    ) -> Repository<Tenant> {
        let mut repository: Repository<Tenant> =
            Repository::new(Arc::new(InMemoryEventStore::new())).with_cache(cache.clone());
        if let Some(tenant) = tenant {
            repository = repository.with_tenant(tenant);
        }
        repository
            .execute(id, &CreateTenant { name: name.into() }, Metadata::new())
            .await
            .expect("create");
        repository
    }

    // Under `{tenant}:{kind}:{stream}@{shape}`, tenant `_` rendered onto the
    // unscoped store's keys, and tenant `a:state:tenant-x` with aggregate
    // `t1` (stream `tenant-t1`) onto tenant `a` with aggregate
    // `x:state:tenant-t1`.
    let pairs = [
        ((None, "t1"), (Some("_"), "t1")),
        (
            (Some("a"), "x:state:tenant-t1"),
            (Some("a:state:tenant-x"), "t1"),
        ),
    ];
    for ((first_tenant, first_id), (second_tenant, second_id)) in pairs {
        let cache = Arc::new(InProcessCache::new());
        let first = created(&cache, first_tenant, first_id, "First Corp").await;
        let second = created(&cache, second_tenant, second_id, "Second Corp").await;
        // Both cached after their command; each loads its own.
        let mine = second.load(second_id).await.expect("load");
        assert_eq!(
            mine.state.name, "Second Corp",
            "{second_tenant:?} / {second_id}"
        );
        let theirs = first.load(first_id).await.expect("load");
        assert_eq!(
            theirs.state.name, "First Corp",
            "{first_tenant:?} / {first_id}"
        );
    }
}

#[tokio::test]
async fn redis_cache_round_trips_with_prefix_and_ttl() {
    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    let cache = RedisCache::builder(redis_url())
        .prefix(prefix.clone())
        .time_to_live(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    cache
        .put(&key(1), b"shared".as_slice().into())
        .await
        .expect("put");
    assert_eq!(
        cache.get(&key(1)).await.expect("get").as_deref(),
        Some(b"shared".as_slice())
    );

    // The key holds the prefix and the tenant.
    let client = redis::Client::open(redis_url()).expect("client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{prefix}:t4:acme:state:user-1"))
        .query_async(&mut raw)
        .await
        .expect("raw get");
    assert_eq!(value.as_deref(), Some(b"shared".as_slice()));
    let other_prefix = RedisCache::builder(redis_url())
        .prefix("elsewhere")
        .connect()
        .await
        .expect("connect");
    assert!(other_prefix.get(&key(1)).await.expect("get").is_none());

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cache.get(&key(1)).await.expect("get").is_none(), "expired");
    cache
        .put(&key(2), b"x".as_slice().into())
        .await
        .expect("put");
    cache.remove(&[key(2)]).await.expect("remove");
    assert!(cache.get(&key(2)).await.expect("get").is_none());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 2, 0));
}

#[tokio::test]
async fn two_level_cache_fills_the_near_level_from_the_far_one() {
    let near = Arc::new(InProcessCache::new());
    let far = Arc::new(InProcessCache::new());
    far.put(&key(1), b"far".as_slice().into())
        .await
        .expect("put");
    let stack = TwoLevelCache::new(near.clone(), far.clone());
    assert_eq!(
        stack.get(&key(1)).await.expect("get").as_deref(),
        Some(b"far".as_slice())
    );
    assert!(
        near.get(&key(1)).await.expect("get").is_some(),
        "copied near"
    );
    stack
        .put(&key(2), b"both".as_slice().into())
        .await
        .expect("put");
    assert!(far.get(&key(2)).await.expect("get").is_some());
    stack.remove(&[key(1), key(2)]).await.expect("remove");
    assert!(
        far.get(&key(1)).await.expect("get").is_none()
            && near.get(&key(2)).await.expect("get").is_none()
    );
    assert!(stack.get(&key(3)).await.expect("get").is_none());
    let stats = stack.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

mod caching_store {
    use std::sync::Arc;

    use annals::cache::{CachingEventStore, EventCache, InProcessCache};
    use annals::prelude::*;
    use serde_json::json;

    fn event(n: u64) -> NewEvent {
        NewEvent::json("test.numbered", &json!({ "n": n })).expect("event")
    }

    #[tokio::test]
    async fn appends_are_written_through_and_reads_stay_fresh() {
        let inner: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        let cache = Arc::new(InProcessCache::new());
        let store = CachingEventStore::new(inner.clone(), cache.clone());
        let stream = StreamId::new("user-1").expect("stream id");

        store
            .append(&stream, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .expect("append");
        assert_eq!(
            store.read_stream(&stream, 1, 10).await.expect("read").len(),
            1
        ); // fills the cache
        store
            .append(&stream, ExpectedVersion::Exact(1), vec![event(2), event(3)])
            .await
            .expect("append");
        let hits = cache.stats().hits;
        let events = store.read_stream(&stream, 2, 10).await.expect("read");
        assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(cache.stats().hits, hits + 1);
        let from_store = inner.read_stream(&stream, 1, 10).await.expect("read");
        assert_eq!(
            store.read_stream(&stream, 1, 10).await.expect("read"),
            from_store,
            "identical to the store"
        );

        // Another writer appends to the store directly: still seen.
        inner
            .append(&stream, ExpectedVersion::Exact(3), vec![event(4)])
            .await
            .expect("append");
        assert_eq!(
            store.read_stream(&stream, 1, 10).await.expect("read").len(),
            4
        );
    }

    #[tokio::test]
    async fn invalidation_by_stream_and_by_event_id() {
        let inner: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        let cache = Arc::new(InProcessCache::new());
        let store = CachingEventStore::new(inner, cache.clone());
        let stream = StreamId::new("user-2").expect("stream id");
        let first = event(1);
        let first_id = first.event_id;
        store
            .append(&stream, ExpectedVersion::NoStream, vec![first])
            .await
            .expect("append");
        store.read_stream(&stream, 1, 10).await.expect("read");

        store.invalidate_event(first_id).await.expect("invalidate");
        let misses = cache.stats().misses;
        store.read_stream(&stream, 1, 10).await.expect("read");
        assert_eq!(cache.stats().misses, misses + 1, "invalidated by event id");

        store.invalidate_stream(&stream).await;
        store.read_stream(&stream, 1, 10).await.expect("read");
        assert_eq!(cache.stats().misses, misses + 2, "invalidated by stream");
    }

    #[tokio::test]
    async fn cached_events_the_store_lost_are_not_served() {
        let inner: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        let cache = Arc::new(InProcessCache::new());
        let store = CachingEventStore::new(inner.clone(), cache.clone());
        let stream = StreamId::new("user-4").expect("stream id");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .expect("append");
        let mut cached = store.read_stream(&stream, 1, 10).await.expect("read");
        // The cache holds an event the store does not (a restored database).
        let mut phantom = cached[0].clone();
        phantom.version = 2;
        phantom.event_id = uuid::Uuid::now_v7();
        cached.push(phantom);
        let key = annals::cache::CacheKey::new(None, "stream", "user-4");
        cache
            .put(&key, serde_json::to_vec(&cached).expect("json").into())
            .await
            .expect("plant");

        let read = store.read_stream(&stream, 1, 10).await.expect("read");
        assert_eq!(read, inner.read_stream(&stream, 1, 10).await.expect("read"));
        assert_eq!(read.len(), 1);
    }

    #[tokio::test]
    async fn long_streams_are_not_cached_whole() {
        let inner: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        let cache = Arc::new(InProcessCache::new());
        let store = CachingEventStore::new(inner, cache.clone()).max_cached_events(5);
        let stream = StreamId::new("user-3").expect("stream id");
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                (1..=8).map(event).collect(),
            )
            .await
            .expect("append");
        assert_eq!(
            store
                .read_stream(&stream, 1, 100)
                .await
                .expect("read")
                .len(),
            8
        );
        assert_eq!(
            store
                .read_stream(&stream, 7, 100)
                .await
                .expect("read")
                .len(),
            2
        );
        cache.run_pending_tasks().await;
        assert!(
            cache
                .get(&annals::cache::CacheKey::new(None, "stream", "user-3"))
                .await
                .expect("get")
                .is_none()
        );
    }
}

#[tokio::test]
async fn repository_cache_entries_carry_the_tenant() {
    use annals::prelude::*;
    use annals_tests::domain::{RegisterUser, User};

    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let cache = Arc::new(InProcessCache::new());
    let acme = Repository::<User>::new(store.clone())
        .with_cache(cache.clone())
        .with_tenant("acme");
    acme.execute(
        "ada",
        &RegisterUser {
            email: "ada@acme.test".into(),
        },
        Metadata::new(),
    )
    .await
    .expect("register");
    let acme_key = CacheKey::new(Some("acme"), "state", "user-ada@1");
    assert!(
        cache.get(&acme_key).await.expect("get").is_some(),
        "written under the tenant"
    );
    let untenanted = CacheKey::new(None, "state", "user-ada@1");
    assert!(cache.get(&untenanted).await.expect("get").is_none());

    let globex = Repository::<User>::new(store)
        .with_cache(cache.clone())
        .with_tenant("globex");
    let misses = cache.stats().misses;
    globex.load("ada").await.expect("load");
    assert_eq!(
        cache.stats().misses,
        misses + 1,
        "another tenant does not read acme's entry"
    );
}

/// Two databases behind one cache (or a database restored under a live
/// cache): at the same version their streams hold different histories. A
/// cached state names the event it summarises, so neither a load nor a
/// command decided on the cached state uses the other database's state.
/// Before, renaming a suspended tenant was accepted on the other store's
/// cached (active) state.
#[tokio::test]
async fn a_cached_state_is_only_used_for_the_history_it_summarises() {
    use annals::prelude::*;
    use annals_tests::domain::{CreateTenant, RenameTenant, SuspendTenant, Tenant, TenantError};

    let cache = Arc::new(InProcessCache::new());
    let first: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let second: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let on_first = Repository::<Tenant>::new(first).with_cache(cache.clone());
    let on_second = Repository::<Tenant>::new(second).with_cache(cache.clone());
    let create = CreateTenant {
        name: "Acme".into(),
    };
    // The first database: created and renamed (active, version 2).
    on_first
        .execute("t1", &create, Metadata::new())
        .await
        .expect("create");
    on_first
        .execute(
            "t1",
            &RenameTenant {
                name: "Acme Inc".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("rename");
    // The second: created and suspended (version 2 too), without the cache
    // seeing it last.
    let plain_second = Repository::<Tenant>::new(on_second.store().clone());
    plain_second
        .execute("t1", &create, Metadata::new())
        .await
        .expect("create");
    plain_second
        .execute("t1", &SuspendTenant, Metadata::new())
        .await
        .expect("suspend");
    on_first.load("t1").await.expect("cache the first's state");

    let loaded = on_second.load("t1").await.expect("load");
    assert!(loaded.state.suspended, "the second database's own state");
    on_first
        .load("t1")
        .await
        .expect("cache the first's state again");
    match on_second
        .execute(
            "t1",
            &RenameTenant {
                name: "Hijack".into(),
            },
            Metadata::new(),
        )
        .await
    {
        Err(CommandError::Rejected(TenantError::Suspended)) => {}
        other => panic!("expected the suspended tenant's refusal, got {other:?}"),
    }
    assert_eq!(
        on_second
            .store()
            .stream_version(&StreamId::new("tenant-t1").expect("id"))
            .await
            .expect("v"),
        2,
        "nothing was appended"
    );
}

/// Cached states at the extreme versions: a version 0 entry summarises no
/// history and is never used, one at `u64::MAX` names an event the store
/// does not have; both are dropped, and loads and commands use the store.
#[tokio::test]
async fn cached_states_at_version_zero_and_the_largest_version_are_dropped() {
    use annals::cache::CacheValue;
    use annals::prelude::*;
    use annals_tests::domain::{CreateTenant, RenameTenant, Tenant};

    let cache = Arc::new(InProcessCache::new());
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let tenants = Repository::<Tenant>::new(store.clone()).with_cache(cache.clone());
    tenants
        .execute(
            "t1",
            &CreateTenant {
                name: "Acme".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("create");
    let head = store
        .read_stream(&StreamId::new("tenant-t1").expect("id"), 1, 1)
        .await
        .expect("read")[0]
        .event_id;
    let key = CacheKey::new(None, "state", "tenant-t1@1");
    // The entry layout: format 2, version, head event id, state as JSON.
    let planted = |version: u64| {
        let mut value = vec![2u8];
        value.extend_from_slice(&version.to_be_bytes());
        value.extend_from_slice(head.as_bytes());
        value.extend_from_slice(br#"{"created":true,"name":"Forged","suspended":false}"#);
        CacheValue::from(value)
    };
    let mut expected_version = 1;
    for version in [0, u64::MAX] {
        cache.put(&key, planted(version)).await.expect("plant");
        let loaded = tenants.load("t1").await.expect("load");
        assert_eq!(
            loaded.version, expected_version,
            "entry at version {version}"
        );
        assert_ne!(loaded.state.name, "Forged", "entry at version {version}");
        // A command decided on the planted entry is decided again on the
        // store's state.
        cache.put(&key, planted(version)).await.expect("plant");
        let renamed = tenants
            .execute(
                "t1",
                &RenameTenant {
                    name: format!("Acme {version}"),
                },
                Metadata::new(),
            )
            .await
            .expect("rename");
        expected_version += 1;
        assert_eq!(renamed.version, expected_version);
        assert_eq!(renamed.state.name, format!("Acme {version}"));
        assert!(renamed.state.created);
    }
}
