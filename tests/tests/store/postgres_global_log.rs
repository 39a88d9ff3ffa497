//! The PostgreSQL global log never skips an event that commits late.
//!
//! `a_late_commit_is_skipped_by_a_naive_reader_but_not_by_annals` shows the
//! sequence-gap problem deterministically and that `read_all` does not have it;
//! `concurrent_writers_and_a_tailing_reader` proves it under load: 8 writers
//! append to shared streams for several seconds while a reader tails the log
//! from its saved position, and must see every committed event exactly once,
//! each stream in version order. Appends naming the same streams in
//! opposite orders do not deadlock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use annals::prelude::*;
use annals_tests::backends::fresh_postgres_store;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid stream id")
}

/// The reader every hand-rolled Postgres event store starts with.
async fn naive_read(pool: &PgPool, after: i64) -> Vec<(i64, Uuid)> {
    sqlx::query_as("SELECT position, event_id FROM annals_events WHERE position > $1 ORDER BY position LIMIT 1000")
        .bind(after)
        .fetch_all(pool)
        .await
        .expect("naive read")
}

/// Reads after `after` until `count` events arrived, waiting out transactions
/// elsewhere in the cluster that hold the visibility horizon back.
async fn read_until(
    store: &PostgresEventStore,
    after: LogPosition,
    count: usize,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = store.read_all(after, 1000).await.expect("read_all");
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A writer that took a position and stays in flight (`late`, with
/// `late_id` written), while another append took a higher position and
/// committed first (`early_id`).
struct LateCommit {
    late: sqlx::Transaction<'static, sqlx::Postgres>,
    late_id: Uuid,
    early_id: Uuid,
}

impl LateCommit {
    async fn set_up(store: &PostgresEventStore) -> Self {
        let late_id = Uuid::now_v7();
        let mut late = store.pool().begin().await.expect("begin");
        sqlx::query(
            "INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version, payload) \
             VALUES ($1, 'late-1', 1, 'test.late', 1, '{}')",
        )
        .bind(late_id)
        .execute(&mut *late)
        .await
        .expect("late insert");
        let early = NewEvent::json("test.early", &json!({})).expect("event");
        let early_id = early.event_id;
        store
            .append(&stream("early-1"), ExpectedVersion::NoStream, vec![early])
            .await
            .expect("append");
        LateCommit {
            late,
            late_id,
            early_id,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_skipped_by_a_naive_reader_but_not_by_annals() {
    let store = fresh_postgres_store().await;
    let pool = store.pool().clone();
    let LateCommit {
        late,
        late_id,
        early_id,
    } = LateCommit::set_up(&store).await;

    let naive = naive_read(&pool, 0).await;
    assert_eq!(
        naive.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        [early_id]
    );
    let naive_checkpoint = naive[0].0;
    assert!(
        store
            .read_all(LogPosition::START, 100)
            .await
            .expect("read_all")
            .is_empty(),
        "Annals must hold the early event back while an older transaction may still commit"
    );

    late.commit().await.expect("commit");

    // The naive reader resumes past the late event's position: lost for good.
    assert!(
        naive_read(&pool, naive_checkpoint).await.is_empty(),
        "the naive reader skips it"
    );
    let late_position: i64 =
        sqlx::query_scalar("SELECT position FROM annals_events WHERE event_id = $1")
            .bind(late_id)
            .fetch_one(&pool)
            .await
            .expect("late row");
    assert!(late_position < naive_checkpoint);

    // Annals returns both, in commit order.
    let events = read_until(&store, LogPosition::START, 2).await;
    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
    assert_eq!(ids, [late_id, early_id]);
    assert!(
        store
            .read_all(events[1].position, 10)
            .await
            .expect("read_all")
            .is_empty()
    );
}

/// How long the writers run; `ANNALS_STRESS_SECONDS` overrides the default 4.
fn stress_duration() -> Duration {
    let seconds = std::env::var("ANNALS_STRESS_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(4);
    Duration::from_secs(seconds)
}

const WRITERS: usize = 8;
const STREAMS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_a_tailing_reader() {
    let store = Arc::new(fresh_postgres_store().await);
    let stop = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut conflicts = 0_usize;
                let mut rng = fastrand::Rng::with_seed(writer as u64);
                while !stop.load(Ordering::Relaxed) {
                    let first = rng.usize(..STREAMS);
                    let mut targets = vec![first];
                    if rng.u8(..5) == 0 {
                        targets.push((first + 1 + rng.usize(..STREAMS - 1)) % STREAMS);
                    }
                    let mut batch = Vec::new();
                    for target in targets {
                        let id = stream(&format!("stress-{target}"));
                        let expected = if rng.bool() {
                            ExpectedVersion::Any
                        } else {
                            ExpectedVersion::Exact(
                                store.stream_version(&id).await.expect("version"),
                            )
                        };
                        let events = (0..rng.usize(1..=4))
                            .map(|n| {
                                NewEvent::json("test.stress", &json!({ "writer": writer, "n": n }))
                                    .expect("event")
                            })
                            .collect();
                        batch.push(StreamAppend::new(id, expected, events));
                    }
                    let ids: Vec<Uuid> = batch
                        .iter()
                        .flat_map(|a| &a.events)
                        .map(|e| e.event_id)
                        .collect();
                    match store.append_batch(batch).await {
                        Ok(_) => acked.extend(ids),
                        Err(Error::VersionConflict { .. }) => conflicts += 1,
                        Err(other) => panic!("writer {writer}: {other:?}"),
                    }
                }
                (acked, conflicts)
            })
        })
        .collect();

    // A naive `ORDER BY position` reader runs alongside, to count what it loses.
    let naive = {
        let pool = store.pool().clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut checkpoint = 0;
            loop {
                let done = stop.load(Ordering::Relaxed);
                let rows = naive_read(&pool, checkpoint).await;
                if let Some((position, _)) = rows.last() {
                    checkpoint = *position;
                }
                let empty = rows.is_empty();
                seen.extend(rows.into_iter().map(|(_, id)| id));
                if done && empty {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    // The reader under test keeps nothing but its checkpoint between reads.
    // It stops once it has seen as many events as the writers acknowledged
    // and the log has nothing more: any extra or missing event then shows.
    let total = Arc::new(OnceLock::new());
    let reader = {
        let store = store.clone();
        let total = total.clone();
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut checkpoint = LogPosition::START;
            loop {
                let batch = store.read_all(checkpoint, 250).await.expect("read_all");
                let Some(last) = batch.last() else {
                    // Done when every acknowledged event arrived, or when the
                    // writers stopped long ago (then the assertions say what is missing).
                    if total
                        .get()
                        .is_some_and(|(total, stopped): &(usize, Instant)| {
                            seen.len() >= *total || stopped.elapsed() > Duration::from_secs(20)
                        })
                    {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                checkpoint = last.position;
                seen.extend(batch);
            }
        })
    };

    tokio::time::sleep(stress_duration()).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = HashSet::new();
    let mut acked_count = 0;
    let mut conflicts = 0;
    for writer in writers {
        let (ids, lost) = writer.await.expect("writer task");
        acked_count += ids.len();
        conflicts += lost;
        acked.extend(ids);
    }
    assert_eq!(acked.len(), acked_count, "event ids are unique");
    assert!(
        acked_count > 1000,
        "the writers appended only {acked_count} events"
    );
    total.set((acked_count, Instant::now())).expect("set once");

    let seen = reader.await.expect("reader task");
    let naive_seen = naive.await.expect("naive task");

    let seen_ids: Vec<Uuid> = seen.iter().map(|event| event.event_id).collect();
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "an event was delivered twice");
    let missed = acked.difference(&unique).count();
    let extra = unique.difference(&acked).count();
    assert_eq!(
        (missed, extra),
        (0, 0),
        "the reader missed {missed} and invented {extra} events"
    );
    assert!(
        seen.windows(2)
            .all(|pair| pair[0].position < pair[1].position)
    );

    let mut per_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for event in &seen {
        per_stream
            .entry(event.stream_id.as_str())
            .or_default()
            .push(event.version);
    }
    for (id, versions) in &per_stream {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, &expected, "stream {id} out of version order");
    }

    let missed_by_naive = acked.difference(&naive_seen).count();
    let streams: HashMap<&str, usize> = per_stream.iter().map(|(id, v)| (*id, v.len())).collect();
    eprintln!(
        "stress: {WRITERS} writers, {} s: {acked_count} events acknowledged in {} streams, {conflicts} conflicts; \
         Annals' reader saw all {} exactly once; a naive ORDER BY position reader missed {missed_by_naive}",
        stress_duration().as_secs(),
        streams.len(),
        seen.len(),
    );
}

/// Multi-stream appends that name the same streams in opposite orders do
/// not deadlock: rows are inserted in one canonical order (by stream), so
/// two appends never wait on each other's versions crosswise. Counted by
/// PostgreSQL itself, in a database of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_order_multi_stream_appends_do_not_deadlock() {
    let url = annals_tests::backends::postgres_url();
    let admin = PgPool::connect(&url).await.expect("connect");
    let database = format!("deadlock_{}", Uuid::now_v7().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .expect("a database of its own");
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    let own_url = format!("{base}/{database}");
    let store = annals::store::PostgresEventStore::builder(own_url)
        .without_group_commit()
        .max_connections(4)
        .connect()
        .await
        .expect("store");
    let writers: Vec<_> = [["left", "right"], ["right", "left"]]
        .into_iter()
        .map(|order| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..60u64 {
                    let batch = order
                        .iter()
                        .map(|id| {
                            StreamAppend::new(
                                stream(id),
                                ExpectedVersion::Any,
                                vec![
                                    NewEvent::json("test.numbered", &json!({ "n": n }))
                                        .expect("event"),
                                ],
                            )
                        })
                        .collect();
                    store.append_batch(batch).await.expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_eq!(store.stream_version(&stream("left")).await.expect("v"), 120);
    // Closing the pool ends its backends, which report their counters.
    store.pool().close().await;
    let deadlocks: i64 =
        sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = $1")
            .bind(&database)
            .fetch_one(&admin)
            .await
            .expect("statistics");
    assert_eq!(deadlocks, 0, "opposite orders deadlocked");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&admin)
        .await
        .expect("drop the database");
}

/// Records the ids of the events a replay applies, in order.
#[derive(Default)]
struct Seen(Vec<Uuid>);

#[async_trait::async_trait]
impl annals::projection::Projection for Seen {
    const NAME: &'static str = "seen";
    const VERSION: u32 = 1;
    type Context = ();

    fn event_types() -> Vec<&'static str> {
        vec!["test.late", "test.early"]
    }

    async fn apply(&mut self, event: &RecordedEvent, _: &mut ()) -> annals::Result<()> {
        self.0.push(event.event_id);
        Ok(())
    }
}

/// A replay run while a transaction that wrote an earlier position is still
/// open waits for it instead of passing over its event for good (it used to
/// page by position, and finished at once with only the later event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_passes_over_an_event_that_commits_late() {
    let store = fresh_postgres_store().await;
    let LateCommit {
        late,
        late_id,
        early_id,
    } = LateCommit::set_up(&store).await;

    let store: Arc<dyn EventStore> = Arc::new(store);
    let replay = annals::replay::Replays::new().project(store, Seen::default(), EventQuery::new());
    tokio::time::sleep(Duration::from_millis(300)).await;
    late.commit().await.expect("commit");
    let (seen, progress) = replay.finish().await.expect("replay");
    assert_eq!(seen.0, [late_id, early_id], "both, in commit order");
    assert_eq!(progress.done, 2);
}

/// A replay whose counted events stay behind the horizon longer than its
/// patience (a transaction left open) fails, saying why, rather than
/// finishing without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_held_back_past_its_patience_fails_naming_the_horizon() {
    let store = fresh_postgres_store().await;
    let LateCommit { late, .. } = LateCommit::set_up(&store).await;
    let store: Arc<dyn EventStore> = Arc::new(store);
    let outcome = annals::replay::Replays::new()
        .horizon_patience(Duration::from_millis(300))
        .project(store, Seen::default(), EventQuery::new())
        .finish()
        .await;
    match outcome {
        Err(error) => assert!(
            format!("{error:?}").contains("a long-running transaction holds it back"),
            "{error:?}"
        ),
        Ok((seen, _)) => panic!(
            "expected the held-back replay to fail, it applied {:?}",
            seen.0
        ),
    }
    late.rollback().await.expect("rollback");
}

/// `read_matching`, what a decision reads before appending on a condition
/// after the last event returned, is gap-safe like `read_all`: while a
/// transaction that wrote an earlier matching event is open, the later one
/// is held back (returning it would let a condition after it miss the
/// earlier one); after the commit both come, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_matching_never_passes_over_a_matching_event_that_commits_late() {
    use annals::store::{Criterion, EventCriteria};
    let store = fresh_postgres_store().await;
    let late_id = Uuid::now_v7();
    let mut late = store.pool().begin().await.expect("begin");
    sqlx::query(
        "WITH e AS (
             INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version, payload, tags)
             VALUES ($1, 'late-1', 1, 'test.late', 1, '{}', ARRAY['email:x'])
             RETURNING transaction_id, position, event_type)
         INSERT INTO annals_event_tags (tag, tenant_id, transaction_id, position, event_type)
         SELECT 'email:x', NULL, transaction_id, position, event_type FROM e",
    )
    .bind(late_id)
    .execute(&mut *late)
    .await
    .expect("late insert");
    let early = NewEvent::json("test.early", &json!({}))
        .expect("event")
        .with_tags(["email:x"]);
    let early_id = early.event_id;
    store
        .append(&stream("early-1"), ExpectedVersion::NoStream, vec![early])
        .await
        .expect("append");

    let criteria = EventCriteria::from(Criterion::tagged(["email:x"]));
    let held_back = store
        .read_matching(None, &criteria, None, 10)
        .await
        .expect("read");
    assert!(
        held_back.is_empty(),
        "the committed event sorts after an open transaction's: {held_back:?}"
    );
    late.commit().await.expect("commit");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let both = loop {
        let events = store
            .read_matching(None, &criteria, None, 10)
            .await
            .expect("read");
        if events.len() >= 2 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let ids: Vec<Uuid> = both.iter().map(|event| event.event_id).collect();
    assert_eq!(ids, [late_id, early_id], "both, in log order");
}

/// `read_log` with a type filter is gap-safe too: while an older
/// transaction that wrote a wanted event is open, neither the later events
/// nor how far the log was read pass it; after the commit the wanted event
/// comes, so a reader of one type that moved its checkpoint to `read_to`
/// never skips one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_read_never_reads_past_an_event_that_commits_late() {
    use annals::store::LogFilter;
    let store = fresh_postgres_store().await;
    let LateCommit {
        late,
        late_id,
        early_id,
    } = LateCommit::set_up(&store).await;
    let late_only = LogFilter::event_types(["test.late"]);
    let held_back = store
        .read_log(LogPosition::START, 100, &late_only)
        .await
        .expect("read_log");
    assert!(held_back.events.is_empty());
    assert_eq!(
        held_back.read_to,
        LogPosition::START,
        "the read must not move past the open transaction's event"
    );
    let early_only = store
        .read_log(
            LogPosition::START,
            100,
            &LogFilter::event_types(["test.early"]),
        )
        .await
        .expect("read_log");
    assert!(
        early_only.events.is_empty(),
        "the committed event sorts after the open one"
    );
    assert_eq!(early_only.read_to, LogPosition::START);

    late.commit().await.expect("commit");
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = store
            .read_log(held_back.read_to, 100, &late_only)
            .await
            .expect("read_log");
        if page.read_to > held_back.read_to || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        page.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        [late_id]
    );
    let all = read_until(&store, LogPosition::START, 2).await;
    assert_eq!(
        all.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        [late_id, early_id]
    );
    assert_eq!(
        page.read_to, all[1].position,
        "then read to the head, past the early event"
    );
}

/// How many index entries each of the events table's indexes has read so
/// far (`pg_stat_user_indexes`, which a backend publishes once idle).
async fn index_entries_read(store: &PostgresEventStore) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT indexrelname::text, idx_tup_read FROM pg_stat_user_indexes \
         WHERE schemaname = current_schema() AND relname = 'annals_events'",
    )
    .fetch_all(store.pool())
    .await
    .expect("index statistics")
    .into_iter()
    .collect()
}

/// A page of a common type from the middle of the log reads the type's
/// index from the keyset: about a page of entries, in log order, whatever
/// PostgreSQL knows of the table. Here it knows nothing (no `ANALYZE` has
/// run, as after a bulk load); the planner then took the type-and-time
/// index and sorted every event of the type, page after page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_page_walks_the_type_index_from_its_keyset_without_statistics() {
    use annals::store::LogFilter;
    let store = fresh_postgres_store().await;
    sqlx::query("ALTER TABLE annals_events SET (autovacuum_enabled = false)")
        .execute(store.pool())
        .await
        .expect("autovacuum off");
    for append in 0..2 {
        let batch = (0..100)
            .map(|order| {
                let events = (0..100)
                    .map(|line| {
                        NewEvent::json("test.common", &json!({ "line": line })).expect("event")
                    })
                    .collect();
                StreamAppend::new(
                    stream(&format!("order-{append}-{order}")),
                    ExpectedVersion::NoStream,
                    events,
                )
            })
            .collect();
        store.append_batch(batch).await.expect("append");
    }
    // The whole log visible first (other tests' open transactions on the
    // shared server can hold the second append back for a while), so the
    // page measured below is one read.
    let deadline = Instant::now() + Duration::from_secs(30);
    let middle = loop {
        let page = store
            .read_log(LogPosition::START, 20_000, &LogFilter::all())
            .await
            .expect("read_log");
        if page.events.len() == 20_000 || Instant::now() > deadline {
            break page
                .events
                .get(9_999)
                .expect("events were appended")
                .position;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let before = index_entries_read(&store).await;
    let page = store
        .read_log(middle, 100, &LogFilter::event_types(["test.common"]))
        .await
        .expect("read_log");
    assert_eq!(page.events.len(), 100);
    let type_index = "annals_events_by_type_log_order";
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let after = index_entries_read(&store).await;
        if after[type_index] > before[type_index] || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let read: BTreeMap<&str, i64> = after
        .iter()
        .map(|(index, entries)| (index.as_str(), entries - before[index]))
        .filter(|(_, entries)| *entries > 0)
        .collect();
    assert!(
        read.get(type_index).is_some_and(|entries| *entries <= 200),
        "a page of 100 must read about 100 entries of {type_index}: {read:?}"
    );
    assert!(
        read.keys()
            .all(|index| *index == type_index || *index == "annals_events_log_order"),
        "no other index may serve the page: {read:?}"
    );
}
