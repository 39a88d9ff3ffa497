//! Running projections from the log: an in-memory read model rebuilt on
//! start, or a SQL read model whose checkpoint is committed in the same
//! transaction as its writes, so it sees every event exactly once.
//!
//! A SQL read model has one owner however many instances run it: the runner
//! takes the projection's lease (see [`checkpoint`](crate::checkpoint))
//! before it applies anything, the others stand by
//! ([`ProjectionState::Standby`]), and each batch commits only if its
//! lease's generation is still current, so a worker that lost the lease
//! (paused, cut off) cannot commit a late batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{RwLock, watch};
use tracing::Instrument as _;

use crate::checkpoint::{CheckpointStore, Lease, LeaseSettings, OwnershipStatus};
use crate::error::{Error, Result};
use crate::event::envelope::RecordedEvent;
use crate::projection::Projection;
#[cfg(feature = "postgres")]
use crate::projection::sql_read_model::PostgresContext;
#[cfg(feature = "sqlite")]
use crate::projection::sql_read_model::SqliteContext;
use crate::store::position::LogPosition;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::store::table_names::TableNames;
use crate::store::{EventStore, LogFilter, LogPage};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::subscription::TransactionalSink;
use crate::task::TaskHandle;

/// What a projection runner is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProjectionState {
    /// Reading the log up to its end.
    #[default]
    CatchingUp,
    /// Up to date, following new events.
    Running,
    /// The last batch failed; it will be retried.
    Failed,
    /// Stopped by its handle.
    Stopped,
    /// Waiting for the lease another worker holds (see
    /// [`ProjectionStatus::ownership`] for who).
    Standby,
    /// Building the read model from the start of the log (first run, new
    /// version, or after a reset).
    Rebuilding,
    /// Paused by an operator
    /// ([`CheckpointStore::set_paused`],
    /// `annals projections pause`): holding the lease, reading nothing,
    /// until resumed.
    Paused,
}

/// A running projection's status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: &'static str,
    /// What it is doing.
    pub state: ProjectionState,
    /// The last position applied (and, for SQL read models, committed).
    pub position: LogPosition,
    /// Events applied since start.
    pub applied: u64,
    /// How far behind the newest applied event is (time since it was recorded).
    pub lag: Duration,
    /// About how many events of the log lie beyond `position`: the
    /// positions between it and the head of the log its last read saw (a
    /// rolled back append leaves unused positions, so this can overstate;
    /// nothing counts the log).
    pub lag_events: u64,
    /// Events applied per second since start.
    pub per_second: f64,
    /// The last error, cleared by a successful batch.
    pub last_error: Option<String>,
    /// Who owns the projection: this worker (`held`) or another one it
    /// stands by for. `None` for an in-memory read model, which every
    /// instance builds for itself.
    pub ownership: Option<OwnershipStatus>,
}

impl crate::task::ReaderStatus for ProjectionStatus {
    fn position(&self) -> LogPosition {
        self.position
    }
}

/// Where a projection's read model and checkpoint live.
#[async_trait]
pub trait ProjectionTarget<P: Projection>: Send + Sync + 'static {
    /// Where the checkpoint and the projection's lease are kept; `None` for
    /// a target that keeps neither (an in-memory read model, rebuilt from
    /// the start of the log by every instance).
    fn checkpoints(&self) -> Option<Arc<dyn CheckpointStore>>;

    /// Applies a batch and moves the checkpoint from `batch.previous` to
    /// `batch.next`, atomically where the target can. SQL targets commit
    /// only under the batch's lease ([`Error::LeaseLost`] if it was taken
    /// over) and only if the stored checkpoint is still `previous`
    /// ([`Error::CheckpointMoved`] if not), and then apply nothing. On
    /// failure it reports how many of the events stay applied (0 for a
    /// rolled-back transaction), so the runner retries only the rest.
    async fn apply(&self, projection: &mut P, batch: Batch<'_>) -> Result<(), BatchFailure>;

    /// Empties the read model and moves the checkpoint under `lease` from
    /// `previous` back to the start of the log, in one transaction: an
    /// operator's rebuild in place
    /// ([`CheckpointStore::request_rebuild`], `annals projections rebuild`).
    /// The SQL read models delete the rows of the tables the projection
    /// declares with `#[projection(table(...))]`; a target that cannot
    /// (the default) refuses, and the request is withdrawn with the error
    /// in the projection's status.
    async fn rebuild(&self, lease: &Lease, previous: LogPosition) -> Result<()> {
        let _ = (lease, previous);
        Err(Error::invalid(
            "projection",
            format!(
                "projection `{}` cannot be rebuilt in place by this target: bump its version to rebuild it",
                P::NAME
            ),
        ))
    }
}

/// The tables projection `P` declares (`#[projection(table(...))]`), which
/// a rebuild in place empties; refused for a projection that declares none
/// or a read model scoped to a tenant (its tables hold every tenant's rows).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn tables_to_empty<P: Projection>(tenant: Option<&str>) -> Result<Vec<&'static str>> {
    if let Some(tenant) = tenant {
        return Err(Error::invalid(
            "projection",
            format!(
                "projection `{}` runs for tenant {tenant:?}, and its tables hold every tenant's rows: rebuild it from the unscoped store, or bump its version",
                P::NAME
            ),
        ));
    }
    let tables: Vec<&'static str> = crate::registry::projections()
        .filter(|descriptor| descriptor.name == P::NAME && descriptor.version == P::VERSION)
        .flat_map(|descriptor| descriptor.tables.iter().map(|table| table.name))
        .collect();
    if tables.is_empty() {
        return Err(Error::invalid(
            "projection",
            format!(
                "projection `{}` declares no tables (#[projection(table(...))]), so it cannot be emptied in place: declare them, or bump its version to rebuild it",
                P::NAME
            ),
        ));
    }
    Ok(tables)
}

/// A database in which a subscription's [`TransactionalSink`] writes, and
/// whose transaction also moves the subscription's checkpoint under its
/// lease: the sink's writes for a batch happen exactly once, and not at all
/// from a worker that lost the lease. The SQL read models are such targets
/// ([`Subscription::start_transactional`](crate::subscription::Subscription::start_transactional)).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
#[async_trait]
pub trait TransactionalTarget: Send + Sync + 'static {
    /// Where the subscription's checkpoint and lease are kept.
    fn checkpoints(&self) -> Arc<dyn CheckpointStore>;

    /// Hands `batch.events` to `sink` inside one transaction that also
    /// moves the checkpoint from `batch.previous` to `batch.next` under
    /// `batch.lease`; on any failure nothing of the batch stays.
    async fn deliver(
        &self,
        sink: &mut dyn TransactionalSink,
        batch: Batch<'_>,
    ) -> Result<(), BatchFailure>;
}

/// One batch for a [`ProjectionTarget`].
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The events the projection handles (others of the log's range are
    /// left out, and the checkpoint still moves past them).
    pub events: &'a [RecordedEvent],
    /// The checkpoint before the batch.
    pub previous: LogPosition,
    /// The checkpoint after it.
    pub next: LogPosition,
    /// The lease the batch is committed under (`None` for targets without
    /// [`checkpoints`](ProjectionTarget::checkpoints)).
    pub lease: Option<&'a Lease>,
}

/// A batch that failed part-way.
#[derive(Debug)]
pub struct BatchFailure {
    /// Events of the batch that remain applied.
    pub applied: usize,
    /// What went wrong: [`Error::LeaseLost`] and [`Error::CheckpointMoved`]
    /// mean another worker or an operator got there first.
    pub error: Error,
}

impl From<Error> for BatchFailure {
    fn from(error: Error) -> Self {
        BatchFailure { applied: 0, error }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn lease_required<'a>(batch: &Batch<'a>) -> Result<&'a Lease> {
    batch.lease.ok_or_else(|| {
        Error::invalid(
            "batch",
            "a SQL read model commits a batch only under its projection's lease",
        )
    })
}

/// An in-memory read model: rebuilt from the log on every start.
#[derive(Debug, Clone, Copy, Default)]
pub struct InMemory;

#[async_trait]
impl<P: Projection<Context = ()>> ProjectionTarget<P> for InMemory {
    fn checkpoints(&self) -> Option<Arc<dyn CheckpointStore>> {
        None
    }

    async fn apply(&self, projection: &mut P, batch: Batch<'_>) -> Result<(), BatchFailure> {
        for (applied, event) in batch.events.iter().enumerate() {
            projection
                .apply(event, &mut ())
                .await
                .map_err(|error| BatchFailure { applied, error })?;
        }
        projection
            .flush(&mut ())
            .await
            .map_err(|error| BatchFailure {
                applied: batch.events.len(),
                error,
            })
    }
}

/// A SQL read model in the SQLite database of the event store: each batch
/// and its checkpoint commit in one transaction.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
#[derive(Debug, Clone)]
pub struct SqliteReadModel {
    pool: sqlx::SqlitePool,
    tables: TableNames,
    /// The tenant whose checkpoints it keeps (`""`: the unscoped store's).
    tenant: String,
}

#[cfg(feature = "sqlite")]
impl SqliteReadModel {
    /// A read model in the database of `store`, whose checkpoint table it
    /// shares (with the store's table prefix).
    pub fn for_store(store: &crate::store::SqliteEventStore) -> Self {
        SqliteReadModel {
            pool: store.pool().clone(),
            tables: store.table_names().clone(),
            tenant: store.tenant().unwrap_or_default().to_owned(),
        }
    }

    /// A read model in the database behind `pool`, whose Annals tables have
    /// the default `annals_` prefix.
    pub fn new(pool: sqlx::SqlitePool) -> Self {
        SqliteReadModel {
            pool,
            tables: TableNames::default(),
            tenant: String::new(),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &sqlx::SqlitePool {
        &self.pool
    }
}

#[cfg(feature = "sqlite")]
impl SqliteReadModel {
    /// Runs `work` on `batch.events` and moves the checkpoint under the
    /// batch's lease, in one transaction.
    async fn commit_batch<W>(&self, work: &mut W, batch: Batch<'_>) -> Result<(), BatchFailure>
    where
        W: BatchWork<sqlx::SqliteConnection> + ?Sized,
    {
        let lease = lease_required(&batch)?;
        // BEGIN IMMEDIATE: one writer at a time, across processes too.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql_failed("sqlite", "begin projection batch"))?;
        work.run(batch.events, &mut tx).await?;
        crate::checkpoint::sqlite::commit_in(
            &mut tx,
            &self.tables,
            &self.tenant,
            lease,
            batch.previous,
            batch.next,
        )
        .await?;
        tx.commit()
            .await
            .map_err(sql_failed("sqlite", "commit projection batch"))?;
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl<P> ProjectionTarget<P> for SqliteReadModel
where
    P: Projection,
    P::Context: crate::projection::sql_read_model::SqliteContext,
{
    fn checkpoints(&self) -> Option<Arc<dyn CheckpointStore>> {
        Some(TransactionalTarget::checkpoints(self))
    }

    async fn apply(&self, projection: &mut P, batch: Batch<'_>) -> Result<(), BatchFailure> {
        self.commit_batch(&mut ProjectionWork(projection), batch)
            .await
    }

    async fn rebuild(&self, lease: &Lease, previous: LogPosition) -> Result<()> {
        let tables = tables_to_empty::<P>(Some(self.tenant.as_str()).filter(|t| !t.is_empty()))?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(crate::store::row::failed("sqlite", "begin rebuild"))?;
        for table in tables {
            // Declared in the projection's attribute, checked as a plain
            // identifier by the macro.
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await
                .map_err(crate::store::row::failed(
                    "sqlite",
                    "empty read model table",
                ))?;
        }
        crate::checkpoint::sqlite::rebuild_in(&mut tx, &self.tables, &self.tenant, lease, previous)
            .await?;
        tx.commit()
            .await
            .map_err(crate::store::row::failed("sqlite", "commit rebuild"))
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl TransactionalTarget for SqliteReadModel {
    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(crate::checkpoint::sqlite::SqliteCheckpoints::new(
            self.pool.clone(),
            self.tables.clone(),
            &self.tenant,
        ))
    }

    async fn deliver(
        &self,
        sink: &mut dyn TransactionalSink,
        batch: Batch<'_>,
    ) -> Result<(), BatchFailure> {
        self.commit_batch(&mut SinkWork(sink), batch).await
    }
}

/// A SQL read model in the PostgreSQL database of the event store: each
/// batch and its checkpoint commit in one transaction.
///
/// Made [`for_store`](Self::for_store) of a tenant handle
/// ([`PostgresEventStore::for_tenant`](crate::store::PostgresEventStore::for_tenant)),
/// it runs every transaction as that tenant: its checkpoint is the tenant's
/// own (two tenants' runners of one projection never share a row), and its
/// writes to Annals' tables pass row-level security for that tenant alone.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[derive(Debug, Clone)]
pub struct PostgresReadModel {
    pool: sqlx::PgPool,
    tables: TableNames,
    tenant: Option<std::sync::Arc<str>>,
}

#[cfg(feature = "postgres")]
impl PostgresReadModel {
    /// A read model in the schema of `store`, whose checkpoint table it
    /// shares (with the store's table prefix), scoped to the store's tenant
    /// if it is a tenant handle.
    pub fn for_store(store: &crate::store::PostgresEventStore) -> Self {
        PostgresReadModel {
            pool: store.pool().clone(),
            tables: store.table_names().clone(),
            tenant: store.tenant().map(std::sync::Arc::from),
        }
    }

    /// A read model in the database behind `pool` (its search path naming
    /// the schema of Annals' tables, which have the default prefix).
    pub fn new(pool: sqlx::PgPool) -> Self {
        PostgresReadModel {
            pool,
            tables: TableNames::default(),
            tenant: None,
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// A transaction, run as the read model's tenant if it has one.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        crate::store::tenant_session::begin(&self.pool, self.tenant.as_deref()).await
    }
}

#[cfg(feature = "postgres")]
impl PostgresReadModel {
    /// Runs `work` on `batch.events` and moves the checkpoint under the
    /// batch's lease, in one transaction.
    async fn commit_batch<W>(&self, work: &mut W, batch: Batch<'_>) -> Result<(), BatchFailure>
    where
        W: BatchWork<sqlx::PgConnection> + ?Sized,
    {
        let lease = lease_required(&batch)?;
        let mut tx = self.begin().await?;
        // A worker stalled inside the batch (paused, cut off) must not hold
        // its row locks past its lease: the server ends its session then,
        // and the worker that took over is not kept waiting.
        let ttl = (lease.expires_at - lease.renewed_at)
            .num_milliseconds()
            .max(1000);
        sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
            .bind(ttl.to_string())
            .execute(&mut *tx)
            .await
            .map_err(sql_failed("postgres", "bound the batch's idle time"))?;
        work.run(batch.events, &mut tx).await?;
        crate::checkpoint::postgres::commit_in(
            &mut tx,
            &self.tables,
            lease,
            batch.previous,
            batch.next,
        )
        .await?;
        tx.commit()
            .await
            .map_err(sql_failed("postgres", "commit projection batch"))?;
        Ok(())
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl<P> ProjectionTarget<P> for PostgresReadModel
where
    P: Projection,
    P::Context: crate::projection::sql_read_model::PostgresContext,
{
    fn checkpoints(&self) -> Option<Arc<dyn CheckpointStore>> {
        Some(TransactionalTarget::checkpoints(self))
    }

    async fn apply(&self, projection: &mut P, batch: Batch<'_>) -> Result<(), BatchFailure> {
        self.commit_batch(&mut ProjectionWork(projection), batch)
            .await
    }

    async fn rebuild(&self, lease: &Lease, previous: LogPosition) -> Result<()> {
        let tables = tables_to_empty::<P>(self.tenant.as_deref())?;
        let mut tx = self.begin().await?;
        for table in tables {
            // Declared in the projection's attribute, checked as a plain
            // identifier by the macro.
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await
                .map_err(crate::store::row::failed(
                    "postgres",
                    "empty read model table",
                ))?;
        }
        crate::checkpoint::postgres::rebuild_in(&mut tx, &self.tables, lease, previous).await?;
        tx.commit()
            .await
            .map_err(crate::store::row::failed("postgres", "commit rebuild"))
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl TransactionalTarget for PostgresReadModel {
    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(crate::checkpoint::postgres::PostgresCheckpoints::new(
            self.pool.clone(),
            self.tables.clone(),
            self.tenant.clone(),
        ))
    }

    async fn deliver(
        &self,
        sink: &mut dyn TransactionalSink,
        batch: Batch<'_>,
    ) -> Result<(), BatchFailure> {
        self.commit_batch(&mut SinkWork(sink), batch).await
    }
}

/// What a SQL target runs inside a batch's transaction, before the
/// checkpoint moves in it: a projection's handlers, or a transactional
/// sink's.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[async_trait]
trait BatchWork<C: ?Sized + Send>: Send {
    async fn run(&mut self, events: &[RecordedEvent], connection: &mut C) -> Result<()>;
}

/// A projection's handlers as a batch's work.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
struct ProjectionWork<'p, P>(&'p mut P);

#[cfg(feature = "sqlite")]
#[async_trait]
impl<P> BatchWork<sqlx::SqliteConnection> for ProjectionWork<'_, P>
where
    P: Projection,
    P::Context: crate::projection::sql_read_model::SqliteContext,
{
    async fn run(
        &mut self,
        events: &[RecordedEvent],
        connection: &mut sqlx::SqliteConnection,
    ) -> Result<()> {
        for event in events {
            if let Err(error) = self
                .0
                .apply(event, P::Context::from_sqlite(connection))
                .await
            {
                // Drain what the projection buffered into the transaction
                // that is about to roll back: the retry starts clean.
                let _ = self.0.flush(P::Context::from_sqlite(connection)).await;
                return Err(error);
            }
        }
        self.0.flush(P::Context::from_sqlite(connection)).await
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl<P> BatchWork<sqlx::PgConnection> for ProjectionWork<'_, P>
where
    P: Projection,
    P::Context: crate::projection::sql_read_model::PostgresContext,
{
    async fn run(
        &mut self,
        events: &[RecordedEvent],
        connection: &mut sqlx::PgConnection,
    ) -> Result<()> {
        for event in events {
            if let Err(error) = self
                .0
                .apply(event, P::Context::from_postgres(connection))
                .await
            {
                // Drain what the projection buffered into the transaction
                // that is about to roll back: the retry starts clean.
                let _ = self.0.flush(P::Context::from_postgres(connection)).await;
                return Err(error);
            }
        }
        self.0.flush(P::Context::from_postgres(connection)).await
    }
}

/// A transactional sink's handler as a batch's work.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
struct SinkWork<'s>(&'s mut dyn TransactionalSink);

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[async_trait]
impl<C> BatchWork<C> for SinkWork<'_>
where
    C: crate::projection::sql_read_model::SqlConnection + Send,
{
    async fn run(&mut self, events: &[RecordedEvent], connection: &mut C) -> Result<()> {
        for event in events {
            self.0
                .handle(event, connection)
                .await
                .map_err(|source| Error::Projection {
                    projection: "transactional sink",
                    stream: event.stream_id.to_string(),
                    version: event.version,
                    event_type: event.event_type.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sql_failed(backend: &'static str, operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| Error::Backend {
        backend,
        operation,
        source: Box::new(error),
    }
}

/// Runs a projection from the log into a [`ProjectionTarget`].
///
/// ```
/// use annals::prelude::*;
/// use annals::projection::runner::{InMemory, ProjectionRunner};
///
/// #[event(name = "doc.tenant.created")]
/// struct TenantCreated { name: String }
///
/// #[derive(Default)]
/// struct Names(Vec<String>);
///
/// #[projection(name = "doc_names")]
/// impl Names {
///     fn created(&mut self, event: &TenantCreated) { self.0.push(event.name.clone()); }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = std::sync::Arc::new(InMemoryEventStore::new());
/// let stream = StreamId::new("tenant-1")?;
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::from_event(&TenantCreated { name: "Acme".into() })?]).await?;
/// let running = ProjectionRunner::new(store.clone(), InMemory).start(Names::default());
/// running.wait_until(std::time::Duration::from_secs(30), |status| status.applied == 1).await?;
/// assert_eq!(running.read().await.0, ["Acme"]);
/// running.stop().await?;
/// # Ok(())
/// # }
/// ```
pub struct ProjectionRunner<T> {
    store: Arc<dyn EventStore>,
    target: T,
    batch_size: usize,
    poll_interval: Duration,
    retry_delay: Duration,
    lease: LeaseSettings,
    worker: String,
}

impl<T> std::fmt::Debug for ProjectionRunner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl<T> ProjectionRunner<T> {
    /// Reads `store`'s log into `target`.
    pub fn new(store: Arc<dyn EventStore>, target: T) -> Self {
        ProjectionRunner {
            store,
            target,
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            retry_delay: Duration::from_millis(200),
            lease: LeaseSettings::default(),
            worker: crate::checkpoint::default_owner_name(),
        }
    }

    /// The lease's length and timing for a SQL read model (default 15 s,
    /// so another instance takes over at most 18 s after the owner goes
    /// quiet). A PostgreSQL batch that sits idle inside its transaction for
    /// longer than the lease is ended by the server.
    pub fn lease(mut self, settings: LeaseSettings) -> Self {
        self.lease = settings;
        self
    }

    /// The name this worker holds leases under (default
    /// [`default_owner_name`](crate::checkpoint::default_owner_name)).
    pub fn worker_name(mut self, worker: impl Into<String>) -> Self {
        self.worker = worker.into();
        self
    }

    /// Events per batch (and per transaction for SQL read models).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// How long to wait when caught up.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long to wait after a failed batch.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The checkpoint name of projection `P`: its name and version, so a new
    /// version starts from the beginning (a rebuild).
    pub fn checkpoint_name<P: Projection>() -> String {
        format!("projection:{}:v{}", P::NAME, P::VERSION)
    }

    /// Forgets projection `P`'s checkpoint in `store`, so its next start
    /// rebuilds it from the beginning (reset its read model first).
    pub async fn reset<P: Projection>(store: &dyn EventStore) -> Result<()> {
        store
            .checkpoints()
            .save(&Self::checkpoint_name::<P>(), LogPosition::START)
            .await
    }

    /// Starts the projection in a background task on the current Tokio
    /// runtime (outside one, it does not run, and the handle answers
    /// [`Error::NoRuntime`]).
    pub fn start<P>(self, projection: P) -> RunningProjection<P>
    where
        P: Projection + Send + Sync + 'static,
        T: ProjectionTarget<P>,
    {
        let model = Arc::new(RwLock::new(projection));
        let (status, receiver) = watch::channel(ProjectionStatus {
            name: P::NAME,
            ..ProjectionStatus::default()
        });
        let (stop, stopped) = watch::channel(false);
        let work = self.run(model.clone(), status, stopped);
        RunningProjection {
            model,
            task: TaskHandle::spawn("projection", P::NAME, receiver, stop, work),
        }
    }

    /// The runner's loop: take the lease (standing by while another worker
    /// has it), then read, apply and checkpoint batch after batch until
    /// stopped or the lease is lost.
    async fn run<P>(
        self,
        model: Arc<RwLock<P>>,
        status: watch::Sender<ProjectionStatus>,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<()>
    where
        P: Projection + Send + Sync + 'static,
        T: ProjectionTarget<P>,
    {
        // The database reads only the handled types (and the metadata only
        // if a handler looks at it).
        let mut filter = LogFilter::event_types(P::event_types());
        if !P::reads_metadata() {
            filter = filter.without_metadata();
        }
        let status = Arc::new(status);
        let ownership = self.ownership::<P>(&status);
        let mut progress = Progress {
            status: &status,
            started: Instant::now(),
            applied: 0,
        };
        let mut idle = crate::subscription::IdleBackoff::new(self.poll_interval);
        'lease: while !crate::subscription::stop_requested(&stopped) {
            // Take the lease and start from the checkpoint it was taken at.
            let held = match &ownership {
                Some(ownership) => match ownership.acquire(&mut stopped).await {
                    Some(held) => Some(held),
                    None => break 'lease,
                },
                None => None,
            };
            let mut position = held
                .as_ref()
                .map_or(LogPosition::START, |held| held.lease().position);
            let mut prefetched: Option<Prefetch> = None;
            let mut catching_up = if position == LogPosition::START {
                ProjectionState::Rebuilding
            } else {
                ProjectionState::CatchingUp
            };
            status.send_modify(|s| {
                s.state = catching_up.clone();
                s.position = position;
            });
            while !crate::subscription::stop_requested(&stopped) {
                if held.as_ref().is_some_and(|held| held.is_lost()) {
                    tracing::warn!(projection = P::NAME, "lost the lease; standing by");
                    continue 'lease;
                }
                if let Some(held) = held.as_ref().filter(|held| held.is_paused()) {
                    tracing::info!(projection = P::NAME, "paused by an operator");
                    status.send_modify(|s| s.state = ProjectionState::Paused);
                    prefetched = None;
                    held.wait_while_paused(&mut stopped).await;
                    status.send_modify(|s| s.state = catching_up.clone());
                    continue;
                }
                if let Some(held) = held.as_ref().filter(|held| held.rebuild_requested()) {
                    held.clear_rebuild_request();
                    if self.rebuild_in_place::<P>(held, position, &status).await {
                        position = LogPosition::START;
                        prefetched = None;
                        catching_up = ProjectionState::Rebuilding;
                        status.send_modify(|s| {
                            s.state = ProjectionState::Rebuilding;
                            s.position = position;
                        });
                    }
                    continue;
                }
                let Some(page) = self
                    .next_batch::<P>(
                        position,
                        &filter,
                        &mut prefetched,
                        &mut idle,
                        &mut stopped,
                        &status,
                    )
                    .await
                else {
                    continue;
                };
                // Past the last handled event when the read skipped others:
                // the checkpoint moves there too.
                let next = page.read_to;
                if page.events.len() >= self.batch_size {
                    // Catching up: read the next batch while this one is
                    // applied (the database and the projection work at once).
                    prefetched = Some(Prefetch::start(
                        &self.store,
                        next,
                        self.batch_size,
                        filter.clone(),
                    ));
                }
                let lag = page.events.last().map_or(Duration::ZERO, |last| {
                    (Utc::now() - last.recorded_at).to_std().unwrap_or_default()
                });
                // Positions between the page and the head: an estimate of
                // the events still to read (a rolled back append leaves
                // unused positions), without counting the log.
                let behind = page.head.sequence.saturating_sub(next.sequence);
                let relevant = page.events;
                let outcome = {
                    let mut projection = model.write().await;
                    let batch = Batch {
                        events: &relevant,
                        previous: position,
                        next,
                        lease: held.as_ref().map(|held| held.lease()),
                    };
                    self.target
                        .apply(&mut projection, batch)
                        .instrument(tracing::info_span!(
                            "annals.projection.batch",
                            projection = P::NAME,
                            events = relevant.len()
                        ))
                        .await
                };
                match outcome {
                    Ok(()) => {
                        position = next;
                        progress.applied += relevant.len() as u64;
                        progress.status.send_modify(|s| s.lag_events = behind);
                        crate::observability::telemetry::projection_lag(P::NAME, Some(behind), lag);
                        progress.report(&catching_up, position, lag);
                    }
                    Err(BatchFailure {
                        error: Error::ReaderPaused { .. },
                        ..
                    }) => {
                        // Paused between renewals: nothing of the batch was
                        // stored; wait at the top of the loop.
                        if let Some(held) = &held {
                            held.mark_paused();
                        }
                        prefetched = None;
                    }
                    Err(failure) => {
                        match self.after_failure::<P>(
                            failure,
                            &relevant,
                            &mut progress,
                            &mut position,
                        ) {
                            AfterFailure::StandBy => continue 'lease,
                            AfterFailure::Resume => prefetched = None,
                            AfterFailure::Retry => {
                                wait(&mut stopped, self.retry_delay).await;
                            }
                        }
                    }
                }
            }
            if let Some(held) = held {
                held.release().await;
            }
        }
        status.send_modify(|s| s.state = ProjectionState::Stopped);
        Ok(())
    }

    /// An operator asked for a rebuild: if the request still stands (a
    /// renewal may have seen it just before the last rebuild cleared it),
    /// empties the read model and moves the checkpoint back to the start.
    /// `true` if it did. A target's refusal withdraws the request; any other
    /// failure leaves it for the next renewal; both show in the status.
    async fn rebuild_in_place<P>(
        &self,
        held: &crate::checkpoint::HeldLease,
        position: LogPosition,
        status: &watch::Sender<ProjectionStatus>,
    ) -> bool
    where
        P: Projection,
        T: ProjectionTarget<P>,
    {
        let Some(checkpoints) = self.target.checkpoints() else {
            return false;
        };
        let name = Self::checkpoint_name::<P>();
        match checkpoints.load(&name).await {
            Ok(Some(row)) if row.rebuild_requested => {}
            Ok(_) => return false,
            Err(error) => {
                status.send_modify(|s| s.last_error = Some(error.to_string()));
                return false;
            }
        }
        match self.target.rebuild(held.lease(), position).await {
            Ok(()) => {
                tracing::info!(
                    projection = P::NAME,
                    "rebuilding in place, as an operator asked"
                );
                true
            }
            Err(error @ Error::InvalidInput { .. }) => {
                // This projection or target cannot be rebuilt in place:
                // withdraw the request rather than refuse it at every renewal.
                tracing::warn!(projection = P::NAME, %error, "cannot rebuild in place");
                let withdrawn = checkpoints.request_rebuild(&name, false).await;
                status.send_modify(|s| {
                    s.last_error = Some(match withdrawn {
                        Ok(_) => format!("rebuild refused: {error}"),
                        Err(withdraw) => format!(
                            "rebuild refused: {error}; withdrawing the request failed: {withdraw}"
                        ),
                    });
                });
                false
            }
            Err(error) => {
                // A failure on the way (the database, a lost lease, a moved
                // checkpoint): the request stands, and the next renewal
                // brings it back to whoever owns the projection then.
                tracing::warn!(projection = P::NAME, %error, "the rebuild failed; it will be tried again");
                status.send_modify(|s| s.last_error = Some(format!("rebuild failed: {error}")));
                false
            }
        }
    }

    /// The lease this runner works under, if its target keeps checkpoints;
    /// its changes show in the status.
    fn ownership<P: Projection>(
        &self,
        status: &Arc<watch::Sender<ProjectionStatus>>,
    ) -> Option<crate::checkpoint::Ownership>
    where
        T: ProjectionTarget<P>,
    {
        let checkpoints = self.target.checkpoints()?;
        let status = Arc::clone(status);
        Some(crate::checkpoint::Ownership::new(
            checkpoints,
            Self::checkpoint_name::<P>(),
            self.worker.clone(),
            self.lease,
            Arc::new(move |ownership: OwnershipStatus, error: Option<String>| {
                status.send_modify(|s| {
                    if !ownership.held {
                        s.state = ProjectionState::Standby;
                    }
                    s.ownership = Some(ownership);
                    if error.is_some() {
                        s.last_error = error;
                    }
                });
            }),
        ))
    }

    /// The batch after `position` (the prefetched one if it starts there),
    /// or `None` when there is nothing to apply yet: the read failed (shown
    /// in the status; retried after the retry delay) or the log is read to
    /// its end (the projection is running; it waits for an append).
    async fn next_batch<P: Projection>(
        &self,
        position: LogPosition,
        filter: &LogFilter,
        prefetched: &mut Option<Prefetch>,
        idle: &mut crate::subscription::IdleBackoff,
        stopped: &mut watch::Receiver<bool>,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Option<LogPage> {
        // A prefetched batch was read before the watch was armed: an empty
        // one is read again rather than waited on.
        let (read, prefetched_read) = match prefetched.take() {
            Some(prefetch) if prefetch.from == position => (prefetch.batch().await, true),
            _ => {
                idle.arm();
                (
                    self.store.read_log(position, self.batch_size, filter).await,
                    false,
                )
            }
        };
        match read {
            Err(error) => {
                status.send_modify(|s| {
                    s.state = ProjectionState::Failed;
                    s.last_error = Some(error.to_string());
                });
                wait(stopped, self.retry_delay).await;
                None
            }
            Ok(page) if page.events.is_empty() && page.read_to <= position => {
                crate::observability::telemetry::projection_caught_up(P::NAME);
                status.send_modify(|s| {
                    s.state = ProjectionState::Running;
                    s.lag_events = 0;
                });
                if !prefetched_read {
                    idle.wait(&*self.store, stopped).await;
                }
                None
            }
            Ok(page) => {
                idle.reset();
                Some(page)
            }
        }
    }

    /// What a failed batch means for the loop, with the position moved to
    /// what the target kept.
    fn after_failure<P: Projection>(
        &self,
        failure: BatchFailure,
        relevant: &[RecordedEvent],
        progress: &mut Progress<'_>,
        position: &mut LogPosition,
    ) -> AfterFailure {
        match failure {
            BatchFailure {
                error: Error::LeaseLost { .. },
                ..
            } => {
                // Another worker took over: nothing of this batch was
                // committed; stand by.
                tracing::warn!(projection = P::NAME, "lost the lease; standing by");
                AfterFailure::StandBy
            }
            BatchFailure {
                error: Error::CheckpointMoved { found, .. },
                ..
            } => {
                // An operator moved the checkpoint: carry on from there
                // (nothing of this batch was applied).
                tracing::info!(projection = P::NAME, %found, "the checkpoint was moved; resuming there");
                *position = found;
                AfterFailure::Resume
            }
            BatchFailure {
                applied: kept,
                error,
            } => {
                // Only what the target kept counts (nothing of a rolled back
                // transaction); the rest of the batch is retried.
                if let Some(last_kept) = kept.checked_sub(1).and_then(|i| relevant.get(i)) {
                    *position = last_kept.position;
                    progress.applied += kept as u64;
                }
                tracing::warn!(projection = P::NAME, %error, "projection batch failed; retrying");
                let (position, applied) = (*position, progress.applied);
                progress.status.send_modify(|s| {
                    s.state = ProjectionState::Failed;
                    s.position = position;
                    s.applied = applied;
                    s.last_error = Some(error.to_string());
                });
                AfterFailure::Retry
            }
        }
    }
}

/// A run's counters, reported in its status.
struct Progress<'a> {
    status: &'a watch::Sender<ProjectionStatus>,
    started: Instant,
    /// Events applied since the start.
    applied: u64,
}

impl Progress<'_> {
    /// Reports a batch applied: the position, the counts, the rate.
    fn report(&self, state: &ProjectionState, position: LogPosition, lag: Duration) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let applied = self.applied;
        self.status.send_modify(|s| {
            s.state = state.clone();
            s.position = position;
            s.applied = applied;
            s.lag = lag;
            s.per_second = if elapsed > 0.0 {
                applied as f64 / elapsed
            } else {
                0.0
            };
            s.last_error = None;
        });
    }
}

/// What the loop does after a failed batch.
enum AfterFailure {
    /// The lease was lost: stand by for it.
    StandBy,
    /// The checkpoint was moved: go on from there.
    Resume,
    /// Retry the rest of the batch after the retry delay.
    Retry,
}

/// The next batch of the log, being read while the current one is applied.
/// Used only if the runner then reads from where it started; dropping it
/// stops the read.
struct Prefetch {
    from: LogPosition,
    read: tokio::task::JoinHandle<Result<LogPage>>,
}

impl Prefetch {
    fn start(
        store: &Arc<dyn EventStore>,
        from: LogPosition,
        batch_size: usize,
        filter: LogFilter,
    ) -> Self {
        let store = Arc::clone(store);
        Prefetch {
            from,
            read: tokio::spawn(async move { store.read_log(from, batch_size, &filter).await }),
        }
    }

    async fn batch(mut self) -> Result<LogPage> {
        (&mut self.read).await.unwrap_or_else(|error| {
            Err(crate::Error::TaskFailed {
                task: "projection prefetch",
                name: format!("read after {}", self.from),
                source: Box::new(error),
            })
        })
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.read.abort();
    }
}

/// Sleeps; `true` if the runner was stopped meanwhile.
async fn wait(stopped: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    tokio::time::timeout(duration, stopped.wait_for(|stop| *stop))
        .await
        .is_ok()
}

/// A projection running in the background: its read model
/// ([`read`](Self::read)) and its [`TaskHandle`], whose methods it has too
/// (`status`, `updates`, `wait_until`, `request_stop`).
/// [`stop`](Self::stop) ends it and waits; dropping it ends it too, after
/// the batch in hand, without waiting, and gives its lease up.
#[derive(Debug)]
pub struct RunningProjection<P> {
    model: Arc<RwLock<P>>,
    task: TaskHandle<ProjectionStatus, ()>,
}

impl<P> std::ops::Deref for RunningProjection<P> {
    type Target = TaskHandle<ProjectionStatus, ()>;

    fn deref(&self) -> &Self::Target {
        &self.task
    }
}

impl<P> RunningProjection<P> {
    /// Read access to the read model (held between batches).
    pub async fn read(&self) -> tokio::sync::RwLockReadGuard<'_, P> {
        self.model.read().await
    }

    /// Blue/green switch: keeps this (live) version running while `next` (a
    /// new version, building beside it from the start of the log) catches
    /// up, at most `timeout`, then stops this one and returns `next` as the
    /// live projection. Readers keep reading this version until the switch;
    /// when the time runs out ([`Error::WaitTimedOut`]) both run on.
    pub async fn replace_when_caught_up<Q>(
        self,
        next: RunningProjection<Q>,
        timeout: std::time::Duration,
    ) -> Result<RunningProjection<Q>> {
        next.wait_until(timeout, |status| status.state == ProjectionState::Running)
            .await?;
        self.stop().await?;
        Ok(next)
    }

    /// Stops after the batch in hand ([`TaskHandle::stop`]).
    pub async fn stop(self) -> Result<()> {
        self.task.stop().await
    }
}
