//! Subscriptions against every backend.

mod memory {
    annals_tests::subscription_suite!(memory);
}

mod sqlite {
    annals_tests::subscription_suite!(sqlite);
}

mod postgres {
    annals_tests::subscription_suite!(postgres);
}

/// A checkpoint that cannot be loaded at start-up (here: the application
/// role lacks SELECT on the checkpoints table for a moment) is retried with
/// backoff and shown in the status; the subscription starts once it loads
/// (it used to end for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_is_retried_and_shown_in_the_status() {
    use annals::prelude::*;
    use annals::subscription::{EventSink, Subscription};
    use annals_tests::backends::{application_role_store, fresh_postgres_store};

    #[derive(Default)]
    struct Count(usize);
    #[annals::async_trait]
    impl EventSink for Count {
        async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
            self.0 += 1;
            Ok(())
        }
    }

    let owner = fresh_postgres_store().await;
    let app = application_role_store(&owner).await;
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(app.pool())
        .await
        .expect("role");
    let revoke = format!("REVOKE SELECT ON annals_checkpoints FROM {role}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(revoke))
        .execute(owner.pool())
        .await
        .expect("revoke");
    let acme = std::sync::Arc::new(app.for_tenant("acme").await.expect("handle"));
    acme.append(
        &StreamId::new("user-1").expect("stream"),
        ExpectedVersion::NoStream,
        vec![NewEvent::json("test.started", &serde_json::json!({})).expect("event")],
    )
    .await
    .expect("append");

    let handle = Subscription::new(acme, "late")
        .lease(annals::checkpoint::LeaseSettings::new(
            std::time::Duration::from_millis(500),
        ))
        .retry_delay(std::time::Duration::from_millis(20))
        .poll_interval(std::time::Duration::from_millis(20))
        .start(Count::default());
    let failing = handle
        .wait_until(std::time::Duration::from_secs(30), |status| {
            status.last_error.is_some()
        })
        .await
        .expect("the failure shows");
    let error = failing.last_error.unwrap_or_default();
    assert!(
        error.contains("cannot take the lease") && error.contains("permission denied"),
        "{error}"
    );
    let grant = format!("GRANT SELECT ON annals_checkpoints TO {role}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(grant))
        .execute(owner.pool())
        .await
        .expect("grant");
    let running = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        handle.wait_until(std::time::Duration::from_secs(30), |status| {
            status.delivered == 1 && status.last_error.is_none()
        }),
    )
    .await
    .expect("started in time")
    .expect("status");
    assert!(running.caught_up || running.delivered == 1);
    assert_eq!(handle.stop().await.expect("stop").0, 1);
}

/// The LISTEN connection that wakes readers is the store's own, not one of
/// its pool's: with a pool of two, both stay free for statements while a
/// subscription listens (the listener used to keep one for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_holds_no_pool_connection() {
    use annals::prelude::*;
    use annals::store::PostgresEventStore;
    use annals::subscription::{EventSink, Subscription};
    use annals_tests::backends::postgres_url;

    struct Ignore;
    #[annals::async_trait]
    impl EventSink for Ignore {
        async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
            Ok(())
        }
    }

    let store = PostgresEventStore::builder(postgres_url())
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .max_connections(2)
        .connect()
        .await
        .expect("connect");
    let handle = Subscription::new(std::sync::Arc::new(store.clone()), "listening")
        .poll_interval(std::time::Duration::from_secs(5))
        .start(Ignore);
    handle
        .wait_until(std::time::Duration::from_secs(30), |status| {
            status.caught_up
        })
        .await
        .expect("caught up");
    // Let the reader reach its wait (and so start listening).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let both = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        let first = store.pool().acquire().await.expect("first");
        let second = store.pool().acquire().await.expect("second");
        (first, second)
    })
    .await;
    assert!(both.is_ok(), "a pool connection is held by the listener");
    drop(both);
    handle.stop().await.expect("stop");
}

/// An append that lands after a reader's empty read and before its wait
/// still wakes it, on every backend (PostgreSQL: appended through another
/// pool, so the signal comes by NOTIFY). The old `wait_for_events` could
/// only be called after the read, and such an append was lost until the
/// poll interval ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_between_an_empty_read_and_the_wait_wakes_the_reader() {
    use std::time::{Duration, Instant};

    use annals::prelude::*;
    use annals::store::PostgresEventStore;
    use annals_tests::backends::{TestStore, postgres_url};

    let postgres = TestStore::postgres().await;
    let schema: String = match &postgres.raw {
        annals_tests::backends::RawAccess::Postgres(pool) => {
            sqlx::query_scalar("SELECT current_schema()::text")
                .fetch_one(pool)
                .await
                .expect("schema")
        }
        _ => unreachable!("a PostgreSQL store"),
    };
    let other_pool = PostgresEventStore::builder(postgres_url())
        .schema(schema)
        .migrate(false)
        .connect()
        .await
        .expect("a second pool");
    let memory = TestStore::memory().await;
    let sqlite = TestStore::sqlite().await;
    let cases: [(&str, &TestStore, &dyn EventStore); 3] = [
        ("memory", &memory, memory.store.as_ref()),
        ("sqlite", &sqlite, sqlite.store.as_ref()),
        ("postgres", &postgres, &other_pool),
    ];
    for (backend, reader, writer) in cases {
        let mut watch = reader.store.watch_log().await;
        watch.mark_seen();
        assert!(
            reader
                .store
                .read_all(LogPosition::START, 10)
                .await
                .expect("read")
                .is_empty()
        );
        let event = NewEvent::json("test.woken", &serde_json::json!({})).expect("event");
        writer
            .append(
                &StreamId::new("woken-1").expect("id"),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .expect("append");
        let started = Instant::now();
        assert!(
            watch.changed(Duration::from_secs(20)).await,
            "{backend}: the append was lost"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{backend}");
    }
}

/// Every runner (a subscription, a projection, a replay) returns the same
/// handle: a wait for a status the task never reaches ends, once the task
/// stops, with `Error::TaskStopped` naming the runner (it used to be a
/// `Backend` error labelled with the runner's kind), and `stop`/`finish`
/// return the task's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runner_speaks_the_task_handle_vocabulary() {
    use annals::prelude::*;
    use annals::projection::ProjectionRunner;
    use annals::projection::runner::InMemory;
    use annals::replay::{ReplayState, Replays};
    use annals::subscription::{EventSink, Subscription};
    use annals_tests::domain::{TenantCreated, TenantDirectory};
    use futures_util::StreamExt;
    use std::sync::Arc;
    use std::time::Duration;

    struct Count(usize);
    #[annals::async_trait]
    impl EventSink for Count {
        async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
            self.0 += 1;
            Ok(())
        }
    }

    let store = Arc::new(InMemoryEventStore::new());
    store
        .append(
            &StreamId::new("tenant-1").expect("stream"),
            ExpectedVersion::NoStream,
            vec![
                NewEvent::from_event(&TenantCreated {
                    name: "Acme".into(),
                })
                .expect("event"),
            ],
        )
        .await
        .expect("append");
    let never = Duration::from_secs(30);

    let subscription = Subscription::new(store.clone(), "counter").start(Count(0));
    assert_eq!(subscription.name(), "counter");
    subscription
        .wait_until(std::time::Duration::from_secs(30), |status| {
            status.delivered == 1
        })
        .await
        .expect("delivered");
    subscription.request_stop();
    let stopped = tokio::time::timeout(
        never,
        subscription.wait_until(std::time::Duration::from_secs(30), |_| false),
    )
    .await
    .expect("the wait ends when the task does");
    assert!(
        matches!(&stopped, Err(Error::TaskStopped { task: "subscription", name }) if name == "counter"),
        "{stopped:?}"
    );
    assert_eq!(subscription.stop().await.expect("the sink").0, 1);

    let projection =
        ProjectionRunner::new(store.clone(), InMemory).start(TenantDirectory::default());
    projection
        .wait_until(std::time::Duration::from_secs(30), |status| {
            status.applied == 1
        })
        .await
        .expect("caught up");
    assert_eq!(projection.read().await.names.len(), 1);
    projection.request_stop();
    let stopped = tokio::time::timeout(
        never,
        projection.wait_until(std::time::Duration::from_secs(30), |_| false),
    )
    .await
    .expect("the wait ends when the task does");
    assert!(
        matches!(&stopped, Err(Error::TaskStopped { task: "projection", name }) if name == "test_tenant_directory"),
        "{stopped:?}"
    );
    projection.stop().await.expect("stopped cleanly");

    let replay =
        Replays::new().project(store.clone(), TenantDirectory::default(), EventQuery::new());
    let id = replay.id();
    let updates: Vec<_> = replay.updates().collect().await;
    assert!(
        updates
            .last()
            .is_some_and(|progress| progress.is_finished()),
        "{updates:?}"
    );
    let after_end = replay
        .wait_until(std::time::Duration::from_secs(30), |_| false)
        .await;
    assert!(
        matches!(&after_end, Err(Error::TaskStopped { task: "replay", name }) if *name == id.to_string()),
        "{after_end:?}"
    );
    let (_, summary) = replay.finish().await.expect("the replay's output");
    assert_eq!(summary.state, ReplayState::Completed);
}

/// A runner whose task panics reports `Error::TaskFailed` naming it from
/// `stop`; a replay whose handle is dropped runs on to its end, and
/// `Replays::status` tells it (the task module's docs say both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_task_is_task_failed_and_a_dropped_replay_runs_on() {
    use annals::prelude::*;
    use annals::replay::{ReplayState, Replays};
    use annals::subscription::{EventSink, Subscription};
    use annals_tests::domain::{TenantCreated, TenantDirectory};
    use std::sync::Arc;
    use std::time::Duration;

    #[derive(Debug)]
    struct Panics;
    #[annals::async_trait]
    impl EventSink for Panics {
        async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
            panic!("the sink panicked");
        }
    }

    let store = Arc::new(InMemoryEventStore::new());
    store
        .append(
            &StreamId::new("tenant-1").expect("stream"),
            ExpectedVersion::NoStream,
            vec![
                NewEvent::from_event(&TenantCreated {
                    name: "Acme".into(),
                })
                .expect("event"),
            ],
        )
        .await
        .expect("append");

    let subscription = Subscription::new(store.clone(), "panicky").start(Panics);
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        subscription.wait_until(std::time::Duration::from_secs(30), |_| false),
    )
    .await
    .expect("the task ends when its sink panics");
    assert!(matches!(ended, Err(Error::TaskStopped { .. })), "{ended:?}");
    let stopped = subscription.stop().await;
    assert!(
        matches!(&stopped, Err(Error::TaskFailed { task: "subscription", name, .. }) if name == "panicky"),
        "{stopped:?}"
    );

    let replays = Replays::new();
    let handle = replays.project(store.clone(), TenantDirectory::default(), EventQuery::new());
    let id = handle.id();
    drop(handle);
    let finished = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(progress) = replays.status(id).filter(|p| p.is_finished()) {
                return progress;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the replay finishes without its handle");
    assert_eq!((finished.state, finished.done), (ReplayState::Completed, 1));
}

/// Read-your-writes: a command's position, waited for on a projection and a
/// subscription (an event of a type the projection ignores counts as read
/// past); a wait that runs out of time is `WaitTimedOut`, and the reader
/// runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_waited_for_up_to_a_position_within_a_timeout() {
    use annals::prelude::*;
    use annals::projection::ProjectionRunner;
    use annals::projection::runner::InMemory;
    use annals::subscription::{EventSink, Subscription};
    use annals_tests::domain::{TenantCreated, TenantDirectory};
    use std::sync::Arc;
    use std::time::Duration;

    struct Ignore;
    #[annals::async_trait]
    impl EventSink for Ignore {
        async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
            Ok(())
        }
    }

    let store = Arc::new(InMemoryEventStore::new());
    let projection =
        ProjectionRunner::new(store.clone(), InMemory).start(TenantDirectory::default());
    let subscription = Subscription::new(store.clone(), "ignore")
        .without_lease()
        .start(Ignore);
    let created = store
        .append(
            &StreamId::new("tenant-1").expect("stream"),
            ExpectedVersion::NoStream,
            vec![
                NewEvent::from_event(&TenantCreated {
                    name: "Acme".into(),
                })
                .expect("event"),
            ],
        )
        .await
        .expect("append");
    let unrelated = store
        .append(
            &StreamId::new("other-1").expect("stream"),
            ExpectedVersion::NoStream,
            vec![NewEvent::json("test.unrelated", &serde_json::json!({})).expect("event")],
        )
        .await
        .expect("append");

    let status = projection
        .wait_for_position(created.position, Duration::from_secs(30))
        .await
        .expect("the projection reaches the command's position");
    assert!(status.position >= created.position);
    assert_eq!(
        projection.read().await.names.len(),
        1,
        "its write is visible"
    );
    projection
        .wait_for_position(unrelated.position, Duration::from_secs(30))
        .await
        .expect("an ignored event is read past");
    subscription
        .wait_for_position(unrelated.position, Duration::from_secs(30))
        .await
        .expect("the subscription reaches it too");

    let beyond = LogPosition::new(
        unrelated.position.commit + 10,
        unrelated.position.sequence + 10,
    );
    let timed_out = projection
        .wait_for_position(beyond, Duration::from_millis(100))
        .await;
    assert!(
        matches!(&timed_out, Err(Error::WaitTimedOut { task: "projection", waited, .. }) if *waited == Duration::from_millis(100)),
        "{timed_out:?}"
    );
    assert!(!projection.is_finished(), "the projection runs on");
    projection.stop().await.expect("stopped cleanly");
    subscription.stop().await.expect("stopped cleanly");
}

/// A runner started outside a Tokio runtime does not panic: it does not
/// run, and its handle says why.
#[test]
fn a_runner_started_outside_a_runtime_says_so() {
    use annals::prelude::*;
    use annals::projection::ProjectionRunner;
    use annals::projection::runner::InMemory;
    use annals::subscription::{EventSink, Subscription};
    use annals_tests::domain::TenantDirectory;
    use std::sync::Arc;
    use std::time::Duration;

    struct Ignore;
    #[annals::async_trait]
    impl EventSink for Ignore {
        async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
            Ok(())
        }
    }

    let store = Arc::new(InMemoryEventStore::new());
    let projection =
        ProjectionRunner::new(store.clone(), InMemory).start(TenantDirectory::default());
    let subscription = Subscription::new(store, "outside")
        .without_lease()
        .start(Ignore);
    assert!(projection.is_finished() && subscription.is_finished());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the assertions");
    runtime.block_on(async {
        let waited = projection.wait_until(Duration::from_secs(1), |_| true).await;
        assert!(
            matches!(&waited, Err(Error::NoRuntime { task: "projection", .. })),
            "{waited:?}"
        );
        let stopped = subscription.stop().await;
        assert!(
            matches!(&stopped, Err(Error::NoRuntime { task: "subscription", name }) if name == "outside"),
            "{:?}",
            stopped.err()
        );
        let message = projection.stop().await.expect_err("never ran").to_string();
        assert!(message.contains("outside a Tokio runtime"), "{message}");
    });
}
