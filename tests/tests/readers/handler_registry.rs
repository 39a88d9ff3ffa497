//! The handler registry: priority order, retries, timeouts, panics, dead
//! letters (listed and retried), the circuit breaker, statistics, and
//! handlers fed by a subscription.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::prelude::*;
use annals::subscription::Subscription;
use annals::subscription::handler::RetryPolicy;
use annals::subscription::handler_registry::{HandlerRegistry, HandlerSpec};
use annals_tests::domain::{UserEvent, WELCOMED};
use serde_json::json;

fn quick_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        backoff: Duration::from_millis(1),
    }
}

async fn stored_event(store: &InMemoryEventStore, event_type: &str) -> RecordedEvent {
    let stream =
        StreamId::new(format!("user-{}", uuid::Uuid::now_v7().simple())).expect("stream id");
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::json(event_type, &json!({})).expect("event")],
        )
        .await
        .expect("append");
    store
        .read_stream(&stream, 1, 1)
        .await
        .expect("read")
        .remove(0)
}

fn recorder(
    log: &Arc<Mutex<Vec<String>>>,
    name: &'static str,
    event_type: &'static str,
) -> HandlerSpec {
    let log = log.clone();
    HandlerSpec::new(name, &[event_type], move |_| {
        let log = log.clone();
        Box::pin(async move {
            log.lock().expect("lock").push(name.to_owned());
            Ok(())
        })
    })
}

/// Fails `failures` times, then succeeds.
fn flaky(name: &'static str, failures: u32, calls: Arc<AtomicU32>) -> HandlerSpec {
    HandlerSpec::new(name, &["test.flaky"], move |_| {
        let calls = calls.clone();
        Box::pin(async move {
            if calls.fetch_add(1, Ordering::SeqCst) < failures {
                Err("temporarily broken".into())
            } else {
                Ok(())
            }
        })
    })
}

#[tokio::test]
async fn handlers_run_in_priority_order() {
    let store = Arc::new(InMemoryEventStore::new());
    let log = Arc::new(Mutex::new(Vec::new()));
    let registry = HandlerRegistry::new(store.clone())
        .with(recorder(&log, "low", "test.ordered").priority(-1))
        .with(recorder(&log, "high", "test.ordered").priority(10))
        .with(recorder(&log, "middle", "test.ordered"))
        .with(recorder(&log, "other-type", "test.unrelated"));
    let event = stored_event(&store, "test.ordered").await;
    let report = registry.dispatch(&event).await.expect("dispatch");
    assert_eq!(report.succeeded, ["high", "middle", "low"]);
    assert_eq!(*log.lock().expect("lock"), ["high", "middle", "low"]);
}

#[tokio::test]
async fn failures_are_retried_and_then_dead_lettered() {
    let store = Arc::new(InMemoryEventStore::new());
    let recovers = Arc::new(AtomicU32::new(0));
    let never = Arc::new(AtomicU32::new(0));
    let registry = HandlerRegistry::new(store.clone())
        .with(flaky("recovers", 2, recovers.clone()).retry(quick_retry(3)))
        .with(flaky("never", u32::MAX, never.clone()).retry(quick_retry(4)));
    let event = stored_event(&store, "test.flaky").await;
    let report = registry.dispatch(&event).await.expect("dispatch");
    assert_eq!(report.succeeded, ["recovers"]);
    assert_eq!(report.dead_lettered, ["never"]);
    assert_eq!(
        (
            recovers.load(Ordering::SeqCst),
            never.load(Ordering::SeqCst)
        ),
        (3, 4)
    );

    let letters = registry.dead_letters(10).await.expect("list");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        (letter.handler.as_str(), letter.event_id, letter.attempts),
        ("never", event.event_id, 4)
    );
    assert_eq!(letter.error, "temporarily broken");

    let stats = registry.stats();
    let never_stats = stats.iter().find(|s| s.name == "never").expect("stats");
    assert_eq!(
        (
            never_stats.failed_attempts,
            never_stats.dead_lettered,
            never_stats.succeeded
        ),
        (4, 1, 0)
    );
    let recovers_stats = stats.iter().find(|s| s.name == "recovers").expect("stats");
    assert_eq!(
        (recovers_stats.failed_attempts, recovers_stats.succeeded),
        (2, 1)
    );
}

#[tokio::test]
async fn a_dead_letter_can_be_retried_once_the_cause_is_fixed() {
    let store = Arc::new(InMemoryEventStore::new());
    let calls = Arc::new(AtomicU32::new(0));
    // Fails four times; each round makes two attempts.
    let registry = HandlerRegistry::new(store.clone())
        .with(flaky("mailer", 4, calls.clone()).retry(quick_retry(2)));
    let event = stored_event(&store, "test.flaky").await;
    registry.dispatch(&event).await.expect("dispatch");
    let letter = registry.dead_letters(10).await.expect("list").remove(0);
    assert!(
        !registry.retry_dead_letter(&letter).await.expect("retry"),
        "calls 3 and 4 still fail"
    );
    assert_eq!(registry.dead_letters(10).await.expect("list").len(), 1);
    assert!(
        registry.retry_dead_letter(&letter).await.expect("retry"),
        "call 5 succeeds"
    );
    assert!(registry.dead_letters(10).await.expect("list").is_empty());
}

#[tokio::test]
async fn timeouts_and_panics_are_failures_not_crashes() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = HandlerRegistry::new(store.clone())
        .with(
            HandlerSpec::new("slow", &["test.bad"], |_| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(())
                })
            })
            .timeout(Duration::from_millis(20))
            .retry(quick_retry(2)),
        )
        .with(
            HandlerSpec::new("panics", &["test.bad"], |_| {
                Box::pin(async { panic!("boom") })
            })
            .retry(quick_retry(1)),
        )
        .with(HandlerSpec::new("fine", &["test.bad"], |_| Box::pin(async { Ok(()) })).priority(-1));
    let event = stored_event(&store, "test.bad").await;
    let report = registry.dispatch(&event).await.expect("dispatch");
    assert_eq!(
        report.succeeded,
        ["fine"],
        "the others' failures did not stop it"
    );
    let stats = registry.stats();
    let slow = stats.iter().find(|s| s.name == "slow").expect("stats");
    assert_eq!((slow.timeouts, slow.dead_lettered), (2, 1));
    let panics = stats.iter().find(|s| s.name == "panics").expect("stats");
    assert_eq!(panics.panics, 1);
    let letters = registry.dead_letters(10).await.expect("list");
    let panic_letter = letters
        .iter()
        .find(|l| l.handler == "panics")
        .expect("dead letter");
    assert!(
        panic_letter.error.contains("panicked: boom"),
        "{}",
        panic_letter.error
    );
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_half_opens_later() {
    let store = Arc::new(InMemoryEventStore::new());
    let calls = Arc::new(AtomicU32::new(0));
    let registry = HandlerRegistry::new(store.clone())
        .failure_threshold(2)
        .cool_down(Duration::from_millis(100))
        .with(flaky("fragile", 2, calls.clone()).retry(quick_retry(1)));
    for _ in 0..2 {
        registry
            .dispatch(&stored_event(&store, "test.flaky").await)
            .await
            .expect("dispatch");
    }
    assert!(registry.stats()[0].circuit_open);
    registry
        .dispatch(&stored_event(&store, "test.flaky").await)
        .await
        .expect("dispatch");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "open: the handler was not called"
    );
    assert_eq!(registry.stats()[0].rejected_by_circuit, 1);

    tokio::time::sleep(Duration::from_millis(150)).await;
    let report = registry
        .dispatch(&stored_event(&store, "test.flaky").await)
        .await
        .expect("dispatch");
    assert_eq!(
        report.succeeded,
        ["fragile"],
        "half-open: one event goes through and closes it"
    );
    assert!(!registry.stats()[0].circuit_open);
    assert_eq!(registry.dead_letters(10).await.expect("list").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_feeds_the_registered_handlers() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = HandlerRegistry::from_inventory(store.clone());
    assert!(
        registry
            .handlers()
            .iter()
            .any(|h| h.name == "annals_tests::domain::welcome")
    );
    let stream = StreamId::new("user-subscribed").expect("stream id");
    let registered = UserEvent::Registered {
        email: "sub@acme.test".into(),
        display_name: "Sub".into(),
    };
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::from_event(&registered).expect("encode")],
        )
        .await
        .expect("append");
    let handle = Subscription::new(store.clone(), "handlers").start(registry);
    handle
        .wait_until(std::time::Duration::from_secs(30), |s| {
            s.caught_up && s.delivered >= 1
        })
        .await
        .expect("delivered");
    let registry = handle.stop().await.expect("stop");
    assert!(
        WELCOMED
            .lock()
            .expect("lock")
            .iter()
            .any(|w| w.starts_with("sub@acme.test"))
    );
    let welcome = registry
        .stats()
        .into_iter()
        .find(|s| s.name == "annals_tests::domain::welcome")
        .expect("stats");
    assert_eq!(welcome.succeeded, 1);
}
