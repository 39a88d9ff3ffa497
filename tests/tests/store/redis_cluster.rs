//! The Redis cache and the Redis Streams publisher on a Redis Cluster of
//! three masters this test owns, named by its nodes' comma-separated URLs.

use std::sync::Arc;
use std::time::Duration;

use annals::cache::{CacheKey, EventCache, RedisCache};
use annals::prelude::*;
use annals::publisher::{Publisher, RedisStreams};
use annals::subscription::Subscription;
use annals_tests::backends::{OwnRedisCluster, TestStore};
use redis::cluster::ClusterClient;
use serde_json::json;
use uuid::Uuid;

/// Keys held by each master, by `DBSIZE` on each node.
async fn keys_per_node(cluster: &OwnRedisCluster) -> Vec<u64> {
    let mut sizes = Vec::new();
    for port in &cluster.ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a node");
        sizes.push(
            redis::cmd("DBSIZE")
                .query_async::<u64>(&mut connection)
                .await
                .expect("dbsize"),
        );
    }
    sizes
}

/// A stream's entries' event ids, read through the cluster.
async fn entries(cluster: &OwnRedisCluster, key: &str) -> Vec<String> {
    let nodes: Vec<String> = cluster
        .ports
        .iter()
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect();
    let client = ClusterClient::new(nodes).expect("cluster client");
    let mut connection = client.get_async_connection().await.expect("connect");
    let found: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .expect("xrange");
    found
        .into_iter()
        .filter_map(|(_, fields)| {
            fields
                .chunks(2)
                .find(|pair| pair[0] == "event_id")
                .and_then(|pair| pair.get(1).cloned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_spreads_over_the_masters_and_removes_across_slots() {
    let cluster = OwnRedisCluster::start().await;
    let cache = RedisCache::builder(cluster.url())
        .prefix("cached")
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("a cluster cache");
    cache.ping().await.expect("ping");
    let keys: Vec<CacheKey> = (0..60)
        .map(|n| CacheKey::new(Some("acme"), "stream", format!("user-{n}")))
        .collect();
    for (n, key) in keys.iter().enumerate() {
        let value: Arc<[u8]> = Arc::from(format!("value {n}").into_bytes());
        cache.put(key, value).await.expect("put");
    }
    for (n, key) in keys.iter().enumerate() {
        let found = cache.get(key).await.expect("get").expect("cached");
        assert_eq!(&*found, format!("value {n}").as_bytes());
    }
    let sizes = keys_per_node(&cluster).await;
    assert_eq!(sizes.iter().sum::<u64>(), 60);
    assert!(
        sizes.iter().all(|size| *size > 0),
        "every master holds some: {sizes:?}"
    );
    // One DEL naming keys of every slot: split by the client.
    cache.remove(&keys).await.expect("remove across slots");
    assert_eq!(keys_per_node(&cluster).await, [0, 0, 0]);
    for key in &keys {
        assert!(cache.get(key).await.expect("get").is_none());
    }
}

/// Events of five aggregate types go to five Redis streams on the cluster's
/// masters; one master is killed while events keep coming, and restarted:
/// afterwards each stream holds its events once, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_streams_survive_a_master_going_down() {
    let mut cluster = OwnRedisCluster::start().await;
    let store = TestStore::sqlite().await;
    let categories = ["user", "role", "tenant", "group", "session"];
    let append = |round: usize| {
        let store = store.store.clone();
        async move {
            for category in categories {
                let event = NewEvent::json(
                    format!("test.{category}.changed"),
                    &json!({ "round": round }),
                )
                .expect("event");
                store
                    .append(
                        &StreamId::new(format!("{category}-1")).expect("id"),
                        ExpectedVersion::Any,
                        vec![event],
                    )
                    .await
                    .expect("append");
            }
        }
    };
    for round in 0..4 {
        append(round).await;
    }
    let prefix = format!("c{}", Uuid::now_v7().simple());
    let streams = RedisStreams::new(&cluster.url(), prefix.clone())
        .expect("streams")
        .wait_for_replicas(0, Duration::from_millis(50));
    let handle = Subscription::new(store.store.clone(), "cluster-publisher")
        .retry_delay(Duration::from_millis(100))
        .start(Publisher::new().with_redis_streams(streams));
    handle
        .wait_until(Duration::from_secs(30), |s| {
            s.caught_up && s.delivered >= 20
        })
        .await
        .expect("published to the cluster");

    cluster.stop_node(0);
    for round in 4..8 {
        append(round).await;
    }
    handle
        .wait_until(Duration::from_secs(30), |s| s.last_error.is_some())
        .await
        .expect("the lost master is noticed");
    cluster.start_node(0).await;
    cluster.wait_until_ok().await;
    let log = store
        .store
        .read_all(LogPosition::START, 100)
        .await
        .expect("log");
    assert_eq!(log.len(), 40);
    let last = log.last().map(|event| event.position).unwrap_or_default();
    handle
        .wait_until(Duration::from_secs(60), |s| {
            s.position == last && s.last_error.is_none()
        })
        .await
        .expect("published after the master came back");
    handle.stop().await.expect("stop");

    for category in categories {
        let expected: Vec<String> = log
            .iter()
            .filter(|event| event.stream_id.category() == category)
            .map(|event| event.event_id.to_string())
            .collect();
        assert_eq!(expected.len(), 8);
        let key = format!("{prefix}:events:{category}");
        assert_eq!(
            entries(&cluster, &key).await,
            expected,
            "stream {key}: every event once, in log order"
        );
    }
}
