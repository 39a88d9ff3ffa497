//! Crash safety: writers append two-stream batches (three events per
//! stream) while the database goes away hard. Afterwards every append that
//! returned `Ok` is stored, no batch is half stored, and the writers' errors
//! are the typed infrastructure error (`Error::Backend`).
//!
//! - PostgreSQL: `pg_ctl stop -m immediate` (no shutdown checkpoint; the
//!   server recovers from its WAL on restart) under 8 writers.
//! - SQLite: a writer process (`src/bin/sqlite_crash_writer.rs`, 4 tasks)
//!   killed with SIGKILL; the next open recovers the WAL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals::prelude::*;
use annals::store::StreamAppend;
use annals_tests::backends::OwnPostgres;

const EVENTS_PER_STREAM: u64 = 3;

fn batch(name: &str) -> Vec<StreamAppend> {
    ["a", "b"]
        .iter()
        .map(|side| {
            let events = (0..EVENTS_PER_STREAM)
                .map(|i| {
                    NewEvent::json("crash.noted", &serde_json::json!({ "i": i }))
                        .expect("encodable")
                })
                .collect();
            StreamAppend::new(
                StreamId::new(format!("{name}-{side}")).expect("stream id"),
                ExpectedVersion::NoStream,
                events,
            )
        })
        .collect()
}

/// Every event in the log, read after the crash.
async fn whole_log(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after = LogPosition::START;
    loop {
        let page = store.read_all(after, 5_000).await.expect("read the log");
        let Some(last) = page.last() else {
            return events;
        };
        after = last.position;
        events.extend(page);
    }
}

/// Checks the log against the acknowledged batches: each is whole, and no
/// batch in the log (acknowledged or not: a commit whose answer was lost)
/// is partial.
fn check_batches(log: &[RecordedEvent], acknowledged: &BTreeSet<String>) {
    let mut streams: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for event in log {
        streams
            .entry(event.stream_id.as_str())
            .or_default()
            .push(event.version);
    }
    let whole: Vec<u64> = (1..=EVENTS_PER_STREAM).collect();
    let mut batches = BTreeSet::new();
    for (stream, versions) in &streams {
        assert_eq!(versions, &whole, "stream {stream} is partial");
        let (name, _) = stream.rsplit_once('-').expect("batch-side");
        batches.insert(name.to_owned());
    }
    for name in &batches {
        for side in ["a", "b"] {
            assert!(
                streams.contains_key(format!("{name}-{side}").as_str()),
                "batch {name} is stored without its stream {side}"
            );
        }
    }
    let lost: Vec<&String> = acknowledged.difference(&batches).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_an_immediate_postgres_stop() {
    let server = OwnPostgres::start().await;
    let store = PostgresEventStore::builder(server.url())
        .max_connections(12)
        .acquire_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect");

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            let count = Arc::clone(&acknowledged_count);
            tokio::spawn(async move {
                let (mut acknowledged, mut errors) = (Vec::new(), Vec::new());
                for n in 0_u64.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let name = format!("w{writer}-b{n}");
                    match store.append_batch(batch(&name)).await {
                        Ok(_) => {
                            acknowledged.push(name);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(error) => {
                            errors.push(error);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                (acknowledged, errors)
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged_count.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "the writers did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.crash();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);

    let mut acknowledged = BTreeSet::new();
    let mut errors = Vec::new();
    for writer in writers {
        let (done, failed) = writer.await.expect("writer task");
        acknowledged.extend(done);
        errors.extend(failed);
    }
    assert!(
        !errors.is_empty(),
        "the writers kept appending through the crash, so some appends must have failed"
    );
    for error in &errors {
        assert!(
            matches!(error, Error::Backend { .. }),
            "a failed append must be the infrastructure error, not {error:?}"
        );
    }

    server.restart().await;
    let after = PostgresEventStore::connect(&server.url())
        .await
        .expect("reconnect after the restart");
    check_batches(&whole_log(&after).await, &acknowledged);
    // The store handle from before the crash works again too.
    store
        .append_batch(batch("after-restart"))
        .await
        .expect("append after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_killed_sqlite_process() {
    use std::os::unix::process::ExitStatusExt as _;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    // Create the tables first, so the child starts appending at once.
    drop(SqliteEventStore::open(&path).await.expect("create"));

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sqlite_crash_writer"))
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the writer process");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acknowledged = BTreeSet::new();
    while acknowledged.len() < 200 {
        match lines.next() {
            Some(Ok(line)) => {
                let name = line.strip_prefix("ok ").expect("`ok <batch>`").to_owned();
                acknowledged.insert(name);
            }
            other => panic!(
                "the writer stopped early: {other:?}, {:?}",
                child.try_wait()
            ),
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reap the writer");
    assert_eq!(status.signal(), Some(9), "killed mid-append, not exited");
    // What it acknowledged before dying is still in the pipe.
    for line in lines {
        let line = line.expect("utf-8 line");
        acknowledged.insert(line.strip_prefix("ok ").expect("`ok <batch>`").to_owned());
    }

    let store = SqliteEventStore::open(&path)
        .await
        .expect("reopen after the kill");
    check_batches(&whole_log(&store).await, &acknowledged);
    store
        .append_batch(batch("after-kill"))
        .await
        .expect("append after the kill");
}
