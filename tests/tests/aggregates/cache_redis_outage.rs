//! A Redis outage degrades to store reads and never fails a command; when
//! Redis comes back the cache is used again. The test owns its Redis server
//! and kills and restarts it halfway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::cache::{EventCache, InProcessCache, RedisCache, TwoLevelCache};
use annals::prelude::*;
use annals_tests::backends::{OwnRedis, TestStore};
use annals_tests::domain::{AssignRole, RegisterUser, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_loads_survive_redis_going_away_and_coming_back() {
    let mut redis = OwnRedis::start().await;
    let store = TestStore::sqlite().await;
    let cache = Arc::new(
        RedisCache::builder(redis.url())
            .connect()
            .await
            .expect("connect"),
    );
    let users = Repository::<User>::new(store.store.clone()).with_cache(cache.clone());

    users
        .execute(
            "ada",
            &RegisterUser {
                email: "ada@acme.test".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("register");
    users.load("ada").await.expect("load");
    assert!(cache.stats().hits >= 1, "Redis serves loads while up");

    redis.stop();
    let errors_before = cache.stats().errors;
    for n in 0..5 {
        let started = Instant::now();
        users
            .execute(
                "ada",
                &AssignRole {
                    role: format!("during-outage-{n}"),
                },
                Metadata::new(),
            )
            .await
            .expect("commands go on without Redis");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "an outage must not stall commands"
        );
    }
    let loaded = users.load("ada").await.expect("loads go on without Redis");
    assert_eq!((loaded.version, loaded.state.roles.len()), (6, 5));
    assert!(
        cache.stats().errors > errors_before,
        "the outage is counted"
    );

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        users
            .execute(
                "ada",
                &AssignRole {
                    role: "after".into(),
                },
                Metadata::new(),
            )
            .await
            .expect("execute");
        let hits = cache.stats().hits;
        let loaded = users.load("ada").await.expect("load");
        assert!(loaded.state.roles.contains("after"));
        if cache.stats().hits > hits {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache did not recover after Redis restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(users.load("ada").await.expect("load").version, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_level_cache_keeps_serving_from_memory_during_an_outage() {
    let mut redis = OwnRedis::start().await;
    let store = TestStore::sqlite().await;
    let near = Arc::new(InProcessCache::new());
    let far = Arc::new(
        RedisCache::builder(redis.url())
            .connect()
            .await
            .expect("connect"),
    );
    let stack = Arc::new(TwoLevelCache::new(near.clone(), far.clone()));
    let users = Repository::<User>::new(store.store.clone()).with_cache(stack);
    users
        .execute(
            "bob",
            &RegisterUser {
                email: "bob@acme.test".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("register");

    redis.stop();
    let near_hits = near.stats().hits;
    let loaded = users.load("bob").await.expect("load");
    assert_eq!(loaded.state.email, "bob@acme.test");
    assert!(near.stats().hits > near_hits, "served from memory");
    users
        .execute("bob", &AssignRole { role: "x".into() }, Metadata::new())
        .await
        .expect("execute");
    assert!(
        far.stats().errors > 0,
        "writes to the missing Redis are counted"
    );
}
