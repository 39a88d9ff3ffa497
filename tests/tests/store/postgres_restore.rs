//! A log restored with `pg_dump`/`pg_restore` into another cluster: its
//! transaction ids are the old cluster's, ahead of the new one's. Connecting
//! refuses it, naming the cause and the fix; re-stamping makes it readable
//! in its order with its positions, moves the checkpoints, keeps the hash
//! chain intact, and new events and subscriptions go on after it.

use std::sync::Arc;
use std::time::Duration;

use annals::prelude::*;
use annals::store::{EventQuery, PostgresEventStore};
use annals::subscription::Subscription;
use annals_tests::backends::OwnPostgres;
use annals_tests::subscription::CollectedIds;
use serde_json::json;
use sqlx::Connection as _;
use uuid::Uuid;

const SCHEMA: &str = "restored";

/// Every event of the log in its order: (id, position).
async fn log(store: &PostgresEventStore) -> Vec<(Uuid, LogPosition)> {
    let mut from = LogPosition::START;
    let mut events = Vec::new();
    loop {
        let batch = store.read_all(from, 1_000).await.expect("read the log");
        let Some(last) = batch.last() else {
            return events;
        };
        from = last.position;
        events.extend(batch.iter().map(|event| (event.event_id, event.position)));
    }
}

async fn append(store: &PostgresEventStore, stream: &str, n: usize) {
    let event = NewEvent::json("restore.noted", &json!({ "n": n }))
        .expect("event")
        .with_tags([format!("writer:{stream}")]);
    store
        .append(
            &StreamId::new(stream).expect("stream id"),
            ExpectedVersion::Any,
            vec![event],
        )
        .await
        .expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_restored_into_another_cluster_is_refused_then_restamped_in_order() {
    // The old cluster has handed out many transaction ids; the log is
    // written by concurrent writers (their commits may interleave with
    // their positions).
    let old = OwnPostgres::start().await;
    old.use_transaction_ids(20_000);
    let source = Arc::new(
        PostgresEventStore::builder(old.url())
            .schema(SCHEMA)
            .connect()
            .await
            .expect("the old cluster's store"),
    );
    let writers: Vec<_> = (0..6)
        .map(|writer| {
            let source = source.clone();
            tokio::spawn(async move {
                for n in 0..40 {
                    append(&source, &format!("writer-{writer}"), n).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    // A commit whose id is older than its position: a transaction takes
    // its id, another appends and commits, then the first writes an event
    // (the row an append writes, its link made by the same functions). The
    // log's order then steps back in position once.
    step_back(&old, &source, "late-writer", "writer-0").await;
    let before = log(&source).await;
    assert_eq!(before.len(), 242);
    let steps_back = before
        .windows(2)
        .filter(|pair| pair[1].1.sequence < pair[0].1.sequence)
        .count();
    assert!(steps_back >= 1, "the log never steps back in position");
    assert!(source.verify_log().await.expect("verify").is_intact());
    // A reader checkpointed in the middle of the log.
    let middle = before[120].1;
    source
        .checkpoints()
        .save("reader", middle)
        .await
        .expect("save the checkpoint");

    // pg_dump, then pg_restore into a new cluster: the gap-safe read sees
    // none of it there.
    let new = OwnPostgres::start().await;
    old.dump_schema_into(&new, SCHEMA);
    drop(source);
    let mut raw = sqlx::PgConnection::connect(&new.url())
        .await
        .expect("connect");
    let (visible,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {SCHEMA}.annals_events \
         WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
    )))
    .fetch_one(&mut raw)
    .await
    .expect("count");
    assert_eq!(
        visible, 0,
        "the restored log should be invisible before re-stamping"
    );
    let refused = PostgresEventStore::builder(new.url())
        .schema(SCHEMA)
        .connect()
        .await
        .expect_err("connecting to the restored log is refused");
    assert!(
        matches!(refused, Error::ForeignHistory { stored, next } if stored >= next),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("restored from another PostgreSQL cluster")
            && message.contains("annals restamp"),
        "{message}"
    );

    // Re-stamped: the same events, in the same order, at the same
    // positions' sequence numbers; the chain intact.
    let (store, report) = PostgresEventStore::builder(new.url())
        .schema(SCHEMA)
        .restamp_restored_log()
        .await
        .expect("re-stamp");
    assert_eq!(report.events, 242, "{report:?}");
    assert_eq!(report.checkpoints, 1, "{report:?}");
    assert_eq!(report.commits as usize, steps_back + 1, "{report:?}");
    let after = log(&store).await;
    let ids = |log: &[(Uuid, LogPosition)]| log.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "the order changed");
    let sequences =
        |log: &[(Uuid, LogPosition)]| log.iter().map(|(_, p)| p.sequence).collect::<Vec<_>>();
    assert_eq!(sequences(&after), sequences(&before), "positions changed");
    assert!(
        after.iter().all(|(_, position)| position.commit < 20_000),
        "commit ids still the old cluster's"
    );
    let chain = store.verify_log().await.expect("verify");
    assert!(chain.is_intact(), "{chain:?}");
    assert_eq!(chain.events_checked, 242);

    // The checkpoint names the same event: reading on from it gives the
    // second half.
    let moved = store
        .checkpoints()
        .load("reader")
        .await
        .expect("load")
        .expect("the checkpoint")
        .position;
    assert_eq!(moved, after[120].1);
    let rest: Vec<Uuid> = store
        .read_all(moved, 1_000)
        .await
        .expect("read on")
        .iter()
        .map(|event| event.event_id)
        .collect();
    assert_eq!(rest, ids(&before)[121..]);

    // New events come after the restored ones; tag queries see both, in
    // the log's order; connecting normally works again; the subscription
    // goes on from its checkpoint.
    let store = Arc::new(
        PostgresEventStore::builder(new.url())
            .schema(SCHEMA)
            .connect()
            .await
            .expect("connect after re-stamping"),
    );
    append(&store, "writer-0", 41).await;
    let seen = CollectedIds::default();
    let reader = Subscription::new(store.clone(), "reader").start(seen.clone());
    reader
        .wait_until(Duration::from_secs(30), |status| status.delivered >= 122)
        .await
        .expect("the subscription reads on");
    reader.stop().await.expect("stop");
    let now = log(&store).await;
    assert_eq!(now.len(), 243);
    assert_eq!(ids(&now[..242]), ids(&before));
    let mut expected = ids(&before)[121..].to_vec();
    expected.push(now[242].0);
    assert_eq!(seen.ids(), expected, "the subscription's events");
    let tagged = store
        .query(&EventQuery::new().tag("writer:writer-0").limit(100))
        .await
        .expect("query by tag");
    assert_eq!(tagged.events.len(), 42);
    assert_eq!(
        tagged.events.last().map(|event| event.event_id),
        now.last().map(|(id, _)| *id)
    );
    let versions: Vec<u64> = tagged.events.iter().map(|event| event.version).collect();
    assert_eq!(versions, (1..=42).collect::<Vec<_>>());
    assert!(store.verify_log().await.expect("verify").is_intact());

    // Once is enough: a second run finds the log this cluster's.
    let (_, again) = PostgresEventStore::builder(new.url())
        .schema(SCHEMA)
        .restamp_restored_log()
        .await
        .expect("re-stamp again");
    assert_eq!(again.events, 0, "{again:?}");
}

/// Makes the log step back in position once: a transaction takes its id,
/// another appends to `other` and commits, then the first writes an event
/// on new stream `stream` (the row an append writes, its link made by the
/// same functions) and commits.
async fn step_back(server: &OwnPostgres, store: &PostgresEventStore, stream: &str, other: &str) {
    let mut early = sqlx::PgConnection::connect(&server.url())
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut early)
        .await
        .expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO {SCHEMA}"
    )))
    .execute(&mut early)
    .await
    .expect("search path");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut early)
        .await
        .expect("take an id");
    append(store, other, 0).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO annals_events (position, transaction_id, event_id, stream_id, version, \
             event_type, schema_version, payload, headers, recorded_at, hash, chain_key) \
         OVERRIDING SYSTEM VALUE \
         SELECT n.position, n.transaction_id, n.event_id, n.stream_id, 1, n.event_type, 1, n.payload, \
                '{{}}'::jsonb, n.recorded_at, \
                annals_keyed_chain('\\x{genesis}'::bytea, annals_event_link_digest( \
                    n.event_id, n.stream_id, 1, n.event_type, 1, n.payload::text, NULL, NULL, NULL, \
                    NULL, NULL, '{{}}', n.recorded_at, n.position, n.transaction_id::text::int8), \
                    NULL::bytea, NULL::bytea) OVER (), \
                0::int2 \
         FROM (SELECT nextval('annals_events_position_seq') AS position, \
                      pg_current_xact_id() AS transaction_id, gen_random_uuid() AS event_id, \
                      '{stream}' AS stream_id, 'restore.late' AS event_type, \
                      '{{\"late\": true}}'::jsonb AS payload, now() AS recorded_at) AS n",
        genesis = "0".repeat(64)
    )))
    .execute(&mut early)
    .await
    .expect("write the late event");
    sqlx::query("COMMIT")
        .execute(&mut early)
        .await
        .expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_fewer_ids_than_the_log_needs_advances_its_counter_first() {
    let old = OwnPostgres::start().await;
    let source = PostgresEventStore::builder(old.url())
        .schema(SCHEMA)
        .connect()
        .await
        .expect("the old cluster's store");
    // More steps back than a fresh cluster has handed out ids (about a
    // thousand after initdb and a restore).
    for n in 0..1_500 {
        step_back(&old, &source, &format!("late-{n}"), "writer").await;
    }
    old.use_transaction_ids(20_000);
    let before = log(&source).await;
    drop(source);
    let new = OwnPostgres::start().await;
    old.dump_schema_into(&new, SCHEMA);
    let (store, report) = PostgresEventStore::builder(new.url())
        .schema(SCHEMA)
        .restamp_restored_log()
        .await
        .expect("re-stamp");
    assert_eq!(report.events, 3_000, "{report:?}");
    assert!(report.commits >= 1_500, "{report:?}");
    assert!(report.ids_advanced > 0, "{report:?}");
    let after = log(&store).await;
    assert_eq!(
        after.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        before.iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    assert!(store.verify_log().await.expect("verify").is_intact());
}
