//! Group commit on PostgreSQL: appends queued behind a busy flight are
//! written together in one transaction, and each caller still gets its own
//! result.
//!
//! The first two tests make the grouping deterministic: a transaction holds
//! `LOCK TABLE annals_events IN SHARE MODE`, so the one flight (reads go on,
//! inserts wait) blocks; the appends sent meanwhile queue until
//! `group_commit_status()` counts them all; then the lock is released and they
//! form the next flight.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use annals::prelude::*;
use annals::store::GroupCommitOptions;
use annals_tests::appends::{noted as event, single, spawn_append, stream};
use annals_tests::backends::postgres_url;
use sqlx::{PgPool, Postgres, Transaction};

async fn one_flight_store() -> PostgresEventStore {
    PostgresEventStore::builder(postgres_url())
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .group_commit(GroupCommitOptions {
            flights: 1,
            ..GroupCommitOptions::default()
        })
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to the test PostgreSQL: {error:?}"))
}

/// Blocks every insert into the log until the returned transaction ends.
async fn hold_inserts(pool: &PgPool) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE annals_events IN SHARE MODE")
        .execute(&mut *tx)
        .await
        .expect("lock the log");
    tx
}

/// Waits until a statement waits for the lock on this schema's log (the
/// first flight is stuck).
async fn until_a_statement_waits(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'annals_events'::regclass",)
            .fetch_one(pool)
            .await
            .expect("read pg_locks");
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the first flight never blocked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_queued(store: &PostgresEventStore, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.group_commit_status().queued < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} appends queued",
            store.group_commit_status().queued
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The whole log once `count` events are visible: the other tests' open
/// lock transactions hold the log's visibility horizon back for a moment.
async fn read_until(store: &PostgresEventStore, count: usize) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = store
            .read_all(LogPosition::START, 10_000)
            .await
            .expect("read_all");
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_appends_share_one_commit_and_a_conflict_stays_with_its_caller() {
    let store = one_flight_store().await;
    store
        .append(&stream("taken"), ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("seed taken");
    store
        .append(
            &stream("taken-too"),
            ExpectedVersion::NoStream,
            vec![event(0)],
        )
        .await
        .expect("seed taken-too");

    let lock = hold_inserts(store.pool()).await;
    let first = spawn_append(&store, single("first", ExpectedVersion::NoStream, 1));
    until_a_statement_waits(store.pool()).await;

    let fine: Vec<_> = (0..5)
        .map(|n| {
            spawn_append(
                &store,
                single(&format!("fine-{n}"), ExpectedVersion::NoStream, n),
            )
        })
        .collect();
    let stale = spawn_append(&store, single("taken", ExpectedVersion::Exact(0), 9));
    // Two streams, one of them stale: neither may be written.
    let stale_pair = spawn_append(
        &store,
        vec![
            StreamAppend::new(
                stream("pair-new"),
                ExpectedVersion::NoStream,
                vec![event(1)],
            ),
            StreamAppend::new(
                stream("taken-too"),
                ExpectedVersion::Exact(7),
                vec![event(2)],
            ),
        ],
    );
    // The stream of the blocked flight again: waits for the flight after.
    let first_again = spawn_append(&store, single("first", ExpectedVersion::Exact(1), 2));
    until_queued(&store, 8).await;
    lock.commit().await.expect("release the log");

    let first = first.await.expect("join").expect("the blocked append");
    assert_eq!(first[0].last_version, 1);

    let mut commits = HashSet::new();
    for (n, handle) in fine.into_iter().enumerate() {
        let result = handle.await.expect("join").expect("a fine append");
        assert_eq!(result[0].first_version, 1, "fine-{n}");
        commits.insert(result[0].position.commit);
    }
    assert_eq!(
        commits.len(),
        1,
        "the five queued appends share one transaction"
    );
    assert_ne!(
        commits.iter().next().copied(),
        Some(first[0].position.commit),
        "the queued appends are not in the blocked flight"
    );

    match stale.await.expect("join") {
        Err(Error::VersionConflict { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("taken", 1));
        }
        other => panic!("expected a conflict on `taken`, got {other:?}"),
    }
    match stale_pair.await.expect("join") {
        Err(Error::VersionConflict { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("taken-too", 1));
        }
        other => panic!("expected a conflict on `taken-too`, got {other:?}"),
    }
    assert_eq!(
        store
            .stream_version(&stream("pair-new"))
            .await
            .expect("version"),
        0,
        "a conflicting multi-stream append writes none of its streams"
    );
    assert_eq!(
        store
            .stream_version(&stream("taken"))
            .await
            .expect("version"),
        1
    );

    let again = first_again
        .await
        .expect("join")
        .expect("the second append to `first`");
    assert_eq!(again[0].last_version, 2);
    assert_eq!(store.group_commit_status().queued, 0);

    let log = read_until(&store, 9).await;
    assert_eq!(
        log.len(),
        2 + 1 + 5 + 1,
        "seeds, first, five fine, first again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_id_in_a_flight_fails_only_its_own_append() {
    let store = one_flight_store().await;
    let stored = event(0);
    let stored_id = stored.event_id;
    store
        .append(&stream("original"), ExpectedVersion::NoStream, vec![stored])
        .await
        .expect("seed");

    let lock = hold_inserts(store.pool()).await;
    let first = spawn_append(&store, single("first", ExpectedVersion::Any, 1));
    until_a_statement_waits(store.pool()).await;
    let before = spawn_append(&store, single("before", ExpectedVersion::NoStream, 2));
    let duplicate = spawn_append(
        &store,
        vec![StreamAppend::new(
            stream("copy"),
            ExpectedVersion::NoStream,
            vec![event(3).with_event_id(stored_id)],
        )],
    );
    let after = spawn_append(&store, single("after", ExpectedVersion::NoStream, 4));
    until_queued(&store, 3).await;
    lock.commit().await.expect("release the log");

    first.await.expect("join").expect("the blocked append");
    before
        .await
        .expect("join")
        .expect("an append beside the duplicate");
    after
        .await
        .expect("join")
        .expect("an append beside the duplicate");
    match duplicate.await.expect("join") {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "event id");
            assert!(reason.contains(&stored_id.to_string()), "{reason}");
        }
        other => panic!("expected the duplicate id to be refused, got {other:?}"),
    }
    assert_eq!(
        store
            .stream_version(&stream("copy"))
            .await
            .expect("version"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_coalesce_and_every_stream_keeps_its_order() {
    let store = PostgresEventStore::builder(postgres_url())
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .connect()
        .await
        .expect("connect");
    const WRITERS: u64 = 32;
    const APPENDS: u64 = 25;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = stream(&format!("writer-{writer}"));
                let mut commits = Vec::new();
                for n in 0..APPENDS {
                    let result = store
                        .append(&id, ExpectedVersion::Exact(n), vec![event(n)])
                        .await
                        .unwrap_or_else(|error| panic!("writer {writer} append {n}: {error}"));
                    assert_eq!(result.last_version, n + 1);
                    commits.push(result.position.commit);
                }
                commits
            })
        })
        .collect();
    let mut commits = HashSet::new();
    for writer in writers {
        commits.extend(writer.await.expect("join"));
    }
    assert!(
        commits.len() < (WRITERS * APPENDS) as usize,
        "{} appends took {} transactions: nothing was grouped",
        WRITERS * APPENDS,
        commits.len()
    );

    let log = read_until(&store, (WRITERS * APPENDS) as usize).await;
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
}

#[tokio::test]
async fn group_commit_can_be_turned_off() {
    let store = PostgresEventStore::builder(postgres_url())
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .without_group_commit()
        .connect()
        .await
        .expect("connect");
    store
        .append(&stream("alone"), ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("append without group commit");
    assert_eq!(store.group_commit_status().queued, 0);

    let refused = PostgresEventStore::builder(postgres_url())
        .group_commit(GroupCommitOptions {
            flights: 0,
            ..GroupCommitOptions::default()
        })
        .connect()
        .await
        .expect_err("zero flights");
    assert!(matches!(refused, Error::Config(_)), "{refused:?}");
}

/// One event tagged `tag` for stream `id`, on the condition (when
/// `conditioned`) that no event carries `tag` yet.
fn tagged(id: &str, tag: &str, conditioned: bool) -> Vec<StreamAppend> {
    use annals::store::{AppendCondition, Criterion};
    let append = StreamAppend::new(
        stream(id),
        ExpectedVersion::NoStream,
        vec![event(1).with_tags([tag])],
    );
    vec![if conditioned {
        append.with_condition(AppendCondition::none_match(Criterion::tagged([tag])))
    } else {
        append
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_condition_in_a_flight_keeps_out_only_its_own_events() {
    let store = one_flight_store().await;
    store
        .append_batch(tagged("seed", "email:taken", false))
        .await
        .expect("seed a tagged event");

    let lock = hold_inserts(store.pool()).await;
    let first = spawn_append(&store, single("first", ExpectedVersion::NoStream, 1));
    until_a_statement_waits(store.pool()).await;
    // Queued behind the blocked flight: a condition broken by a stored
    // event, a writer of a fresh tag and a condition on that same tag (which
    // must not share its flight, or it could not see it), and a bystander.
    // Queued one at a time, so that their order is the one written here.
    let broken = spawn_append(&store, tagged("broken", "email:taken", true));
    until_queued(&store, 1).await;
    let writer = spawn_append(&store, tagged("writer", "email:fresh", false));
    until_queued(&store, 2).await;
    let late = spawn_append(&store, tagged("late", "email:fresh", true));
    until_queued(&store, 3).await;
    let bystander = spawn_append(&store, single("bystander", ExpectedVersion::NoStream, 2));
    until_queued(&store, 4).await;
    lock.commit().await.expect("release the log");

    first.await.expect("join").expect("the blocked append");
    let broken = broken.await.expect("join");
    assert!(
        matches!(&broken, Err(Error::AppendConditionFailed { stream, .. }) if stream == "broken"),
        "{broken:?}"
    );
    let writer = writer
        .await
        .expect("join")
        .expect("the writer of a fresh tag");
    let late = late.await.expect("join");
    match &late {
        Err(Error::AppendConditionFailed { found, .. }) => {
            assert_eq!(*found, writer[0].position, "the writer's event broke it")
        }
        other => panic!("the condition on the writer's tag held: {other:?}"),
    }
    bystander.await.expect("join").expect("the bystander");
    for (id, version) in [("broken", 0), ("late", 0), ("writer", 1), ("bystander", 1)] {
        assert_eq!(
            store.stream_version(&stream(id)).await.expect("version"),
            version,
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conditional_appends_over_four_flights_exactly_one_wins() {
    let store = PostgresEventStore::builder(postgres_url())
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .group_commit(GroupCommitOptions {
            flights: 4,
            ..GroupCommitOptions::default()
        })
        .connect()
        .await
        .expect("connect");
    for round in 0..10 {
        let tag = format!("email:race-{round}");
        let racers: Vec<_> = (0..16)
            .map(|n| spawn_append(&store, tagged(&format!("racer-{round}-{n}"), &tag, true)))
            .collect();
        let mut wins = 0;
        for racer in racers {
            match racer.await.expect("join") {
                Ok(_) => wins += 1,
                Err(Error::AppendConditionFailed { .. }) => {}
                Err(other) => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

/// Appends (alone and in a flight) and type-filtered reads run with planner
/// settings of their own (a generic plan; no sorts), set for their
/// transaction only, or, for flights, on connections of their own: the
/// pooled connection keeps the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_settings_of_appends_and_filtered_reads_stay_in_their_transaction() {
    use annals::store::LogFilter;
    let store = PostgresEventStore::builder(postgres_url())
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .max_connections(1)
        .connect()
        .await
        .expect("connect");
    let appends = (0..4).map(|n| {
        spawn_append(
            &store,
            single(&format!("settings-{n}"), ExpectedVersion::NoStream, n),
        )
    });
    for append in appends.collect::<Vec<_>>() {
        append.await.expect("join").expect("append");
    }
    // The gap-safe read shows the appends once no older transaction of the
    // server (other tests run beside this one) is still open.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = store
            .read_log(LogPosition::START, 10, &LogFilter::event_types(["noted"]))
            .await
            .expect("read_log");
        if !page.events.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the appends are read back within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let settings: (String, String, String) = sqlx::query_as(
        "SELECT current_setting('plan_cache_mode'), current_setting('enable_sort'), current_setting('jit')",
    )
    .fetch_one(store.pool())
    .await
    .expect("settings");
    let server: (String, String, String) = sqlx::query_as(
        "SELECT reset_val, (SELECT reset_val FROM pg_settings WHERE name = 'enable_sort'), \
                (SELECT reset_val FROM pg_settings WHERE name = 'jit') \
         FROM pg_settings WHERE name = 'plan_cache_mode'",
    )
    .fetch_one(store.pool())
    .await
    .expect("server settings");
    assert_eq!(settings, server);
}

/// A flight is written on a connection of its own, one statement in
/// autocommit (no `BEGIN`/`SET LOCAL` and `COMMIT` round trips, which cost
/// W1 a fifth of its commands per second): with the store's one pooled
/// connection held elsewhere, appends still go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_does_not_wait_for_the_stores_pool() {
    let store = PostgresEventStore::builder(postgres_url())
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect");
    let held = store
        .pool()
        .acquire()
        .await
        .expect("the pool's one connection");
    let appends = (0..4).map(|n| {
        spawn_append(
            &store,
            single(&format!("own-{n}"), ExpectedVersion::NoStream, n),
        )
    });
    for append in appends.collect::<Vec<_>>() {
        let results = append
            .await
            .expect("join")
            .expect("appended while the pool was busy");
        assert_eq!(results.len(), 1);
    }
    drop(held);
    assert_eq!(read_until(&store, 4).await.len(), 4);
}

/// A flight's append is a statement in autocommit, its own transaction:
/// the server shows the waiting append's transaction starting with it (a
/// flight used to open with `BEGIN; SET LOCAL`, then run the statement,
/// then `COMMIT`: three round trips where the raw insert takes one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_is_one_statement_in_autocommit() {
    let store = one_flight_store().await;
    let lock = hold_inserts(store.pool()).await;
    let append = spawn_append(&store, single("autocommit", ExpectedVersion::NoStream, 1));
    until_a_statement_waits(store.pool()).await;
    let (own_transaction, query): (bool, String) = sqlx::query_as(
        "SELECT a.xact_start = a.query_start, a.query FROM pg_stat_activity a \
         JOIN pg_locks l ON l.pid = a.pid \
         WHERE NOT l.granted AND l.relation = 'annals_events'::regclass",
    )
    .fetch_one(store.pool())
    .await
    .expect("the waiting append");
    assert!(
        // (The server keeps the first kilobyte of a statement's text.)
        query.contains("WITH expectations AS"),
        "the waiting statement is the append: {query}"
    );
    assert!(
        own_transaction,
        "the append's transaction began before the statement (BEGIN sent first)"
    );
    lock.commit().await.expect("release the log");
    append.await.expect("join").expect("appended");
}
