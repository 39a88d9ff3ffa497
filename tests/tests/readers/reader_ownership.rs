//! One owner per reader (issue 15): several instances of one subscription
//! or SQL projection deliver each event once between them, the standbys
//! show who owns the reader, a worker that lost its lease cannot commit,
//! and two deployments in two schemas of one database both run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::checkpoint::{CheckpointStore, LeaseSettings};
use annals::prelude::*;
use annals::projection::runner::{
    Batch, PostgresReadModel, ProjectionRunner, ProjectionState, ProjectionTarget, SqliteReadModel,
};
use annals::projection::sql_read_model::SqlConnection;
use annals::store::PostgresEventStore;
use annals::subscription::{EventSink, Subscription, SubscriptionHandle, TransactionalSink};
use annals_tests::backends::{TestStore, fresh_postgres_store};
use annals_tests::domain::{FlakyPostgresRoleCounts, RoleCounts, UserEvent};

const LEASE: Duration = Duration::from_secs(1);

/// Counts deliveries per event, across every instance.
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<HashMap<uuid::Uuid, u32>>>);

impl Deliveries {
    fn snapshot(&self) -> HashMap<uuid::Uuid, u32> {
        self.0.lock().expect("deliveries").clone()
    }
}

#[annals::async_trait]
impl EventSink for Deliveries {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
        *self
            .0
            .lock()
            .map_err(|_| "poisoned")?
            .entry(event.event_id)
            .or_default() += 1;
        Ok(())
    }
}

async fn assign_roles(store: &dyn EventStore, prefix: &str, count: usize) {
    for n in 0..count {
        let role = ["admin", "auditor", "viewer"][n % 3];
        let event =
            NewEvent::from_event(&UserEvent::RoleAssigned { role: role.into() }).expect("encode");
        let stream = StreamId::new(format!("user-{prefix}-{n}")).expect("stream id");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .expect("append");
    }
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first `count` events of the log, once all are visible (a gap-safe
/// read holds back events behind transactions still in flight, other
/// tests' included).
async fn read_log(store: &dyn EventStore, count: usize) -> Vec<RecordedEvent> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let events = store
            .read_all(LogPosition::START, count)
            .await
            .expect("read");
        if events.len() == count {
            return events;
        }
        assert!(
            Instant::now() < until,
            "{count} events never became visible"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn instance(
    store: &Arc<dyn EventStore>,
    n: usize,
    sink: &Deliveries,
) -> SubscriptionHandle<Deliveries> {
    Subscription::new(store.clone(), "mailer")
        .poll_interval(Duration::from_millis(20))
        .lease(LeaseSettings::new(LEASE))
        .worker_name(format!("instance-{n}"))
        .start(sink.clone())
}

/// Three instances of one subscription on one PostgreSQL store: each event
/// is delivered once between them (before, every instance delivered every
/// event); the standbys name the owner; when the owner stops, a standby
/// takes over from its checkpoint and still nothing is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_run_by_several_instances_delivers_each_event_once() {
    let t = TestStore::postgres().await;
    let sink = Deliveries::default();
    let mut handles: Vec<_> = (0..3).map(|n| instance(&t.store, n, &sink)).collect();
    assign_roles(&*t.store, "a", 30).await;
    wait_for("30 deliveries", Duration::from_secs(20), || {
        sink.snapshot().len() == 30
    })
    .await;
    // Time for a second owner, if there were one, to deliver again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = sink.snapshot();
    assert!(
        counts.values().all(|&n| n == 1),
        "every event once, got {:?}",
        counts.values().collect::<Vec<_>>()
    );

    let statuses: Vec<_> = handles.iter().map(|h| h.status()).collect();
    let owners: Vec<_> = statuses
        .iter()
        .filter_map(|s| s.ownership.as_ref())
        .filter(|o| o.held)
        .collect();
    assert_eq!(owners.len(), 1, "one owner: {statuses:#?}");
    let owner = owners[0].clone();
    assert!(owner.generation >= 1 && owner.renewed_at.is_some() && owner.expires_at.is_some());
    for status in &statuses {
        let ownership = status.ownership.as_ref().expect("owned reader");
        if !ownership.held {
            assert_eq!(
                ownership.owner, owner.owner,
                "a standby names the owner: {status:#?}"
            );
            assert_eq!(status.delivered, 0, "a standby delivers nothing");
        }
    }

    // The owner stops (releasing its lease): a standby takes over.
    let index = statuses
        .iter()
        .position(|s| s.ownership.as_ref().is_some_and(|o| o.held))
        .expect("owner");
    handles.remove(index).stop().await.expect("stop the owner");
    assign_roles(&*t.store, "b", 20).await;
    wait_for("50 deliveries", Duration::from_secs(20), || {
        sink.snapshot().len() == 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.snapshot().values().all(|&n| n == 1));
    let new_owner = handles
        .iter()
        .filter_map(|h| h.status().ownership)
        .find(|o| o.held)
        .expect("a standby took over");
    assert!(new_owner.generation > owner.generation);
    for handle in handles {
        handle.stop().await.expect("stop");
    }
}

/// A worker whose lease was taken over (it stalled past the expiry) cannot
/// commit a read-model batch: the batch's writes and its checkpoint are
/// refused together, on both SQL read models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_commits_nothing() {
    let name = ProjectionRunner::<PostgresReadModel>::checkpoint_name::<FlakyPostgresRoleCounts>();

    let t = TestStore::postgres().await;
    let pool = match &t.raw {
        annals_tests::backends::RawAccess::Postgres(pool) => pool.clone(),
        _ => unreachable!("a PostgreSQL test store"),
    };
    sqlx::query("CREATE TABLE role_counts (role text PRIMARY KEY, users bigint NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    assign_roles(&*t.store, "f", 4).await;
    let events = read_log(&*t.store, 4).await;
    let target = PostgresReadModel::new(pool.clone());
    let checkpoints = ProjectionTarget::<FlakyPostgresRoleCounts>::checkpoints(&target)
        .expect("a SQL read model keeps its checkpoint");
    let stalled = checkpoints
        .acquire(&name, "stalled", Duration::from_millis(200))
        .await
        .expect("acquire")
        .expect("free");
    let mut projection = FlakyPostgresRoleCounts::default();
    let first = Batch {
        events: &events[..2],
        previous: LogPosition::START,
        next: events[1].position,
        lease: Some(&stalled),
    };
    target
        .apply(&mut projection, first)
        .await
        .expect("the owner commits");

    // It stalls past its lease; another worker takes over.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let successor = checkpoints
        .acquire(&name, "successor", Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("the expired lease is taken over");
    let late = Batch {
        events: &events[2..],
        previous: events[1].position,
        next: events[3].position,
        lease: Some(&stalled),
    };
    let refused = target
        .apply(&mut projection, late)
        .await
        .expect_err("a late batch is refused");
    assert!(
        matches!(refused.error, Error::LeaseLost { generation, current_generation, .. }
            if generation == stalled.generation && current_generation == Some(successor.generation)),
        "{:?}",
        refused.error
    );
    assert_eq!(refused.applied, 0);
    let total: i64 = sqlx::query_scalar("SELECT COALESCE(sum(users), 0)::bigint FROM role_counts")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(total, 2, "the late batch's writes were rolled back");
    assert_eq!(
        checkpoints
            .load(&name)
            .await
            .expect("load")
            .map(|c| c.position),
        Some(events[1].position)
    );

    // The same on SQLite.
    let t = TestStore::sqlite().await;
    let annals_tests::backends::RawAccess::Sqlite(sqlite) = &t.raw else {
        unreachable!("a SQLite test store")
    };
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(sqlite)
        .await
        .expect("table");
    assign_roles(&*t.store, "s", 2).await;
    let events = read_log(&*t.store, 2).await;
    let target = SqliteReadModel::new(sqlite.clone());
    let name = ProjectionRunner::<SqliteReadModel>::checkpoint_name::<RoleCounts>();
    let checkpoints: Arc<dyn CheckpointStore> =
        ProjectionTarget::<RoleCounts>::checkpoints(&target).expect("checkpoints");
    let stalled = checkpoints
        .acquire(&name, "stalled", Duration::from_millis(100))
        .await
        .expect("acquire")
        .expect("free");
    tokio::time::sleep(Duration::from_millis(250)).await;
    checkpoints
        .acquire(&name, "successor", Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("taken over");
    let late = Batch {
        events: &events,
        previous: LogPosition::START,
        next: events[1].position,
        lease: Some(&stalled),
    };
    let refused = target
        .apply(&mut RoleCounts, late)
        .await
        .expect_err("refused");
    assert!(matches!(refused.error, Error::LeaseLost { .. }));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM role_counts")
        .fetch_one(sqlite)
        .await
        .expect("count");
    assert_eq!(rows, 0, "nothing of the late batch stayed");
}

/// Two deployments of one service in two schemas of one database run the
/// same projection: both own their own lease and build their own read
/// model (before, the lease was keyed by the projection's name alone and
/// one stayed in standby with an empty read model). Two runners in one
/// schema share one: the second stands by and names the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_in_two_schemas_both_run() {
    let mut deployments = Vec::new();
    for (n, events) in [(0, 6), (1, 9)] {
        let store = fresh_postgres_store().await;
        sqlx::query("CREATE TABLE role_counts (role text PRIMARY KEY, users bigint NOT NULL)")
            .execute(store.pool())
            .await
            .expect("table");
        assign_roles(&store, "d", events).await;
        let model = PostgresReadModel::for_store(&store);
        let store: Arc<dyn EventStore> = Arc::new(store);
        let running = ProjectionRunner::new(store.clone(), model.clone())
            .poll_interval(Duration::from_millis(20))
            .lease(LeaseSettings::new(LEASE))
            .worker_name(format!("deployment-{n}"))
            .start(FlakyPostgresRoleCounts::default());
        deployments.push((store, model, running, events));
    }
    for (_, model, running, events) in &deployments {
        let status = tokio::time::timeout(
            Duration::from_secs(20),
            running.wait_until(std::time::Duration::from_secs(30), |s| {
                s.state == ProjectionState::Running
            }),
        )
        .await
        .expect("each deployment runs")
        .expect("status");
        assert!(status.ownership.as_ref().is_some_and(|o| o.held));
        // Running is not caught up: other tests' open transactions on the
        // shared server can hold the log's horizon back for a while.
        let mut total = 0_i64;
        for _ in 0..400 {
            total = sqlx::query_scalar("SELECT COALESCE(sum(users), 0)::bigint FROM role_counts")
                .fetch_one(model.pool())
                .await
                .expect("count");
            if total == *events as i64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            total, *events as i64,
            "each deployment built its own read model"
        );
    }

    // A second runner in the first deployment's schema stands by.
    let (store, model, first, _) = deployments.remove(0);
    let second = ProjectionRunner::new(store, model)
        .poll_interval(Duration::from_millis(20))
        .lease(LeaseSettings::new(LEASE))
        .worker_name("deployment-0-b")
        .start(FlakyPostgresRoleCounts::default());
    let standby = tokio::time::timeout(
        Duration::from_secs(20),
        second.wait_until(std::time::Duration::from_secs(30), |s| {
            s.ownership.is_some()
        }),
    )
    .await
    .expect("standing by")
    .expect("status");
    assert_eq!(standby.state, ProjectionState::Standby);
    let ownership = standby.ownership.expect("ownership");
    assert!(!ownership.held);
    assert_eq!(ownership.owner.as_deref(), Some("deployment-0"));
    assert_eq!(standby.applied, 0);
    first.stop().await.expect("stop");
    second.stop().await.expect("stop");
    for (_, _, running, _) in deployments {
        running.stop().await.expect("stop");
    }
}

/// Counts each event into `effects` inside the subscription's transaction;
/// fails once, after writing, on its `fail_on`th event.
struct CountEffects {
    seen: u64,
    fail_on: Option<u64>,
}

#[annals::async_trait]
impl TransactionalSink for CountEffects {
    async fn handle(
        &mut self,
        event: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> Result<(), annals::error::BoxError> {
        db.execute(
            "INSERT INTO effects (event_id) VALUES ($1)",
            &[event.event_id.into()],
        )
        .await?;
        self.seen += 1;
        if self.fail_on == Some(self.seen) {
            self.fail_on = None;
            return Err("injected failure after the write".into());
        }
        Ok(())
    }
}

/// A transactional subscription run by two instances: each event's effect
/// is written exactly once, a batch that fails after writing leaves none of
/// its effects behind, and the checkpoint lives in the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_subscription_takes_effect_once_per_event() {
    let store = fresh_postgres_store().await;
    sqlx::query("CREATE TABLE effects (event_id uuid NOT NULL)")
        .execute(store.pool())
        .await
        .expect("table");
    let target = PostgresReadModel::for_store(&store);
    let pool = store.pool().clone();
    let store: Arc<dyn EventStore> = Arc::new(store);
    let handles: Vec<_> = (0..2)
        .map(|n| {
            Subscription::new(store.clone(), "effects")
                .poll_interval(Duration::from_millis(20))
                .retry_delay(Duration::from_millis(20))
                .batch_size(7)
                .lease(LeaseSettings::new(LEASE))
                .worker_name(format!("instance-{n}"))
                .start_transactional(
                    target.clone(),
                    CountEffects {
                        seen: 0,
                        fail_on: Some(5),
                    },
                )
        })
        .collect();
    assign_roles(&*store, "t", 40).await;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (rows, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM effects")
                .fetch_one(&pool)
                .await
                .expect("count");
        assert_eq!(rows, distinct, "an effect written twice");
        if rows == 40 {
            break;
        }
        assert!(Instant::now() < until, "only {rows} of 40 effects");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let statuses: Vec<_> = handles.iter().map(|h| h.status()).collect();
    let owner = statuses
        .iter()
        .find(|s| s.ownership.as_ref().is_some_and(|o| o.held))
        .expect("an owner");
    assert!(
        owner.delivered > 40,
        "the failed batch was offered again: {owner:?}"
    );
    let checkpoint = store
        .load_checkpoint("effects")
        .await
        .expect("load")
        .expect("saved with the effects");
    let last = read_log(&*store, 40).await.pop().expect("events");
    assert_eq!(checkpoint, last.position);
    for handle in handles {
        handle.stop().await.expect("stop");
    }
}

/// The lease protocol keeps no session state, so it holds through a
/// transaction-mode pooler: three instances, each with its own pool through
/// one PgBouncer whose clients share a single server connection, contend
/// for a reader's lease; each owner's writes are fenced as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_hold_through_a_transaction_mode_pooler() {
    use annals_tests::backends::OwnPgBouncer;

    let owner = fresh_postgres_store().await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(owner.pool())
        .await
        .expect("schema");
    let role = format!(
        "pooled_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN SUPERUSER; ALTER ROLE {role} SET search_path = {schema}"
    )))
    .execute(owner.pool())
    .await
    .expect("a role for the pooler");
    let bouncer = OwnPgBouncer::start(&role, 1).await;
    let mut instances = Vec::new();
    for _ in 0..3 {
        let store = PostgresEventStore::builder(bouncer.url())
            .migrate(false)
            .max_connections(2)
            .connect()
            .await
            .expect("connect through the pooler");
        instances.push(store.checkpoints());
    }
    let ttl = Duration::from_secs(30);

    let a = instances[0]
        .acquire("pooled", "a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    for other in &instances[1..] {
        assert!(
            other
                .acquire("pooled", "b", ttl)
                .await
                .expect("acquire")
                .is_none()
        );
    }
    instances[0]
        .commit(&a, LogPosition::START, LogPosition::new(1, 1))
        .await
        .expect("commit");
    assert!(instances[0].renew(&a, ttl).await.expect("renew").is_some());
    instances[0].release(&a).await.expect("release");
    let b = instances[1]
        .acquire("pooled", "b", ttl)
        .await
        .expect("acquire")
        .expect("released");
    assert_eq!(
        (b.generation, b.position),
        (a.generation + 1, LogPosition::new(1, 1))
    );
    assert!(matches!(
        instances[0]
            .commit(&a, LogPosition::new(1, 1), LogPosition::new(2, 2))
            .await,
        Err(Error::LeaseLost { .. })
    ));
    instances[1].release(&b).await.expect("release");

    // Contention: each instance takes the lease, moves the checkpoint one
    // step and gives it up, 20 times; every step lands exactly once.
    let steps = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (n, checkpoints) in instances.iter().enumerate() {
        let checkpoints = Arc::clone(checkpoints);
        let steps = Arc::clone(&steps);
        tasks.push(tokio::spawn(async move {
            let worker = format!("instance-{n}");
            let mut done = 0;
            while done < 20 {
                let Some(lease) = checkpoints
                    .acquire("contended", &worker, Duration::from_secs(30))
                    .await
                    .expect("acquire")
                else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                let next = LogPosition::new(lease.position.commit + 1, lease.position.sequence + 1);
                checkpoints
                    .commit(&lease, lease.position, next)
                    .await
                    .expect("the owner's step");
                checkpoints.release(&lease).await.expect("release");
                steps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                done += 1;
            }
        }));
    }
    for task in tasks {
        task.await.expect("instance");
    }
    let row = instances[2]
        .load("contended")
        .await
        .expect("load")
        .expect("row");
    assert_eq!(row.position, LogPosition::new(60, 60));
    assert_eq!(row.generation, 60);
    let servers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
            .bind(&role)
            .fetch_one(owner.pool())
            .await
            .expect("server connections");
    assert!(
        servers <= 1,
        "every instance ran on one server connection: {servers}"
    );
}

/// Writes one row, then stalls longer than its lease inside the batch's
/// transaction (as a paused worker would).
struct StallingSink;

#[annals::async_trait]
impl TransactionalSink for StallingSink {
    async fn handle(
        &mut self,
        event: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> Result<(), annals::error::BoxError> {
        db.execute(
            "INSERT INTO effects (event_id) VALUES ($1)",
            &[event.event_id.into()],
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok(())
    }
}

/// On PostgreSQL a batch left idle inside its transaction for longer than
/// its lease is ended by the server: it commits nothing and holds no locks
/// over the worker that takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_idle_past_its_lease_is_ended_by_the_server() {
    use annals::projection::runner::TransactionalTarget;

    let store = fresh_postgres_store().await;
    sqlx::query("CREATE TABLE effects (event_id uuid NOT NULL)")
        .execute(store.pool())
        .await
        .expect("table");
    assign_roles(&store, "i", 1).await;
    let events = read_log(&store, 1).await;
    let target = PostgresReadModel::for_store(&store);
    let checkpoints = TransactionalTarget::checkpoints(&target);
    let lease = checkpoints
        .acquire("stalling", "stalled", Duration::from_secs(1))
        .await
        .expect("acquire")
        .expect("free");
    let batch = Batch {
        events: &events,
        previous: LogPosition::START,
        next: events[0].position,
        lease: Some(&lease),
    };
    let failed = target
        .deliver(&mut StallingSink, batch)
        .await
        .expect_err("the server ends the stalled batch");
    assert_eq!(failed.applied, 0);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(rows, 0, "nothing of the stalled batch was committed");
    assert_eq!(
        store.load_checkpoint("stalling").await.expect("load"),
        Some(LogPosition::START)
    );
}

/// A subscription run without a lease delivers in every instance: two of
/// them, each under its own name, both see every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_without_a_lease_deliver_in_every_instance() {
    let t = TestStore::postgres().await;
    let sinks = [Deliveries::default(), Deliveries::default()];
    let handles: Vec<_> = sinks
        .iter()
        .enumerate()
        .map(|(n, sink)| {
            Subscription::new(t.store.clone(), format!("cache-drop-{n}"))
                .poll_interval(Duration::from_millis(20))
                .without_lease()
                .start(sink.clone())
        })
        .collect();
    assign_roles(&*t.store, "w", 10).await;
    for sink in &sinks {
        wait_for(
            "every event in each instance",
            Duration::from_secs(20),
            || sink.snapshot().len() == 10,
        )
        .await;
    }
    for handle in handles {
        assert!(handle.status().ownership.is_none());
        handle.stop().await.expect("stop");
    }
}
