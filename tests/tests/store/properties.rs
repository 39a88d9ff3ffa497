//! Property tests of the event store's invariants on every backend: random
//! sequences of single- and two-stream appends, with every kind of expected
//! version, are run against the store and against a model (a map of stream
//! heads). The store must accept exactly what the model accepts, report a
//! refused append as a conflict naming a stream whose head the model knows,
//! and afterwards hold exactly the accepted events: every stream contiguous
//! from version 1 in append order, the global log holding each once and each
//! stream in version order.
//!
//! Each case works in streams of its own (a fresh prefix), so one store per
//! backend serves every case. `ANNALS_PROPTEST_CASES` sets the number of
//! cases (default 64 per backend).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::prelude::*;
use annals::store::StreamAppend;
use annals_tests::backends::TestStore;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

/// Four streams per case, so appends meet each other often.
const STREAMS: usize = 4;

#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
}

#[derive(Debug, Clone)]
struct Part {
    stream: usize,
    expect: Expect,
    events: usize,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::StreamExists),
        (0_u64..6).prop_map(Expect::Exact),
    ]
}

fn part() -> impl Strategy<Value = Part> {
    (0..STREAMS, expect(), 1_usize..4).prop_map(|(stream, expect, events)| Part {
        stream,
        expect,
        events,
    })
}

/// One append: one part, or two parts on different streams.
fn append() -> impl Strategy<Value = Vec<Part>> {
    prop_oneof![
        3 => part().prop_map(|part| vec![part]),
        1 => (part(), part())
            .prop_filter("two different streams", |(a, b)| a.stream != b.stream)
            .prop_map(|(a, b)| vec![a, b]),
    ]
}

fn accepts(expect: Expect, head: u64) -> bool {
    match expect {
        Expect::Any => true,
        Expect::NoStream => head == 0,
        Expect::StreamExists => head > 0,
        Expect::Exact(version) => head == version,
    }
}

fn expected_version(expect: Expect) -> ExpectedVersion {
    match expect {
        Expect::Any => ExpectedVersion::Any,
        Expect::NoStream => ExpectedVersion::NoStream,
        Expect::StreamExists => ExpectedVersion::StreamExists,
        Expect::Exact(version) => ExpectedVersion::Exact(version),
    }
}

async fn check(store: &dyn EventStore, appends: Vec<Vec<Part>>) -> Result<(), TestCaseError> {
    let prefix = format!("p{}", Uuid::now_v7().simple());
    let name = |stream: usize| format!("{prefix}-s{stream}");
    let mut heads = [0_u64; STREAMS];
    let mut model: HashMap<String, Vec<Uuid>> = HashMap::new();

    for parts in appends {
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        for part in &parts {
            let events: Vec<NewEvent> = (0..part.events)
                .map(|i| NewEvent::json("prop.noted", &serde_json::json!({ "i": i })))
                .collect::<annals::Result<_>>()
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            ids.push(
                events
                    .iter()
                    .map(|event| event.event_id)
                    .collect::<Vec<_>>(),
            );
            batch.push(StreamAppend::new(
                StreamId::new(name(part.stream)).map_err(|e| TestCaseError::fail(e.to_string()))?,
                expected_version(part.expect),
                events,
            ));
        }
        let model_accepts = parts
            .iter()
            .all(|part| accepts(part.expect, heads[part.stream]));
        match store.append_batch(batch).await {
            Ok(results) => {
                prop_assert!(
                    model_accepts,
                    "the store accepted {parts:?} at heads {heads:?}"
                );
                for ((part, result), ids) in parts.iter().zip(&results).zip(ids) {
                    let head = heads[part.stream];
                    prop_assert_eq!(result.first_version, head + 1);
                    prop_assert_eq!(result.last_version, head + part.events as u64);
                    prop_assert_eq!(result.positions.len(), part.events);
                    heads[part.stream] = result.last_version;
                    model.entry(name(part.stream)).or_default().extend(ids);
                }
            }
            Err(Error::VersionConflict { stream, actual, .. }) => {
                prop_assert!(
                    !model_accepts,
                    "the store refused {parts:?} at heads {heads:?}"
                );
                let part = parts
                    .iter()
                    .find(|part| name(part.stream) == stream)
                    .ok_or_else(|| TestCaseError::fail(format!("conflict names {stream}")))?;
                prop_assert!(!accepts(part.expect, heads[part.stream]));
                prop_assert_eq!(actual, heads[part.stream]);
            }
            Err(other) => return Err(TestCaseError::fail(format!("{parts:?}: {other}"))),
        }
    }

    let mut log_position: BTreeMap<Uuid, LogPosition> = BTreeMap::new();
    for (stream, &head) in heads.iter().enumerate() {
        let id = StreamId::new(name(stream)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stored = store
            .read_stream(&id, 0, 10_000)
            .await
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        let versions: Vec<u64> = stored.iter().map(|event| event.version).collect();
        prop_assert_eq!(versions, (1..=head).collect::<Vec<_>>());
        let ids: Vec<Uuid> = stored.iter().map(|event| event.event_id).collect();
        let written = model.get(&name(stream)).cloned().unwrap_or_default();
        prop_assert_eq!(ids, written);
        let positions: Vec<LogPosition> = stored.iter().map(|event| event.position).collect();
        prop_assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "stream {stream}: positions not increasing: {positions:?}"
        );
        log_position.extend(stored.iter().map(|event| (event.event_id, event.position)));
    }

    // The global log holds each accepted event once, where the stream read
    // put it (PostgreSQL: other tests' transactions may hold the visible
    // horizon back for a moment).
    let total: usize = model.values().map(Vec::len).sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        let mut after = log_position
            .values()
            .min()
            .map_or(LogPosition::START, |first| {
                LogPosition::new(first.commit.saturating_sub(1), 0)
            });
        loop {
            let page = store
                .read_all(after, 5_000)
                .await
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            let Some(last) = page.last() else { break };
            after = last.position;
            seen.extend(
                page.into_iter()
                    .filter(|event| event.stream_id.as_str().starts_with(&prefix)),
            );
        }
        if seen.len() >= total || Instant::now() > deadline {
            prop_assert_eq!(seen.len(), total, "the log holds every accepted event once");
            for event in &seen {
                prop_assert_eq!(log_position.get(&event.event_id), Some(&event.position));
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cases() -> u32 {
    std::env::var("ANNALS_PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

fn run_model(make: fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = TestStore>>>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let test_store = runtime.block_on(make());
    let store: Arc<dyn EventStore> = test_store.store.clone();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&proptest::collection::vec(append(), 1..24), |appends| {
        runtime.block_on(check(&*store, appends))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[test]
fn the_in_memory_store_matches_the_model() {
    run_model(|| Box::pin(TestStore::memory()));
}

#[test]
fn the_sqlite_store_matches_the_model() {
    run_model(|| Box::pin(TestStore::sqlite()));
}

#[test]
fn the_postgres_store_matches_the_model() {
    run_model(|| Box::pin(TestStore::postgres()));
}
