//! The NATS JetStream relay against a real `nats-server -js` this test
//! owns: the stream holds the log in its order, each event once, when the
//! relay's process dies between publishing and checkpointing, when two
//! instances take turns owning the relay, and when NATS dies mid-flight.

use std::time::Duration;

use annals::prelude::*;
use annals::publisher::{JetStream, Publisher};
use annals::subscription::{Subscription, SubscriptionStatus};
use annals_tests::backends::{OwnNats, TestStore};
use serde_json::json;
use uuid::Uuid;

const RELAY: &str = "jetstream-relay";

async fn append(store: &dyn EventStore, stream: &str, event_type: &str, count: usize) {
    let id = StreamId::new(stream).expect("stream id");
    let events: Vec<NewEvent> = (0..count)
        .map(|n| NewEvent::json(event_type, &json!({ "n": n })).expect("event"))
        .collect();
    store
        .append(&id, ExpectedVersion::Any, events)
        .await
        .expect("append");
}

/// The relay's output: every message of the stream, in stream order, as
/// (`Nats-Msg-Id`, subject, `Annals-Position`).
async fn stream_messages(url: &str, stream: &str) -> Vec<(String, String, String)> {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let context = async_nats::jetstream::new(client);
    let mut opened = context.get_stream(stream).await.expect("the stream");
    let last = opened.info().await.expect("info").state.last_sequence;
    let mut messages = Vec::new();
    for sequence in 1..=last {
        let message = opened
            .get_raw_message(sequence)
            .await
            .unwrap_or_else(|error| panic!("message {sequence}: {error}"));
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        messages.push((
            header("Nats-Msg-Id"),
            message.subject.to_string(),
            header("Annals-Position"),
        ));
    }
    messages
}

/// The log's event ids in order.
async fn log_ids(store: &dyn EventStore) -> Vec<String> {
    store
        .read_all(LogPosition::START, 10_000)
        .await
        .expect("read the log")
        .iter()
        .map(|event| event.event_id.to_string())
        .collect()
}

async fn relay(url: &str, stream: &str) -> Publisher {
    let jetstream = JetStream::connect(url, stream, "annals")
        .await
        .expect("connect the relay");
    Publisher::new().with_jetstream(jetstream)
}

async fn run_until(
    store: &TestStore,
    publisher: Publisher,
    until: impl FnMut(&SubscriptionStatus) -> bool,
) -> SubscriptionStatus {
    let handle = Subscription::new(store.store.clone(), RELAY)
        .retry_delay(Duration::from_millis(50))
        .start(publisher);
    let status = handle
        .wait_until(Duration::from_secs(30), until)
        .await
        .expect("status");
    handle.stop().await.expect("stop");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_the_log_in_order_with_its_envelope() {
    let nats = OwnNats::start().await;
    let store = TestStore::sqlite().await;
    append(&*store.store, "user-1", "iam.user.registered", 3).await;
    append(&*store.store, "tenant-1", "iam.tenant.created", 2).await;
    append(&*store.store, "user-1", "iam.user.renamed", 1).await;
    let stream = format!("T{}", Uuid::now_v7().simple());
    let publisher = relay(&nats.url(), &stream).await;
    let status = run_until(&store, publisher, |s| s.caught_up && s.delivered >= 6).await;
    assert!(status.last_error.is_none(), "{status:?}");

    let log = store
        .store
        .read_all(LogPosition::START, 100)
        .await
        .expect("log");
    let messages = stream_messages(&nats.url(), &stream).await;
    assert_eq!(
        messages
            .iter()
            .map(|(id, ..)| id.clone())
            .collect::<Vec<_>>(),
        log_ids(&*store.store).await
    );
    assert_eq!(messages[0].1, "annals.iam.user.registered");
    assert_eq!(messages[3].1, "annals.iam.tenant.created");
    assert_eq!(messages[5].2, log[5].position.to_string());

    // The payload is the whole envelope.
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let context = async_nats::jetstream::new(client);
    let opened = context.get_stream(&stream).await.expect("stream");
    let first = opened.get_raw_message(1).await.expect("message 1");
    let envelope: RecordedEvent = serde_json::from_slice(&first.payload).expect("an envelope");
    assert_eq!(envelope.event_id, log[0].event_id);
    assert_eq!(envelope.payload.to_value(), json!({ "n": 0 }));
}

/// The relay published and died before its checkpoint moved (here: the
/// checkpoint is moved back, as if it never moved); the next owner, this
/// process again or another instance, publishes the same events again and
/// JetStream keeps each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_died_before_checkpointing_doubles_nothing() {
    let nats = OwnNats::start().await;
    let store = TestStore::sqlite().await;
    append(&*store.store, "user-2", "iam.user.registered", 5).await;
    let stream = format!("T{}", Uuid::now_v7().simple());
    run_until(&store, relay(&nats.url(), &stream).await, |s| {
        s.caught_up && s.delivered >= 5
    })
    .await;
    store
        .store
        .save_checkpoint(RELAY, LogPosition::START)
        .await
        .expect("rewind: the crash lost the checkpoint");
    append(&*store.store, "user-2", "iam.user.registered", 2).await;
    // Another instance takes over, with a connection of its own.
    let status = run_until(&store, relay(&nats.url(), &stream).await, |s| {
        s.caught_up && s.delivered >= 7
    })
    .await;
    assert!(status.last_error.is_none(), "{status:?}");
    let ids: Vec<String> = stream_messages(&nats.url(), &stream)
        .await
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(
        ids,
        log_ids(&*store.store).await,
        "every event once, in log order"
    );
}

/// NATS is killed in the middle of publishing and comes back: events
/// appended meanwhile are published once it is back, none is lost or
/// doubled, the order holds, and the checkpoint never passes an event
/// JetStream did not acknowledge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_doubled_when_nats_dies_mid_flight() {
    let mut nats = OwnNats::start().await;
    let store = TestStore::sqlite().await;
    append(&*store.store, "user-3", "iam.user.registered", 20).await;
    let stream = format!("T{}", Uuid::now_v7().simple());
    let handle = Subscription::new(store.store.clone(), RELAY)
        .retry_delay(Duration::from_millis(50))
        .start(relay(&nats.url(), &stream).await);
    // Keep appending while NATS goes down and comes back.
    let writer = {
        let store = store.store.clone();
        tokio::spawn(async move {
            for round in 0..40 {
                append(
                    &*store,
                    &format!("user-{}", round % 4),
                    "iam.user.renamed",
                    5,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.kill();
    handle
        .wait_until(Duration::from_secs(30), |s| s.last_error.is_some())
        .await
        .expect("the outage is noticed");
    let during = store
        .store
        .load_checkpoint(RELAY)
        .await
        .expect("load")
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart().await;
    writer.await.expect("writer");
    let log = store
        .store
        .read_all(LogPosition::START, 1000)
        .await
        .expect("log");
    assert_eq!(log.len(), 220);
    let last = log.last().map(|event| event.position).unwrap_or_default();
    let status = handle
        .wait_until(Duration::from_secs(60), |s| {
            s.caught_up && s.last_error.is_none() && s.position == last
        })
        .await
        .expect("published after NATS came back");
    handle.stop().await.expect("stop");
    assert!(status.position >= during);

    let messages = stream_messages(&nats.url(), &stream).await;
    let ids: Vec<String> = messages.into_iter().map(|(id, ..)| id).collect();
    assert_eq!(
        ids,
        log_ids(&*store.store).await,
        "every event once, in log order, across the outage"
    );
}

#[tokio::test]
async fn a_bad_prefix_or_an_unreachable_server_is_a_clear_error() {
    let nats = OwnNats::start().await;
    let error = JetStream::connect(&nats.url(), "ANNALS", "bad prefix")
        .await
        .expect_err("a space");
    assert!(error.to_string().contains("prefix"), "{error}");
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port");
    let error = JetStream::connect(
        &format!("nats://user:hunter2@127.0.0.1:{port}"),
        "ANNALS",
        "annals",
    )
    .await
    .expect_err("nothing listens there");
    let message = error.to_string();
    assert!(message.contains("cannot connect to NATS"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}
