//! PostgreSQL crashes and comes back while a subscription and a SQL
//! projection are live: both resume, nothing is lost, nothing is doubled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::error::BoxError;
use annals::prelude::*;
use annals::projection::runner::{PostgresReadModel, ProjectionRunner, ProjectionState};
use annals::subscription::{EventSink, Subscription};
use annals_tests::backends::OwnPostgres;
use annals_tests::domain::{FlakyPostgresRoleCounts, UserEvent};
use uuid::Uuid;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Uuid>>>);

#[annals::async_trait]
impl EventSink for Seen {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.0.lock().map_err(|_| "poisoned")?.push(event.event_id);
        Ok(())
    }
}

/// Appends, retrying while the server is coming back.
async fn append_role(store: &PostgresEventStore, n: usize) -> Uuid {
    let stream = StreamId::new(format!("user-r{n}")).expect("stream id");
    let event = NewEvent::from_event(&UserEvent::RoleAssigned {
        role: if n.is_multiple_of(2) {
            "admin"
        } else {
            "auditor"
        }
        .into(),
    })
    .expect("encode");
    let id = event.event_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store
            .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
            .await
        {
            Ok(_) => return id,
            // A retry after a lost response may find the event stored.
            Err(Error::VersionConflict { .. }) => return id,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "appends did not recover: {error:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_readers_survive_a_postgres_crash_and_restart() {
    let server = OwnPostgres::start().await;
    let store = PostgresEventStore::builder(server.url())
        .max_connections(6)
        .connect()
        .await
        .expect("connect");
    sqlx::query("CREATE TABLE role_counts (role text PRIMARY KEY, users bigint NOT NULL)")
        .execute(store.pool())
        .await
        .expect("table");
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let seen = Seen::default();
    let subscription = Subscription::new(shared.clone(), "restart")
        .poll_interval(Duration::from_millis(100))
        .retry_delay(Duration::from_millis(100))
        .start(seen.clone());
    let projection =
        ProjectionRunner::new(shared.clone(), PostgresReadModel::new(store.pool().clone()))
            .poll_interval(Duration::from_millis(100))
            .retry_delay(Duration::from_millis(100))
            .start(FlakyPostgresRoleCounts::default());

    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(append_role(&store, n).await);
    }
    subscription
        .wait_until(std::time::Duration::from_secs(30), |s| {
            s.delivered >= 20 && s.caught_up
        })
        .await
        .expect("first half delivered");
    projection
        .wait_until(std::time::Duration::from_secs(30), |s| {
            s.applied >= 20 && s.state == ProjectionState::Running
        })
        .await
        .expect("first half projected");

    server.crash();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
    for n in 20..40 {
        ids.push(append_role(&store, n).await);
    }

    tokio::time::timeout(
        Duration::from_secs(60),
        subscription.wait_until(std::time::Duration::from_secs(30), |s| {
            s.delivered >= 40 && s.caught_up
        }),
    )
    .await
    .expect("the subscription resumed")
    .expect("running");
    tokio::time::timeout(
        Duration::from_secs(60),
        projection.wait_until(std::time::Duration::from_secs(30), |s| {
            s.applied >= 40 && s.state == ProjectionState::Running
        }),
    )
    .await
    .expect("the projection resumed")
    .expect("running");
    subscription.stop().await.expect("stop");
    projection.stop().await.expect("stop");

    let delivered = seen.0.lock().expect("lock").clone();
    assert_eq!(delivered, ids, "every event once, in order");
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(store.pool())
            .await
            .expect("counts");
    assert_eq!(counts, [("admin".into(), 20), ("auditor".into(), 20)]);
}
