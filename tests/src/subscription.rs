//! The subscription suite: catch-up then live, resumption from the stored
//! checkpoint, at-least-once redelivery after a failure, type filters; run
//! against every backend by [`subscription_suite!`](crate::subscription_suite).

use std::collections::HashSet;
use std::time::Duration;

use annals::error::BoxError;
use annals::prelude::*;
use annals::subscription::{EventSink, Subscription, SubscriptionStatus};
use serde_json::json;
use uuid::Uuid;

use crate::backends::TestStore;

/// Expands to one `#[tokio::test]` per subscription case for a backend.
#[macro_export]
macro_rules! subscription_suite {
    ($backend:ident) => {
        $crate::subscription_suite!(@cases $backend:
            catches_up_then_follows_live_events,
            resumes_after_its_checkpoint,
            a_failing_event_is_delivered_again,
            filters_by_event_type,
            wakes_up_on_new_events_without_waiting_for_the_poll,
            dropping_the_handle_stops_the_task,
        );
    };
    (@cases $backend:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $crate::backends::TestStore::$backend().await;
                $crate::subscription::$case(&store).await;
            }
        )*
    };
}

/// Collects the ids of the events it is handed, shared with its clones:
/// a test keeps one and gives the subscription another.
#[derive(Clone, Default)]
pub struct CollectedIds(std::sync::Arc<std::sync::Mutex<Vec<Uuid>>>);

impl CollectedIds {
    /// The ids so far, in the order handed.
    pub fn ids(&self) -> Vec<Uuid> {
        self.0.lock().map(|ids| ids.clone()).unwrap_or_default()
    }
}

#[annals::async_trait]
impl EventSink for CollectedIds {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.0.lock().map_err(|_| "poisoned")?.push(event.event_id);
        Ok(())
    }
}

/// Records what it receives; can fail on chosen event ids a number of times.
#[derive(Default)]
struct Recorder {
    seen: Vec<Uuid>,
    fail_on: Option<(Uuid, usize)>,
}

#[annals::async_trait]
impl EventSink for Recorder {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.seen.push(event.event_id);
        if let Some((id, remaining)) = &mut self.fail_on
            && *id == event.event_id
            && *remaining > 0
        {
            *remaining -= 1;
            return Err("the downstream service is unavailable".into());
        }
        Ok(())
    }
}

async fn append_numbered(t: &TestStore, stream: &str, count: usize) -> Vec<Uuid> {
    let id = StreamId::new(stream).expect("stream id");
    let events: Vec<NewEvent> = (0..count)
        .map(|n| NewEvent::json("test.numbered", &json!({ "n": n })).expect("event"))
        .collect();
    let ids = events.iter().map(|e| e.event_id).collect();
    t.store
        .append(&id, ExpectedVersion::Any, events)
        .await
        .expect("append");
    ids
}

fn subscription(t: &TestStore, name: &str) -> Subscription {
    Subscription::new(t.store.clone(), name)
        .batch_size(7)
        .poll_interval(Duration::from_millis(10))
        .retry_delay(Duration::from_millis(20))
}

async fn wait_for(
    handle: &annals::subscription::SubscriptionHandle<Recorder>,
    check: impl FnMut(&SubscriptionStatus) -> bool,
) {
    tokio::time::timeout(
        Duration::from_secs(30),
        handle.wait_until(std::time::Duration::from_secs(30), check),
    )
    .await
    .expect("the subscription got there within 30 s")
    .expect("still running");
}

/// Existing events first, then events appended while it runs; each once, in
/// log order.
pub async fn catches_up_then_follows_live_events(t: &TestStore) {
    let mut expected = append_numbered(t, "sub-a", 30).await;
    let handle = subscription(t, "live").start(Recorder::default());
    wait_for(&handle, |s| s.delivered >= 30 && s.caught_up).await;
    expected.extend(append_numbered(t, "sub-b", 12).await);
    wait_for(&handle, |s| s.delivered >= 42).await;
    let recorder = handle.stop().await.expect("stop");
    assert_eq!(recorder.seen, expected);
    let checkpoint = t
        .store
        .load_checkpoint("live")
        .await
        .expect("load")
        .expect("saved");
    let log = t
        .store
        .read_all(LogPosition::START, 100)
        .await
        .expect("log");
    assert_eq!(Some(checkpoint), log.last().map(|e| e.position));
}

/// A new subscription of the same name starts after the saved checkpoint.
pub async fn resumes_after_its_checkpoint(t: &TestStore) {
    append_numbered(t, "sub-c", 10).await;
    let first = subscription(t, "resume").start(Recorder::default());
    wait_for(&first, |s| s.delivered >= 10 && s.caught_up).await;
    first.stop().await.expect("stop");

    let later = append_numbered(t, "sub-c", 5).await;
    let second = subscription(t, "resume").start(Recorder::default());
    wait_for(&second, |s| s.delivered >= 5 && s.caught_up).await;
    let recorder = second.stop().await.expect("stop");
    assert_eq!(recorder.seen, later, "only what came after the checkpoint");
    let other = subscription(t, "another-name").start(Recorder::default());
    wait_for(&other, |s| s.delivered >= 15).await;
    other.stop().await.expect("stop");
}

/// A sink error stops delivery at that event; it is retried until it
/// succeeds, and nothing after it is skipped or reordered.
pub async fn a_failing_event_is_delivered_again(t: &TestStore) {
    let ids = append_numbered(t, "sub-d", 20).await;
    let sink = Recorder {
        seen: Vec::new(),
        fail_on: Some((ids[9], 2)),
    };
    let handle = subscription(t, "flaky").start(sink);
    wait_for(&handle, |s| s.last_error.is_some()).await;
    assert!(
        handle
            .status()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("downstream service"))
    );
    wait_for(&handle, |s| {
        s.caught_up && s.last_error.is_none() && s.delivered >= 22
    })
    .await;
    let recorder = handle.stop().await.expect("stop");
    let retried: Vec<&Uuid> = recorder.seen.iter().filter(|id| **id == ids[9]).collect();
    assert_eq!(retried.len(), 3, "two failures, then success");
    let unique: Vec<Uuid> = {
        let mut seen = HashSet::new();
        recorder
            .seen
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect()
    };
    assert_eq!(unique, ids, "every event, in order, none lost");
}

/// Only the chosen types reach the sink; the checkpoint still moves on.
pub async fn filters_by_event_type(t: &TestStore) {
    let stream = StreamId::new("sub-e").expect("stream id");
    let wanted = NewEvent::json("test.wanted", &json!(1)).expect("event");
    let wanted_id = wanted.event_id;
    let events = vec![
        NewEvent::json("test.other", &json!(0)).expect("event"),
        wanted,
    ];
    t.store
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .expect("append");
    let handle = subscription(t, "filtered")
        .event_types(["test.wanted"])
        .start(Recorder::default());
    wait_for(&handle, |s| s.caught_up && s.delivered >= 1).await;
    let status = handle.status();
    let recorder = handle.stop().await.expect("stop");
    assert_eq!(recorder.seen, [wanted_id]);
    assert_eq!(status.delivered, 1);
    let log = t.store.read_all(LogPosition::START, 10).await.expect("log");
    assert_eq!(
        t.store.load_checkpoint("filtered").await.expect("load"),
        log.last().map(|e| e.position)
    );
}

/// A caught-up subscription is woken by an append (LISTEN/NOTIFY on
/// PostgreSQL, in-process notification elsewhere) long before its poll
/// interval.
pub async fn wakes_up_on_new_events_without_waiting_for_the_poll(t: &TestStore) {
    let handle = Subscription::new(t.store.clone(), "eager")
        .poll_interval(Duration::from_secs(30))
        .start(Recorder::default());
    wait_for(&handle, |s| s.caught_up).await;
    // An idle reader's waits double from 10 ms; after 6 s it is in a wait
    // that ends between 5 and 10 s, so only a wake-up delivers within 2 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let started = std::time::Instant::now();
    append_numbered(t, "sub-f", 1).await;
    tokio::time::timeout(
        Duration::from_secs(2),
        handle.wait_until(std::time::Duration::from_secs(30), |s| s.delivered >= 1),
    )
    .await
    .expect("woken by the append, not by polling")
    .expect("running");
    assert!(started.elapsed() < Duration::from_secs(2));
    handle.stop().await.expect("stop");
}

/// Sets its flag when dropped: the task that owned it has ended.
struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[annals::async_trait]
impl EventSink for DropFlag {
    async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Dropping a handle without `stop()` ends its task (it used to spin on
/// the closed stop channel, reading the log in a tight loop, for good).
pub async fn dropping_the_handle_stops_the_task(t: &TestStore) {
    let stream = StreamId::new("user-dropped").expect("stream id");
    t.store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::json("test.dropped", &json!({})).expect("event")],
        )
        .await
        .expect("append");
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = Subscription::new(t.store.clone(), "dropped")
        .poll_interval(Duration::from_millis(50))
        .start(DropFlag(ended.clone()));
    handle
        .wait_until(std::time::Duration::from_secs(30), |status| {
            status.delivered == 1 && status.caught_up
        })
        .await
        .expect("delivered");
    drop(handle);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ended.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the task outlived its dropped handle"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
