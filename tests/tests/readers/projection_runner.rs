//! Projections run from the log: in memory (rebuilt on start, queried while
//! live) and in SQL with the checkpoint committed in the batch's
//! transaction, so a failure mid-batch never counts an event twice.

use std::sync::Arc;
use std::time::Duration;

use annals::prelude::*;
use annals::projection::runner::{
    InMemory, PostgresReadModel, ProjectionRunner, ProjectionState, SqliteReadModel,
};
use annals_tests::backends::{RawAccess, TestStore};
use annals_tests::domain::{
    FlakyPostgresRoleCounts, FlakySqliteRoleCounts, RoleTally, TenantCreated, TenantDirectory,
    UserEvent,
};

async fn assign_roles(store: &dyn EventStore, roles: &[&str]) {
    for (n, role) in roles.iter().enumerate() {
        let stream = StreamId::new(format!("user-p{n}")).expect("stream id");
        let event = NewEvent::from_event(&UserEvent::RoleAssigned {
            role: (*role).into(),
        })
        .expect("encode");
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
    }
}

async fn wait_caught_up<P>(
    running: &annals::projection::runner::RunningProjection<P>,
    applied: u64,
) {
    tokio::time::timeout(
        Duration::from_secs(30),
        running.wait_until(std::time::Duration::from_secs(30), |s| {
            s.applied >= applied && s.state == ProjectionState::Running
        }),
    )
    .await
    .expect("caught up within 30 s")
    .expect("running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_projection_catches_up_and_follows() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    for n in 0..20 {
        let stream = StreamId::new(format!("tenant-m{n}")).expect("stream id");
        let event = NewEvent::from_event(&TenantCreated {
            name: format!("T{n}"),
        })
        .expect("encode");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .expect("append");
    }
    assign_roles(&*store, &["ignored"]).await;
    let running = ProjectionRunner::new(store.clone(), InMemory)
        .batch_size(7)
        .start(TenantDirectory::default());
    wait_caught_up(&running, 20).await;
    assert_eq!(running.read().await.names.len(), 20);

    let stream = StreamId::new("tenant-late").expect("stream id");
    let event = NewEvent::from_event(&TenantCreated {
        name: "Late".into(),
    })
    .expect("encode");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .expect("append");
    wait_caught_up(&running, 21).await;
    assert_eq!(running.read().await.names["tenant-late"], "Late");
    let status = running.status();
    assert_eq!(status.name, "test_tenant_directory");
    assert!(status.per_second > 0.0 && status.last_error.is_none());
    assert_eq!(status.lag_events, 0, "caught up");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_model_sees_every_event_exactly_once() {
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = t.raw.clone() else {
        unreachable!("a SQLite store")
    };
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .expect("create");
    let roles = [
        "admin", "admin", "auditor", "admin", "auditor", "admin", "admin", "auditor", "admin",
        "auditor",
    ];
    assign_roles(&*t.store, &roles).await;

    let runner = || {
        ProjectionRunner::new(t.store.clone(), SqliteReadModel::new(pool.clone()))
            .batch_size(4)
            .retry_delay(Duration::from_millis(20))
    };
    let running = runner().start(FlakySqliteRoleCounts::failing_once_on(7));
    running
        .wait_until(std::time::Duration::from_secs(30), |s| {
            s.last_error.is_some()
        })
        .await
        .expect("the injected failure");
    wait_caught_up(&running, 10).await;
    running.stop().await.expect("stop");
    let counts = || async {
        sqlx::query_as::<_, (String, i64)>("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pool)
            .await
            .expect("counts")
    };
    assert_eq!(counts().await, [("admin".into(), 6), ("auditor".into(), 4)]);

    // A restart resumes from the committed checkpoint: nothing is re-applied.
    assign_roles(&*t.store, &["admin"]).await;
    let restarted = runner().start(FlakySqliteRoleCounts::default());
    wait_caught_up(&restarted, 1).await;
    restarted.stop().await.expect("stop");
    assert_eq!(counts().await, [("admin".into(), 7), ("auditor".into(), 4)]);
    let checkpoint = t
        .store
        .load_checkpoint(&ProjectionRunner::<SqliteReadModel>::checkpoint_name::<
            FlakySqliteRoleCounts,
        >())
        .await
        .expect("load");
    let log = t
        .store
        .read_all(LogPosition::START, 100)
        .await
        .expect("log");
    assert_eq!(checkpoint, log.last().map(|e| e.position));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_model_sees_every_event_exactly_once() {
    let t = TestStore::postgres().await;
    let RawAccess::Postgres(pool) = t.raw.clone() else {
        unreachable!("a PostgreSQL store")
    };
    sqlx::query("CREATE TABLE role_counts (role text PRIMARY KEY, users bigint NOT NULL)")
        .execute(&pool)
        .await
        .expect("create");
    let roles = [
        "admin", "auditor", "admin", "admin", "auditor", "admin", "admin", "admin",
    ];
    assign_roles(&*t.store, &roles).await;
    let running = ProjectionRunner::new(t.store.clone(), PostgresReadModel::new(pool.clone()))
        .batch_size(3)
        .retry_delay(Duration::from_millis(20))
        .start(FlakyPostgresRoleCounts::failing_once_on(5));
    running
        .wait_until(std::time::Duration::from_secs(30), |s| {
            s.last_error.is_some()
        })
        .await
        .expect("the injected failure");
    wait_caught_up(&running, 8).await;
    running.stop().await.expect("stop");
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pool)
            .await
            .expect("counts");
    assert_eq!(counts, [("admin".into(), 6), ("auditor".into(), 2)]);
}

/// Fails once, before applying its `fail_once_at`th event.
#[derive(Default)]
struct FlakyNames {
    names: Vec<String>,
    fail_once_at: Option<usize>,
}

#[annals::projection(name = "test_flaky_names")]
impl FlakyNames {
    fn created(&mut self, event: &TenantCreated) -> Result<(), String> {
        if self.fail_once_at == Some(self.names.len()) {
            self.fail_once_at = None;
            return Err("boom".into());
        }
        self.names.push(event.name.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_batch_failing_midway_applies_nothing_twice() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    for n in 0..6 {
        let stream = StreamId::new(format!("tenant-f{n}")).expect("stream id");
        let event = NewEvent::from_event(&TenantCreated {
            name: format!("T{n}"),
        })
        .expect("encode");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .expect("append");
    }
    let projection = FlakyNames {
        names: Vec::new(),
        fail_once_at: Some(3),
    };
    let running = ProjectionRunner::new(store, InMemory)
        .retry_delay(Duration::from_millis(10))
        .start(projection);
    wait_caught_up(&running, 6).await;
    assert_eq!(
        running.read().await.names,
        ["T0", "T1", "T2", "T3", "T4", "T5"]
    );
    running.stop().await.expect("stop");
}

/// Version 2 of the tenant directory: upper-cased names.
#[derive(Default)]
struct TenantDirectoryV2 {
    names: Vec<String>,
}

#[annals::projection(name = "test_tenant_directory", version = 4)]
impl TenantDirectoryV2 {
    fn created(&mut self, event: &TenantCreated) {
        self.names.push(event.name.to_uppercase());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_builds_beside_the_live_one_and_takes_over() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    for n in 0..30 {
        let stream = StreamId::new(format!("tenant-bg{n}")).expect("stream id");
        let event = NewEvent::from_event(&TenantCreated {
            name: format!("t{n}"),
        })
        .expect("encode");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .expect("append");
    }
    let live = ProjectionRunner::new(store.clone(), InMemory).start(TenantDirectory::default());
    wait_caught_up(&live, 30).await;
    let next = ProjectionRunner::new(store.clone(), InMemory)
        .batch_size(4)
        .start(TenantDirectoryV2::default());
    assert_eq!(
        live.read().await.names.len(),
        30,
        "readers use the live version meanwhile"
    );
    let live = live
        .replace_when_caught_up(next, std::time::Duration::from_secs(30))
        .await
        .expect("switch");
    annals::registry::validate().expect("two versions of one projection may coexist");
    assert_eq!(live.status().state, ProjectionState::Running);
    assert_eq!(live.read().await.names.len(), 30);
    assert!(live.read().await.names.contains(&"T7".to_owned()));
    live.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_rebuilds_a_sql_read_model_from_the_start() {
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = t.raw.clone() else {
        unreachable!("a SQLite store")
    };
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .expect("create");
    assign_roles(&*t.store, &["admin", "admin", "viewer"]).await;
    let run = || {
        ProjectionRunner::new(t.store.clone(), SqliteReadModel::new(pool.clone()))
            .start(FlakySqliteRoleCounts::default())
    };
    let first = run();
    wait_caught_up(&first, 3).await;
    first.stop().await.expect("stop");

    sqlx::query("DELETE FROM role_counts")
        .execute(&pool)
        .await
        .expect("truncate");
    ProjectionRunner::<SqliteReadModel>::reset::<FlakySqliteRoleCounts>(&*t.store)
        .await
        .expect("reset");
    let rebuilt = run();
    wait_caught_up(&rebuilt, 3).await;
    rebuilt.stop().await.expect("stop");
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pool)
            .await
            .expect("counts");
    assert_eq!(counts, [("admin".into(), 2), ("viewer".into(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_without_a_lease_still_apply_each_event_once() {
    // SQLite: the single-writer rule (BEGIN IMMEDIATE plus a checkpoint
    // compare-and-set) keeps two runners from applying a batch twice.
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = t.raw.clone() else {
        unreachable!("a SQLite store")
    };
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .expect("create");
    let roles: Vec<&str> = (0..120)
        .map(|n| ["admin", "viewer", "auditor"][n % 3])
        .collect();
    assign_roles(&*t.store, &roles).await;
    let run = || {
        ProjectionRunner::new(t.store.clone(), SqliteReadModel::new(pool.clone()))
            .batch_size(7)
            .retry_delay(Duration::from_millis(5))
            .start(FlakySqliteRoleCounts::default())
    };
    let (a, b) = (run(), run());
    let total = |pool: sqlx::SqlitePool| async move {
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(SUM(users), 0) FROM role_counts")
            .fetch_one(&pool)
            .await
            .expect("sum")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while total(pool.clone()).await < 120 {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pool)
            .await
            .expect("counts");
    assert_eq!(
        counts,
        [
            ("admin".into(), 40),
            ("auditor".into(), 40),
            ("viewer".into(), 40)
        ]
    );

    // PostgreSQL: the same guarantee from a per-projection transaction lock.
    let t = TestStore::postgres().await;
    let RawAccess::Postgres(pg) = t.raw.clone() else {
        unreachable!("a PostgreSQL store")
    };
    sqlx::query("CREATE TABLE role_counts (role text PRIMARY KEY, users bigint NOT NULL)")
        .execute(&pg)
        .await
        .expect("create");
    assign_roles(&*t.store, &roles).await;
    let run = || {
        ProjectionRunner::new(t.store.clone(), PostgresReadModel::new(pg.clone()))
            .batch_size(7)
            .retry_delay(Duration::from_millis(5))
            .start(FlakyPostgresRoleCounts::default())
    };
    let (a, b) = (run(), run());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sum: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(users), 0)::bigint FROM role_counts")
                .fetch_one(&pg)
                .await
                .expect("sum");
        if sum >= 120 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workers did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pg)
            .await
            .expect("counts");
    assert_eq!(
        counts,
        [
            ("admin".into(), 40),
            ("auditor".into(), 40),
            ("viewer".into(), 40)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_for_a_prefixed_store_keeps_its_checkpoint_in_the_prefixed_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = annals::store::SqliteEventStore::builder(dir.path().join("prefixed.db"))
        .table_prefix("iam_")
        .open()
        .await
        .expect("open");
    let pool = store.pool().clone();
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .expect("create");
    assign_roles(&store, &["admin", "auditor", "admin"]).await;
    let read_model = SqliteReadModel::for_store(&store);
    let running = ProjectionRunner::new(Arc::new(store.clone()), read_model)
        .start(FlakySqliteRoleCounts::default());
    wait_caught_up(&running, 3).await;
    running.stop().await.expect("stop");

    let name = ProjectionRunner::<SqliteReadModel>::checkpoint_name::<FlakySqliteRoleCounts>();
    assert!(
        store.load_checkpoint(&name).await.expect("load").is_some(),
        "the store and the read model agree on the checkpoint table"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM iam_checkpoints")
        .fetch_one(&pool)
        .await
        .expect("iam_checkpoints exists");
    assert_eq!(rows, 1);
    let unprefixed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 'annals\\_%' ESCAPE '\\'",
    )
    .fetch_one(&pool)
    .await
    .expect("catalog");
    assert_eq!(unprefixed, 0, "no annals_ table was created");
}

/// Counts roles in a buffer and writes them in `flush`, once per batch,
/// through the portable SQL connection; can fail once in `apply` (after
/// buffering some rows) and once in `flush`.
#[derive(Default)]
struct BufferedRoleCounts {
    pending: std::collections::BTreeMap<String, i64>,
    flushes: u64,
    applied: u64,
    fail_apply_at: Option<u64>,
    fail_next_flush: bool,
}

#[annals::projection(name = "buffered_role_counts", flush = Self::write)]
impl BufferedRoleCounts {
    fn assigned(
        &mut self,
        event: &UserEvent,
        _db: &mut dyn annals::projection::sql_read_model::SqlConnection,
    ) -> annals::Result<()> {
        self.applied += 1;
        if self.fail_apply_at == Some(self.applied) {
            self.fail_apply_at = None;
            return Err(annals::Error::InvalidInput {
                field: "apply",
                reason: "injected failure".into(),
            });
        }
        if let UserEvent::RoleAssigned { role } = event {
            *self.pending.entry(role.clone()).or_default() += 1;
        }
        Ok(())
    }
}

impl BufferedRoleCounts {
    async fn write(
        &mut self,
        db: &mut dyn annals::projection::sql_read_model::SqlConnection,
    ) -> annals::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        if std::mem::take(&mut self.fail_next_flush) {
            return Err(annals::Error::InvalidInput {
                field: "flush",
                reason: "injected failure".into(),
            });
        }
        self.flushes += 1;
        for (role, count) in pending {
            db.execute(
                "INSERT INTO buffered_role_counts (role, users) VALUES ($1, $2) \
                 ON CONFLICT (role) DO UPDATE SET users = buffered_role_counts.users + excluded.users",
                &[role.into(), count.into()],
            )
            .await?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_writes_are_flushed_per_batch_and_failed_batches_leave_nothing_behind() {
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = t.raw.clone() else {
        unreachable!("a SQLite store")
    };
    sqlx::query(
        "CREATE TABLE buffered_role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("create");
    assign_roles(
        &*t.store,
        &["admin", "admin", "auditor", "admin", "auditor", "admin"],
    )
    .await;
    let projection = BufferedRoleCounts {
        // The first batch fails in its flush; its retry fails in the third
        // apply, with two rows already buffered.
        fail_next_flush: true,
        fail_apply_at: Some(7),
        ..BufferedRoleCounts::default()
    };
    let running = ProjectionRunner::new(t.store.clone(), SqliteReadModel::new(pool.clone()))
        .batch_size(4)
        .retry_delay(Duration::from_millis(20))
        .start(projection);
    wait_caught_up(&running, 6).await;
    let flushes = running.read().await.flushes;
    running.stop().await.expect("stop");
    let counts = sqlx::query_as::<_, (String, i64)>(
        "SELECT role, users FROM buffered_role_counts ORDER BY role",
    )
    .fetch_all(&pool)
    .await
    .expect("counts");
    assert_eq!(
        counts,
        [("admin".into(), 4), ("auditor".into(), 2)],
        "each event counted once despite the two failed attempts"
    );
    assert!(flushes >= 2, "at least one flush per committed batch");
}

/// Sets its flag when dropped: whoever held the projection has let go.
#[derive(Default)]
struct DroppedNames {
    names: Vec<String>,
    dropped: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Drop for DroppedNames {
    fn drop(&mut self) {
        if let Some(flag) = &self.dropped {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[annals::projection(name = "test_dropped_names")]
impl DroppedNames {
    fn created(&mut self, event: &TenantCreated) {
        self.names.push(event.name.clone());
    }
}

/// Dropping a running projection without `stop()` ends its task (it used
/// to spin on the closed stop channel, reading the log in a tight loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_projection_stops_its_task() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let event = NewEvent::from_event(&TenantCreated { name: "A".into() }).expect("encode");
    store
        .append(
            &StreamId::new("tenant-d1").expect("stream id"),
            ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .expect("append");
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = ProjectionRunner::new(store, InMemory)
        .poll_interval(Duration::from_millis(50))
        .start(DroppedNames {
            names: Vec::new(),
            dropped: Some(dropped.clone()),
        });
    wait_caught_up(&running, 1).await;
    drop(running);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the task outlived its dropped handle"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A projection reads only the event types it handles, filtered by the
/// store (the other types never cross into the process), moves past the
/// others, and reports its lag without counting the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_reads_only_its_types_and_never_counts_the_log() {
    use annals::testing::RecordingStore;
    let memory: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    for n in 0..20 {
        let stream = StreamId::new(format!("tenant-r{n}")).expect("stream id");
        let event = NewEvent::from_event(&TenantCreated {
            name: format!("T{n}"),
        })
        .expect("encode");
        memory
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .expect("append");
        // Ten events of a type the directory does not handle after each.
        assign_roles(&*memory, &["reader"; 10]).await;
    }
    let recording = RecordingStore::new(memory.clone());
    let store: Arc<dyn EventStore> = recording.clone();
    let running = ProjectionRunner::new(store, InMemory)
        .batch_size(7)
        .start(TenantDirectory::default());
    wait_caught_up(&running, 20).await;
    assert_eq!(running.read().await.names.len(), 20);
    let status = running.status();
    assert_eq!(status.lag_events, 0, "caught up");
    let head = memory
        .read_log(LogPosition::START, 1, &annals::store::LogFilter::all())
        .await
        .expect("read")
        .head;
    assert_eq!(
        status.position, head,
        "moved past the unhandled events at the end"
    );
    running.stop().await.expect("stop");
    assert_eq!(
        recording.events_read(),
        20,
        "only the handled events were read (the log holds 220)"
    );
    assert_eq!(
        recording.counts(),
        0,
        "the lag comes from the head, not a count"
    );
}

/// An operator pauses a running SQL projection (as `annals projections
/// pause` does): it applies nothing, keeping its lease, until resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sql_projection_applies_nothing_until_resumed() {
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = t.raw.clone() else {
        unreachable!("a SQLite store")
    };
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .expect("create");
    assign_roles(&*t.store, &["admin", "admin", "auditor"]).await;
    let name = ProjectionRunner::<SqliteReadModel>::checkpoint_name::<FlakySqliteRoleCounts>();
    let running = ProjectionRunner::new(t.store.clone(), SqliteReadModel::new(pool.clone()))
        .lease(annals::checkpoint::LeaseSettings::new(
            Duration::from_millis(300),
        ))
        .poll_interval(Duration::from_millis(50))
        .start(FlakySqliteRoleCounts::default());
    wait_caught_up(&running, 3).await;
    let counts = || async {
        sqlx::query_as::<_, (String, i64)>("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pool)
            .await
            .expect("counts")
    };

    let checkpoints = t.store.checkpoints();
    assert!(checkpoints.set_paused(&name, true).await.expect("pause"));
    running
        .wait_until(Duration::from_secs(20), |s| {
            s.state == ProjectionState::Paused
        })
        .await
        .expect("the runner pauses within a renewal");
    assign_roles(&*t.store, &["auditor", "auditor"]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(counts().await, [("admin".into(), 2), ("auditor".into(), 1)]);
    let status = running.status();
    assert_eq!((status.state, status.applied), (ProjectionState::Paused, 3));
    assert!(
        status.ownership.is_some_and(|ownership| ownership.held),
        "a paused runner keeps its lease"
    );

    assert!(checkpoints.set_paused(&name, false).await.expect("resume"));
    wait_caught_up(&running, 5).await;
    assert_eq!(counts().await, [("admin".into(), 2), ("auditor".into(), 3)]);
    running.stop().await.expect("stop");
}

/// The declared table of [`RoleTally`], created as its generated DDL says.
fn role_tally_ddl(dialect: annals_codegen::Dialect) -> String {
    let table = annals::registry::projections()
        .find(|projection| projection.name == "test_role_tally")
        .and_then(|projection| projection.tables.first())
        .expect("RoleTally declares its table");
    annals_codegen::read_model_ddl::create_table(dialect, table)
}

/// Runs `sql` on the test store's own tables: the rows of a SELECT of
/// `(text, integer)`, nothing for anything else.
async fn raw_rows(raw: &RawAccess, sql: &str) -> Vec<(String, i64)> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    let select = sql.0.starts_with("SELECT");
    match raw {
        RawAccess::Sqlite(pool) if select => {
            sqlx::query_as(sql).fetch_all(pool).await.expect("select")
        }
        RawAccess::Sqlite(pool) => {
            sqlx::query(sql).execute(pool).await.expect("statement");
            Vec::new()
        }
        RawAccess::Postgres(pool) if select => {
            sqlx::query_as(sql).fetch_all(pool).await.expect("select")
        }
        RawAccess::Postgres(pool) => {
            sqlx::query(sql).execute(pool).await.expect("statement");
            Vec::new()
        }
        RawAccess::Memory => unreachable!("a SQL store"),
    }
}

/// An operator asks a running SQL projection to rebuild in place (as
/// `annals projections rebuild` does): it empties the table it declares,
/// starts over from the beginning of the log and ends where it was, with
/// the rows recomputed; the request is cleared.
async fn rebuilds_in_place<T>(t: &TestStore, target: T)
where
    T: annals::projection::runner::ProjectionTarget<RoleTally>,
{
    assign_roles(&*t.store, &["admin", "admin", "auditor"]).await;
    let name = ProjectionRunner::<T>::checkpoint_name::<RoleTally>();
    let running = ProjectionRunner::new(t.store.clone(), target)
        .lease(annals::checkpoint::LeaseSettings::new(
            Duration::from_millis(300),
        ))
        .poll_interval(Duration::from_millis(50))
        .start(RoleTally);
    wait_caught_up(&running, 3).await;
    let select = "SELECT role, users FROM role_tally ORDER BY role";
    assert_eq!(
        raw_rows(&t.raw, select).await,
        [("admin".into(), 2), ("auditor".into(), 1)]
    );
    // A read model gone wrong: the rebuild recomputes it from the log.
    raw_rows(&t.raw, "UPDATE role_tally SET users = 99").await;

    let checkpoints = t.store.checkpoints();
    assert!(
        checkpoints
            .request_rebuild(&name, true)
            .await
            .expect("request")
    );
    running
        .wait_until(Duration::from_secs(20), |s| {
            s.state == ProjectionState::Rebuilding || s.applied > 3
        })
        .await
        .expect("the runner rebuilds within a renewal");
    wait_caught_up(&running, 6).await;
    assert_eq!(
        raw_rows(&t.raw, select).await,
        [("admin".into(), 2), ("auditor".into(), 1)]
    );
    let row = checkpoints.load(&name).await.expect("load").expect("row");
    assert!(!row.rebuild_requested, "the rebuild cleared the request");
    assert_eq!(row.position, running.status().position);
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_projection_rebuilds_in_place_on_request() {
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = t.raw.clone() else {
        unreachable!("a SQLite store")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(role_tally_ddl(
        annals_codegen::Dialect::Sqlite,
    )))
    .execute(&pool)
    .await
    .expect("create");
    rebuilds_in_place(&t, SqliteReadModel::new(pool)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_projection_rebuilds_in_place_on_request() {
    let t = TestStore::postgres().await;
    let RawAccess::Postgres(pool) = t.raw.clone() else {
        unreachable!("a PostgreSQL store")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(role_tally_ddl(
        annals_codegen::Dialect::Postgres,
    )))
    .execute(&pool)
    .await
    .expect("create");
    rebuilds_in_place(&t, PostgresReadModel::new(pool)).await;
}

/// A projection that declares no tables cannot be emptied in place: the
/// request is withdrawn, its status says why, and nothing is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_without_declared_tables_refuses_to_rebuild() {
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = t.raw.clone() else {
        unreachable!("a SQLite store")
    };
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .expect("create");
    assign_roles(&*t.store, &["admin", "auditor"]).await;
    let name = ProjectionRunner::<SqliteReadModel>::checkpoint_name::<FlakySqliteRoleCounts>();
    let running = ProjectionRunner::new(t.store.clone(), SqliteReadModel::new(pool.clone()))
        .lease(annals::checkpoint::LeaseSettings::new(
            Duration::from_millis(300),
        ))
        .poll_interval(Duration::from_millis(50))
        .start(FlakySqliteRoleCounts::default());
    wait_caught_up(&running, 2).await;
    let before = running.status().position;
    let checkpoints = t.store.checkpoints();
    assert!(
        checkpoints
            .request_rebuild(&name, true)
            .await
            .expect("request")
    );
    running
        .wait_until(Duration::from_secs(20), |s| {
            s.last_error
                .as_deref()
                .is_some_and(|error| error.contains("declares no tables"))
        })
        .await
        .expect("the refusal in the status");
    let row = checkpoints.load(&name).await.expect("load").expect("row");
    assert!(!row.rebuild_requested, "the request is withdrawn");
    assert_eq!(row.position, before, "nothing moved");
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pool)
            .await
            .expect("counts");
    assert_eq!(counts, [("admin".into(), 1), ("auditor".into(), 1)]);
    running.stop().await.expect("stop");
}

/// A read model whose first rebuild fails on the way (as a database blip
/// would), then rebuilds as SQLite's does.
struct FirstRebuildFails {
    inner: SqliteReadModel,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl annals::projection::runner::ProjectionTarget<RoleTally> for FirstRebuildFails {
    fn checkpoints(&self) -> Option<Arc<dyn annals::checkpoint::CheckpointStore>> {
        annals::projection::runner::ProjectionTarget::<RoleTally>::checkpoints(&self.inner)
    }

    async fn apply(
        &self,
        projection: &mut RoleTally,
        batch: annals::projection::runner::Batch<'_>,
    ) -> Result<(), annals::projection::runner::BatchFailure> {
        self.inner.apply(projection, batch).await
    }

    async fn rebuild(
        &self,
        lease: &annals::checkpoint::Lease,
        previous: LogPosition,
    ) -> annals::Result<()> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Backend {
                backend: "sqlite",
                operation: "empty read model table",
                source: "database is locked".into(),
            });
        }
        annals::projection::runner::ProjectionTarget::<RoleTally>::rebuild(
            &self.inner,
            lease,
            previous,
        )
        .await
    }
}

/// A rebuild that fails on the way keeps the operator's request: the
/// failure shows in the status, and the next renewal brings the request
/// back, which then rebuilds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_fails_on_the_way_is_tried_again() {
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = t.raw.clone() else {
        unreachable!("a SQLite store")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(role_tally_ddl(
        annals_codegen::Dialect::Sqlite,
    )))
    .execute(&pool)
    .await
    .expect("create");
    assign_roles(&*t.store, &["admin", "auditor"]).await;
    let target = FirstRebuildFails {
        inner: SqliteReadModel::new(pool.clone()),
        failed: std::sync::atomic::AtomicBool::new(false),
    };
    let name = ProjectionRunner::<FirstRebuildFails>::checkpoint_name::<RoleTally>();
    let running = ProjectionRunner::new(t.store.clone(), target)
        .lease(annals::checkpoint::LeaseSettings::new(
            Duration::from_millis(300),
        ))
        .poll_interval(Duration::from_millis(50))
        .start(RoleTally);
    wait_caught_up(&running, 2).await;
    raw_rows(&t.raw, "UPDATE role_tally SET users = 99").await;
    let checkpoints = t.store.checkpoints();
    assert!(
        checkpoints
            .request_rebuild(&name, true)
            .await
            .expect("request")
    );
    running
        .wait_until(Duration::from_secs(20), |s| {
            s.last_error
                .as_deref()
                .is_some_and(|error| error.contains("rebuild failed"))
        })
        .await
        .expect("the failure in the status");
    // Tried again at a later renewal, and done.
    wait_caught_up(&running, 4).await;
    assert_eq!(
        raw_rows(&t.raw, "SELECT role, users FROM role_tally ORDER BY role").await,
        [("admin".into(), 1), ("auditor".into(), 1)]
    );
    let row = checkpoints.load(&name).await.expect("load").expect("row");
    assert!(!row.rebuild_requested);
    running.stop().await.expect("stop");
}

/// Notes, as it applies each event, how many watches over the log its
/// store had given out by then.
#[derive(Default)]
struct WatchesWhileApplying {
    recording: Option<Arc<annals::testing::RecordingStore>>,
    seen: Vec<u64>,
}

#[annals::projection(name = "test_watches_while_applying")]
impl WatchesWhileApplying {
    fn created(&mut self, _event: &TenantCreated) {
        if let Some(recording) = &self.recording {
            self.seen.push(recording.watches());
        }
    }
}

/// A catch-up does not wait for the store's watch (on PostgreSQL a LISTEN
/// connection of its own, a few milliseconds to open before the first read
/// used to wait on): the runner opens it once caught up, once, and an
/// append after that still wakes it long before its poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_reads_before_opening_the_watch_that_then_wakes_it() {
    use annals::testing::RecordingStore;
    let t = TestStore::postgres().await;
    let append = |n: usize| {
        let store = t.store.clone();
        async move {
            let event = NewEvent::from_event(&TenantCreated {
                name: format!("T{n}"),
            })
            .expect("encode");
            store
                .append(
                    &StreamId::new(format!("tenant-w{n}")).expect("stream id"),
                    ExpectedVersion::NoStream,
                    vec![event],
                )
                .await
                .expect("append");
        }
    };
    for n in 0..30 {
        append(n).await;
    }
    let recording = RecordingStore::new(t.store.clone());
    let store: Arc<dyn EventStore> = recording.clone();
    let running = ProjectionRunner::new(store, InMemory)
        .batch_size(10)
        // Only the watch can bring the next append in promptly.
        .poll_interval(Duration::from_secs(60))
        .start(WatchesWhileApplying {
            recording: Some(recording.clone()),
            seen: Vec::new(),
        });
    wait_caught_up(&running, 30).await;
    let seen = running.read().await.seen.clone();
    assert_eq!(seen.len(), 30);
    assert!(
        seen.iter().all(|&watches| watches == 0),
        "the catch-up waited for the watch: {seen:?}"
    );
    // Idle now: the watch is taken, and the backoff has grown past a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(recording.watches(), 1, "one watch, taken once caught up");
    append(30).await;
    let appended = std::time::Instant::now();
    wait_caught_up(&running, 31).await;
    assert!(
        appended.elapsed() < Duration::from_millis(1500),
        "woken {:?} after the append: the watch did not wake the runner",
        appended.elapsed()
    );
    assert_eq!(recording.watches(), 1);
    running.stop().await.expect("stop");
}
