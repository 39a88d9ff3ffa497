//! Publishing: in-process subscribers by event type (subscribed and
//! unsubscribed at run time) and Redis Streams, fed by a subscription so
//! nothing is lost when Redis goes away in the middle.

use std::collections::HashSet;
use std::time::Duration;

use annals::prelude::*;
use annals::publisher::{Publisher, RedisStreams};
use annals::subscription::{EventSink, Subscription, SubscriptionStatus};
use annals_tests::backends::{OwnRedis, TestStore, redis_url};
use serde_json::json;
use uuid::Uuid;

async fn append(store: &dyn EventStore, stream: &str, event_type: &str, count: usize) -> Vec<Uuid> {
    let id = StreamId::new(stream).expect("stream id");
    let events: Vec<NewEvent> = (0..count)
        .map(|n| NewEvent::json(event_type, &json!({ "n": n })).expect("event"))
        .collect();
    let ids = events.iter().map(|e| e.event_id).collect();
    store
        .append(&id, ExpectedVersion::Any, events)
        .await
        .expect("append");
    ids
}

#[tokio::test]
async fn in_process_subscribers_get_their_types_until_they_unsubscribe() {
    let store = InMemoryEventStore::new();
    append(&store, "user-1", "iam.user.registered", 1).await;
    append(&store, "tenant-1", "iam.tenant.created", 1).await;
    append(&store, "user-1", "iam.user.registered", 1).await;
    let log = store.read_all(LogPosition::START, 10).await.expect("log");

    let mut publisher = Publisher::new();
    let (users_id, mut users) = publisher.subscribe(&["iam.user.registered"], 10);
    let (_, mut everything) = publisher.subscribe(&[], 10);
    publisher.handle(&log[0]).await.expect("publish");
    publisher.handle(&log[1]).await.expect("publish");
    assert!(publisher.unsubscribe(users_id));
    assert!(!publisher.unsubscribe(users_id), "already gone");
    publisher.handle(&log[2]).await.expect("publish");

    assert_eq!(
        users.recv().await.map(|e| e.event_id),
        Some(log[0].event_id)
    );
    assert!(
        users.recv().await.is_none(),
        "nothing after unsubscribing, and the channel is closed"
    );
    let mut all = Vec::new();
    while let Ok(event) = everything.try_recv() {
        all.push(event.event_id);
    }
    assert_eq!(all, log.iter().map(|e| e.event_id).collect::<Vec<_>>());

    drop(everything);
    publisher.handle(&log[0]).await.expect("publish");
    assert_eq!(
        publisher.stats().dropped_subscribers,
        1,
        "a dropped receiver is unsubscribed"
    );
    assert_eq!(publisher.stats().published, 4);
}

async fn stream_entries(url: &str, key: &str) -> Vec<(String, String)> {
    let client = redis::Client::open(url).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .expect("xrange");
    reply
        .ids
        .iter()
        .map(|entry| {
            let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
            (field("event_id"), field("event_type"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_redis_streams_per_aggregate_type_with_their_ids() {
    let store = TestStore::sqlite().await;
    let users = append(&*store.store, "user-7", "iam.user.registered", 3).await;
    let tenants = append(&*store.store, "tenant-7", "iam.tenant.created", 2).await;
    let prefix = format!("pub-{}", Uuid::now_v7().simple());
    let streams = RedisStreams::new(&redis_url(), prefix.clone()).expect("streams");
    let publisher = Publisher::new().with_redis_streams(streams);
    let handle = Subscription::new(store.store.clone(), "redis-publisher").start(publisher);
    handle
        .wait_until(std::time::Duration::from_secs(30), |s| {
            s.caught_up && s.delivered >= 5
        })
        .await
        .expect("published");
    handle.stop().await.expect("stop");

    let user_entries = stream_entries(&redis_url(), &format!("{prefix}:events:user")).await;
    assert_eq!(
        user_entries
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        users.iter().map(Uuid::to_string).collect::<Vec<_>>()
    );
    assert!(user_entries.iter().all(|(_, t)| t == "iam.user.registered"));
    let tenant_entries = stream_entries(&redis_url(), &format!("{prefix}:events:tenant")).await;
    assert_eq!(tenant_entries.len(), tenants.len());

    // A consumer group reads them like any Redis Streams consumer.
    let client = redis::Client::open(redis_url()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = format!("{prefix}:events:user");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("mailer")
        .arg("0")
        .query_async(&mut connection)
        .await
        .expect("group");
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("mailer")
        .arg("worker-1")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut connection)
        .await
        .expect("xreadgroup");
    assert_eq!(reply.keys[0].ids.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_redis_stops_during_publishing() {
    let mut redis = OwnRedis::start().await;
    let store = TestStore::sqlite().await;
    let mut expected = append(&*store.store, "user-9", "iam.user.registered", 5).await;
    let streams = RedisStreams::new(&redis.url(), "outage").expect("streams");
    let handle = Subscription::new(store.store.clone(), "outage-publisher")
        .retry_delay(Duration::from_millis(50))
        .start(Publisher::new().with_redis_streams(streams));
    handle
        .wait_until(std::time::Duration::from_secs(30), |s| {
            s.delivered >= 5 && s.caught_up
        })
        .await
        .expect("first batch");

    redis.stop();
    expected.extend(append(&*store.store, "user-9", "iam.user.registered", 5).await);
    handle
        .wait_until(std::time::Duration::from_secs(30), |s| {
            s.last_error.is_some()
        })
        .await
        .expect("the outage is noticed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Redis keeps nothing across the restart here (no persistence), so the
    // events published before the outage are gone with it; what matters is
    // that the events appended during the outage arrive once it is back.
    redis.restart().await;
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        handle.wait_until(std::time::Duration::from_secs(30), |s| {
            s.caught_up && s.last_error.is_none() && s.position != LogPosition::START
        }),
    )
    .await
    .expect("published after Redis came back")
    .expect("running");
    let log = store
        .store
        .read_all(LogPosition::START, 100)
        .await
        .expect("log");
    assert_eq!(Some(status.position), log.last().map(|e| e.position));
    handle.stop().await.expect("stop");

    let entries = stream_entries(&redis.url(), "outage:events:user").await;
    let published: HashSet<String> = entries.into_iter().map(|(id, _)| id).collect();
    for id in &expected[5..] {
        assert!(
            published.contains(&id.to_string()),
            "event {id} appended during the outage was never published"
        );
    }
}

/// Runs the subscription `redis-publisher` over `store` into `streams`
/// until its status satisfies `until`, stops it and returns that status.
async fn publish_until(
    store: &std::sync::Arc<dyn EventStore>,
    streams: RedisStreams,
    until: impl FnMut(&SubscriptionStatus) -> bool,
) -> SubscriptionStatus {
    let handle = Subscription::new(store.clone(), "redis-publisher")
        .retry_delay(Duration::from_millis(20))
        .start(Publisher::new().with_redis_streams(streams));
    let status = handle
        .wait_until(std::time::Duration::from_secs(30), until)
        .await
        .expect("status");
    handle.stop().await.expect("stop");
    status
}

/// Where the publisher's checkpoint stands.
/// The publisher's checkpoint (the start of the log if it has none).
async fn publisher_checkpoint(store: &std::sync::Arc<dyn EventStore>) -> LogPosition {
    store
        .load_checkpoint("redis-publisher")
        .await
        .expect("load")
        .unwrap_or_default()
}

/// A publisher that died after `XADD` and before its checkpoint moved
/// offers the same events again on restart: each is in its Redis stream
/// once (entry ids are log positions; Redis refuses an id it has passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_events_are_not_duplicated_in_redis_streams() {
    let store = TestStore::sqlite().await;
    let first = append(&*store.store, "user-9", "iam.user.registered", 5).await;
    let prefix = format!("pub-{}", Uuid::now_v7().simple());
    let streams = || RedisStreams::new(&redis_url(), prefix.clone()).expect("streams");
    publish_until(&store.store, streams(), |s| s.caught_up && s.delivered >= 5).await;
    // The crash: the checkpoint never moved past the start.
    store
        .store
        .save_checkpoint("redis-publisher", LogPosition::START)
        .await
        .expect("rewind");
    let later = append(&*store.store, "user-9", "iam.user.registered", 2).await;
    let status = publish_until(&store.store, streams(), |s| s.caught_up && s.delivered >= 7).await;
    assert!(status.last_error.is_none(), "{status:?}");
    let entries = stream_entries(&redis_url(), &format!("{prefix}:events:user")).await;
    let expected: Vec<String> = first.iter().chain(&later).map(Uuid::to_string).collect();
    assert_eq!(
        entries.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        expected,
        "every event once, in log order"
    );
}

/// A stream that holds entries Annals did not write (ids from `XADD *`) is
/// an error naming it, never a silent skip of the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_foreign_ids_is_an_error_not_a_skip() {
    let store = TestStore::sqlite().await;
    append(&*store.store, "user-3", "iam.user.registered", 1).await;
    let prefix = format!("pub-{}", Uuid::now_v7().simple());
    let key = format!("{prefix}:events:user");
    let client = redis::Client::open(redis_url()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("note")
        .arg("written by an older publisher")
        .query_async(&mut connection)
        .await
        .expect("xadd");
    let streams = RedisStreams::new(&redis_url(), prefix).expect("streams");
    let failing = publish_until(&store.store, streams, |s| s.last_error.is_some()).await;
    let error = failing.last_error.unwrap_or_default();
    assert!(
        error.contains(&key) && error.contains("publish to a new prefix"),
        "{error}"
    );
    assert_eq!(
        publisher_checkpoint(&store.store).await,
        LogPosition::START,
        "the checkpoint does not move past an unpublished event"
    );
}

/// With `wait_for_replicas`, an entry no replica acknowledges in time is a
/// failure: the event is offered again and the checkpoint stays (the test
/// server has no replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_its_replicas_does_not_move_the_checkpoint() {
    let store = TestStore::sqlite().await;
    append(&*store.store, "user-4", "iam.user.registered", 1).await;
    let prefix = format!("pub-{}", Uuid::now_v7().simple());
    let streams = RedisStreams::new(&redis_url(), prefix)
        .expect("streams")
        .wait_for_replicas(1, Duration::from_millis(50));
    // Offered again and again (the entry is in Redis after the first try;
    // each retry still waits for the replica), never past it.
    let failing = publish_until(&store.store, streams, |s| s.delivered >= 3).await;
    let error = failing.last_error.unwrap_or_default();
    assert!(error.contains("0 of 1 Redis replicas"), "{error}");
    assert_eq!(publisher_checkpoint(&store.store).await, LogPosition::START);
}

/// Two logs under one prefix (a database recreated under a live Redis):
/// the second log's events, whose positions start over, are refused naming
/// the stream, not taken for the first log's and skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_log_under_the_same_prefix_is_refused() {
    let prefix = format!("pub-{}", Uuid::now_v7().simple());
    let streams = || RedisStreams::new(&redis_url(), prefix.clone()).expect("streams");
    let settled = |delivered: u64| {
        move |s: &SubscriptionStatus| {
            s.delivered >= delivered && (s.caught_up || s.last_error.is_some())
        }
    };
    let first = TestStore::sqlite().await;
    append(&*first.store, "user-1", "iam.user.registered", 3).await;
    let status = publish_until(&first.store, streams(), settled(3)).await;
    assert!(status.last_error.is_none(), "{status:?}");
    let recreated = TestStore::sqlite().await;
    let lost = append(&*recreated.store, "user-1", "iam.user.registered", 1).await;
    let status = publish_until(&recreated.store, streams(), settled(1)).await;
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("publish to a new prefix"), "{error}");
    let entries = stream_entries(&redis_url(), &format!("{prefix}:events:user")).await;
    assert_eq!(entries.len(), 3);
    assert!(!entries.iter().any(|(id, _)| *id == lost[0].to_string()));
}
