//! Reading the log from a streaming replica: a primary and a hot standby
//! of its own (`pg_basebackup -R`), writers on the primary, readers on the
//! standby.

use std::sync::Arc;
use std::time::Duration;

use annals::prelude::*;
use annals::store::{EventQuery, PostgresEventStore};
use annals::subscription::Subscription;
use annals_tests::backends::OwnPostgres;
use annals_tests::subscription::CollectedIds;
use serde_json::json;
use uuid::Uuid;

async fn connect(primary: &OwnPostgres, replica: &OwnPostgres, schema: &str) -> PostgresEventStore {
    let store = PostgresEventStore::builder(primary.url())
        .schema(schema)
        .read_replica(replica.url())
        .connect()
        .await
        .expect("connect with a read replica");
    store
        .wait_for_replica(Duration::from_secs(30))
        .await
        .expect("the replica has the schema");
    store
}

/// The primary alone, to read what the log holds there.
async fn primary_only(primary: &OwnPostgres, schema: &str) -> PostgresEventStore {
    PostgresEventStore::builder(primary.url())
        .schema(schema)
        .migrate(false)
        .connect()
        .await
        .expect("connect to the primary")
}

/// A transaction on the primary takes a transaction id and writes nothing
/// yet (so no WAL on the standby mentions it), while writers commit events
/// after it; the subscription reading on the standby must not pass over
/// the event that transaction then commits last. Every event arrives
/// once, in the log's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_on_the_replica_never_passes_over_a_late_commit() {
    let primary = OwnPostgres::start().await;
    let replica = primary.start_replica().await;
    let store = connect(&primary, &replica, "replica_gaps").await;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());

    let mut late = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *late)
        .await
        .expect("take a transaction id, writing nothing");

    let collected = CollectedIds::default();
    let reader = Subscription::new(shared.clone(), "replica-reader")
        .poll_interval(Duration::from_millis(20))
        .start(collected.clone());
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let store = shared.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    let event =
                        NewEvent::json("test.replica.written", &json!({ "n": n })).expect("event");
                    store
                        .append(
                            &StreamId::new(format!("writer-{writer}")).expect("id"),
                            ExpectedVersion::Any,
                            vec![event],
                        )
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    store
        .wait_for_replica(Duration::from_secs(30))
        .await
        .expect("the replica replayed the writers' commits");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        collected.ids().is_empty(),
        "the standby handed out events committed after a transaction that is still open"
    );

    let late_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO replica_gaps.annals_events (event_id, stream_id, version, event_type, schema_version, payload) \
         VALUES ($1, 'late-1', 1, 'test.replica.late', 1, '{}')",
    )
    .bind(late_id)
    .execute(&mut *late)
    .await
    .expect("the late insert");
    late.commit().await.expect("commit late");

    let expected: Vec<Uuid> = primary_only(&primary, "replica_gaps")
        .await
        .read_all(LogPosition::START, 1000)
        .await
        .expect("the log on the primary")
        .iter()
        .map(|event| event.event_id)
        .collect();
    assert_eq!(expected.len(), 151);
    assert_eq!(expected[0], late_id, "the late commit sorts first");
    reader
        .wait_until(Duration::from_secs(30), |status| status.delivered >= 151)
        .await
        .expect("the reader caught up on the replica");
    reader.stop().await.expect("stop");
    assert_eq!(
        collected.ids(),
        expected,
        "every event once, in the log's order"
    );
}

/// With replay paused on the standby, an append is not there yet:
/// `wait_for_replica` says so (typed, with the lag), a query on the
/// replica does not show it, a load on the primary (the default) does; once
/// replay resumes, `wait_for_replica` returns and the query shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_waits_for_the_replica() {
    let primary = OwnPostgres::start().await;
    let replica = primary.start_replica().await;
    let store = connect(&primary, &replica, "replica_ryw").await;
    let loads_there = PostgresEventStore::builder(primary.url())
        .schema("replica_ryw")
        .read_replica(replica.url())
        .load_from_replica(true)
        .migrate(false)
        .connect()
        .await
        .expect("connect loading from the replica");
    let standby = sqlx::PgPool::connect(&replica.url())
        .await
        .expect("standby");
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&standby)
        .await
        .expect("pause replay");

    let stream = StreamId::new("user-1").expect("id");
    let event = NewEvent::json("test.replica.registered", &json!({})).expect("event");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .expect("append");
    let error = store
        .wait_for_replica(Duration::from_millis(300))
        .await
        .expect_err("replay is paused");
    assert!(
        matches!(error, Error::ReplicaBehind { lag_bytes, .. } if lag_bytes > 0),
        "{error:?}"
    );
    let query = EventQuery::new().event_type("test.replica.registered");
    assert!(store.query(&query).await.expect("query").events.is_empty());
    // The log's readers read the replica too.
    assert!(
        store
            .read_all(LogPosition::START, 10)
            .await
            .expect("read")
            .is_empty()
    );
    let filter = annals::store::LogFilter::event_types(["test.replica.registered"]);
    let page = store
        .read_log(LogPosition::START, 10, &filter)
        .await
        .expect("read_log");
    assert!(page.events.is_empty());
    assert_eq!(
        store.read_stream(&stream, 1, 10).await.expect("load").len(),
        1
    );
    assert!(
        loads_there
            .read_stream(&stream, 1, 10)
            .await
            .expect("load")
            .is_empty()
    );
    assert!(store.replica_lag_bytes().await.expect("lag").unwrap_or(0) > 0);

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&standby)
        .await
        .expect("resume replay");
    store
        .wait_for_replica(Duration::from_secs(30))
        .await
        .expect("caught up");
    assert_eq!(store.query(&query).await.expect("query").events.len(), 1);
    assert_eq!(
        loads_there
            .read_stream(&stream, 1, 10)
            .await
            .expect("load")
            .len(),
        1
    );
}

/// A "replica" that is not a standby, or is reached as another role, is
/// refused at connect, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_not_one_is_refused() {
    let primary = OwnPostgres::start().await;
    let error = PostgresEventStore::builder(primary.url())
        .schema("replica_refused")
        .read_replica(primary.url())
        .connect()
        .await
        .expect_err("the primary is no standby");
    assert!(error.to_string().contains("not a hot standby"), "{error}");

    let replica = primary.start_replica().await;
    let dba = sqlx::PgPool::connect(&primary.url())
        .await
        .expect("primary");
    sqlx::query("CREATE ROLE someone_else LOGIN SUPERUSER")
        .execute(&dba)
        .await
        .expect("another role");
    let other_role = replica.url().replacen("annals@", "someone_else@", 1);
    // The role reaches the standby once it has replayed its creation.
    let mut refused = None;
    for _ in 0..100 {
        match PostgresEventStore::builder(primary.url())
            .schema("replica_refused")
            .read_replica(other_role.clone())
            .connect()
            .await
        {
            Err(error)
                if error.to_string().contains("role")
                    && error.to_string().contains("someone_else") =>
            {
                refused = Some(error);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(refused.is_some(), "another role is refused");

    // A standby of another cluster: a replica, but not of this primary.
    let elsewhere = OwnPostgres::start().await;
    let its_standby = elsewhere.start_replica().await;
    let error = PostgresEventStore::builder(primary.url())
        .schema("replica_refused")
        .read_replica(its_standby.url())
        .connect()
        .await
        .expect_err("another cluster's standby");
    assert!(error.to_string().contains("another cluster"), "{error}");
}
