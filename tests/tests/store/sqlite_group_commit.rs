//! Group commit on SQLite: appends queued behind a busy flight are written
//! in one transaction, each in a savepoint, so one caller's conflict or
//! duplicate event id undoes only its own events.
//!
//! Deterministic: another connection holds the write lock (`BEGIN
//! IMMEDIATE`), the first append's flight waits for it, the others queue
//! until `group_commit_status()` counts them, then the lock is released.

use std::time::{Duration, Instant};

use annals::prelude::*;
use annals::store::StreamAppend;
use annals_tests::appends::{noted as event, single, spawn_append, stream};
use sqlx::Connection;

async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_appends_share_a_transaction_and_each_caller_keeps_its_own_outcome() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let store = SqliteEventStore::open(&path).await.expect("open");
    let stored = event(0);
    let stored_id = stored.event_id;
    store
        .append(&stream("taken"), ExpectedVersion::NoStream, vec![stored])
        .await
        .expect("seed");

    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("take the write lock");

    let first = spawn_append(&store, single("first", ExpectedVersion::NoStream, 1));
    until("the first flight is taken", || {
        let status = store.group_commit_status();
        status.flights_in_progress == 1 && status.queued == 0
    })
    .await;
    let fine: Vec<_> = (0..4)
        .map(|n| {
            spawn_append(
                &store,
                single(&format!("fine-{n}"), ExpectedVersion::NoStream, n),
            )
        })
        .collect();
    let stale = spawn_append(&store, single("taken", ExpectedVersion::Exact(3), 9));
    let duplicate = spawn_append(
        &store,
        vec![
            StreamAppend::new(stream("copy-a"), ExpectedVersion::NoStream, vec![event(5)]),
            StreamAppend::new(
                stream("copy-b"),
                ExpectedVersion::NoStream,
                vec![event(6).with_event_id(stored_id)],
            ),
        ],
    );
    until("six appends queued", || {
        store.group_commit_status().queued == 6
    })
    .await;
    sqlx::query("COMMIT")
        .execute(&mut blocker)
        .await
        .expect("release the write lock");

    assert_eq!(
        first.await.expect("join").expect("first")[0].last_version,
        1
    );
    for (n, handle) in fine.into_iter().enumerate() {
        let result = handle.await.expect("join").expect("a fine append");
        assert_eq!(result[0].last_version, 1, "fine-{n}");
    }
    match stale.await.expect("join") {
        Err(Error::VersionConflict { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("taken", 1));
        }
        other => panic!("expected a conflict on `taken`, got {other:?}"),
    }
    match duplicate.await.expect("join") {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "event id");
            assert!(reason.contains(&stored_id.to_string()), "{reason}");
        }
        other => panic!("expected the duplicate id to be refused, got {other:?}"),
    }
    for undone in ["copy-a", "copy-b"] {
        assert_eq!(
            store
                .stream_version(&stream(undone))
                .await
                .expect("version"),
            0,
            "{undone}: a refused append undoes all of its own events"
        );
    }

    let log = store
        .read_all(LogPosition::START, 100)
        .await
        .expect("read_all");
    let streams: Vec<&str> = log.iter().map(|event| event.stream_id.as_str()).collect();
    assert_eq!(
        streams[..2],
        ["taken", "first"],
        "the blocked flight is written before the queued one"
    );
    let mut queued = streams[2..].to_vec();
    queued.sort_unstable();
    assert_eq!(queued, ["fine-0", "fine-1", "fine-2", "fine-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_on_sqlite_keep_every_stream_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .expect("open");
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 20;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = stream(&format!("writer-{writer}"));
                for n in 0..APPENDS {
                    store
                        .append(&id, ExpectedVersion::Exact(n), vec![event(n)])
                        .await
                        .unwrap_or_else(|error| panic!("writer {writer} append {n}: {error}"));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("join");
    }
    let log = store
        .read_all(LogPosition::START, 10_000)
        .await
        .expect("read_all");
    assert_eq!(log.len() as u64, WRITERS * APPENDS);
    for writer in 0..WRITERS {
        let versions: Vec<u64> = log
            .iter()
            .filter(|event| event.stream_id.as_str() == format!("writer-{writer}"))
            .map(|event| event.version)
            .collect();
        assert_eq!(
            versions,
            (1..=APPENDS).collect::<Vec<_>>(),
            "writer-{writer}"
        );
    }
    assert_eq!(store.group_commit_status().queued, 0);
}
