//! The PostgreSQL event store: production storage with a gap-safe global log.
//!
//! # How appends stay correct without locks
//!
//! An append is one SQL statement (one round trip, its own transaction). Its
//! CTEs read every target stream's head from the statement's snapshot, check
//! the expected versions, and insert all events with versions `head + 1..`
//! through `UNNEST`. Two writers racing for the same version collide on the
//! `(stream_id, version)` unique constraint; the loser's statement is re-run
//! and then reports a [`VersionConflict`](crate::Error::VersionConflict) (or,
//! for [`ExpectedVersion::Any`](crate::ExpectedVersion::Any), appends after
//! the winner).
//!
//! # Why the global log has no gaps
//!
//! Identity values (`position`) are handed out when rows are inserted, not
//! when transactions commit, so a reader that orders by `position` alone can
//! pass position 10 (committed) while position 9 is still in flight, and never
//! see 9. Every row therefore records its transaction id (`xid8`), and
//! [`read_all`](super::EventStore::read_all) returns only rows whose
//! transaction is older than `pg_snapshot_xmin(pg_current_snapshot())`: every
//! transaction below that horizon has finished, so no row can appear below it
//! later. Rows are ordered by `(transaction_id, position)`, which is what a
//! [`LogPosition`] holds, so resuming after a saved position is exact.
//!
//! Each stream's events are in version order in that log: an append reads the
//! heads in its statement snapshot and only gets a transaction id afterwards,
//! when it first inserts; so an event that follows another in its stream was
//! written by a transaction whose id is larger.
//!
//! # The hash chain
//!
//! The same statement computes each event's link (see
//! [`hash_chain`](crate::hash_chain)) in SQL, over the `jsonb` it stores:
//! `annals_chain(head_link, annals_event_digest(..))` as a window over each
//! stream's new events, from the head link read with the head version. Two
//! writers chaining onto one head collide on `(stream_id, version)` like any
//! other race, so a chain never forks.
//!
//! The price: a transaction that stays open (of any kind, on any database of
//! the cluster) holds the horizon back, and the log's readers wait for it.
//! Keep transactions short.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, QueryBuilder};

use super::group_commit::{GroupCommit, GroupCommitStatus};
use super::migrations::{self, HISTORY_TABLE};
use super::row::{limit, to_i64};
use super::table_names::TableNames;
use super::tenancy::check_one_holder;
use super::tenant_roles::PoolRole;
use super::tenant_session::{self, Session};
use super::{
    AppendResult, EventQuery, EventStore, LogFilter, LogPage, QueryPage, StreamAppend, StreamInfo,
    StreamQuery,
};
use crate::aggregate::snapshot::SnapshotStore;
use crate::error::{Error, Result};
use crate::event::envelope::RecordedEvent;
use crate::hash_chain::{ChainKeys, ChainReport};
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;
use crate::subscription::dead_letter::DeadLetterStore;

use dead_letters::PostgresDeadLetters;
use snapshots::PostgresSnapshots;

const BACKEND: &str = "postgres";

/// `SELECT <every column> FROM annals_events`, optionally followed by a clause.
macro_rules! select_events {
    () => {
        concat!("SELECT ", event_columns!(), " FROM annals_events")
    };
    ($clause:literal) => {
        concat!(select_events!(), " ", $clause)
    };
}

/// Every column of an event, in the order `decode_row` reads them. The
/// commit (`xid8`) is sent as it is and read as the 8-byte integer its
/// binary form is: casting it through text to `bigint` on the server was
/// an eighth of the server's time for a page (`COPY ... TO '/dev/null'
/// (FORMAT binary)` of a million events: 1.79 s with the casts, 1.55 s
/// without).
macro_rules! event_columns {
    () => {
        "position, transaction_id AS commit_id, event_id, stream_id, \
         version, event_type, schema_version, payload::text AS payload, tenant_id, \
         correlation_id, causation_id, actor, trace_context, headers::text AS headers, \
         recorded_at, tags"
    };
}

/// The columns of [`event_columns!`] but the metadata, for a reader that
/// never looks at it: not even NULLs in their places, which cost the server
/// and the client a column each per row (`read::Layout::WithoutMetadata`
/// reads them).
macro_rules! event_columns_without_metadata {
    () => {
        "position, transaction_id AS commit_id, event_id, stream_id, \
         version, event_type, schema_version, payload::text AS payload, recorded_at, tags"
    };
}

/// `SELECT <every column>, holders FROM annals_events` and a clause, for a
/// stream's events (`$1`): `holders` counts the tenants with a stream of
/// that id (each has a version 1). More than one can only be seen by the
/// unscoped store, which then cannot tell which stream is meant.
macro_rules! stream_events {
    ($clause:literal) => {
        concat!(
            "SELECT ",
            event_columns!(),
            ", (SELECT count(*) FROM annals_events h \
                WHERE h.stream_id = $1 AND h.version = 1) AS holders \
             FROM annals_events ",
            $clause
        )
    };
}

mod append;
mod builder;
mod chain;
mod dead_letters;
mod import;
mod log_notify;
mod read;
mod replica;
mod restamp;
mod snapshots;
mod tenancy;

use crate::store::EventCriteria;
use crate::store::condition::criteria_tenant;
pub use builder::PostgresStoreBuilder;
use read::{column, push_after, push_criteria, push_filters};
use replica::{ReadKind, Replica};
pub use restamp::RestampReport;

/// An event store in a PostgreSQL database.
///
/// ```no_run
/// use annals::store::{EventStore, PostgresEventStore};
///
/// # async fn run() -> annals::Result<()> {
/// let store = PostgresEventStore::builder("postgres://annals@localhost/annals")
///     .schema("iam")
///     .table_prefix("iam_") // tables iam_events, iam_snapshots, ... (default annals_)
///     .max_connections(16)
///     .connect()
///     .await?;
/// assert_eq!(store.backend(), "postgres");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    pool: PgPool,
    /// A hot standby the log is read from, if configured.
    replica: Option<Replica>,
    /// Woken by `NOTIFY annals_events` for this store's schema; the
    /// listening task starts with the first reader that waits.
    wake: Arc<tokio::sync::OnceCell<Arc<super::AppendSignal>>>,
    /// The prefix of Annals' tables.
    tables: TableNames,
    /// Where concurrent small appends wait to be written together; `None`
    /// when group commit is off.
    group: Option<Arc<GroupCommit>>,
    /// The connections flights are written on (one per flight), with the
    /// append statement's generic plan set for the session, so that a
    /// flight is one statement in autocommit: no `BEGIN`/`SET LOCAL` and
    /// `COMMIT` round trips. `None` when group commit is off.
    flight_pool: Option<PgPool>,
    /// The tenant every statement is confined to (row-level security), for
    /// a handle from [`for_tenant`](Self::for_tenant).
    tenant: Option<Arc<str>>,
    /// The keys new links are signed and verified with; `None`: unkeyed.
    chain_keys: Option<Arc<ChainKeys>>,
    /// The pool's role and whether row-level security passes it by, read
    /// by the first `for_tenant` (handles are often made per request).
    role: Arc<tokio::sync::OnceCell<PoolRole>>,
}

impl PostgresEventStore {
    /// Connects with default options and creates or upgrades Annals' tables.
    pub async fn connect(url: &str) -> Result<Self> {
        PostgresEventStore::builder(url).connect().await
    }

    /// The connection pool, for read models that live in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The tenant this handle is scoped to, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// A connection for one operation (a tenant's transaction if scoped).
    pub(crate) async fn session(&self) -> Result<Session> {
        Session::open(&self.pool, self.tenant.as_deref()).await
    }

    /// A connection for one read of `kind`: on the read replica when one
    /// is configured for it, else on the primary.
    pub(crate) async fn read_session(&self, kind: ReadKind) -> Result<Session> {
        Session::open(self.read_pool(kind), self.tenant.as_deref()).await
    }

    /// The pool reads of `kind` go to.
    pub(crate) fn read_pool(&self, kind: ReadKind) -> &PgPool {
        match (&self.replica, kind) {
            (Some(replica), ReadKind::Log) => &replica.pool,
            (Some(replica), ReadKind::Load) if replica.loads => &replica.pool,
            _ => &self.pool,
        }
    }

    /// A transaction for several statements (with the tenant set if scoped).
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        tenant_session::begin(&self.pool, self.tenant.as_deref()).await
    }

    /// Appends waiting for a group-commit flight and flights being
    /// written, right now (all zero when group commit is off).
    pub fn group_commit_status(&self) -> GroupCommitStatus {
        self.group
            .as_ref()
            .map_or_else(GroupCommitStatus::default, |group| group.status())
    }

    /// The prefix of Annals' tables in this schema (`annals_` unless
    /// [`PostgresStoreBuilder::table_prefix`] set another).
    pub fn table_prefix(&self) -> &str {
        self.tables.prefix()
    }

    pub(crate) fn table_names(&self) -> &TableNames {
        &self.tables
    }

    /// Where this database's schema stands: the migrations its history
    /// records and those this build would apply, with their SQL. Only
    /// reads: connect with [`PostgresStoreBuilder::migrate`]`(false)` to
    /// look before upgrading. See
    /// [`SqliteEventStore::schema_status`](crate::store::SqliteEventStore::schema_status)
    /// for an example.
    pub async fn schema_status(&self) -> Result<migrations::SchemaStatus> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(failed("acquire connection"))?;
        let history: bool = sqlx::query_scalar(
            self.tables
                .sql("SELECT to_regclass('annals_schema_history') IS NOT NULL"),
        )
        .fetch_one(&mut *connection)
        .await
        .map_err(failed("look for schema history"))?;
        let applied: Vec<(i64, String, String)> = if history {
            sqlx::query_as(self.tables.sql(
                "SELECT version, name, applied_at FROM annals_schema_history ORDER BY version",
            ))
            .fetch_all(&mut *connection)
            .await
            .map_err(failed("read schema history"))?
        } else {
            Vec::new()
        };
        Ok(migrations::SchemaStatus::new(
            BACKEND,
            migrations::POSTGRES,
            applied
                .into_iter()
                .map(|(version, name, applied_at)| migrations::AppliedMigration {
                    version,
                    name,
                    applied_at,
                })
                .collect(),
            |sql| self.tables.rename(sql).into_owned(),
        ))
    }

    /// Creates or upgrades Annals' tables in one transaction. Idempotent and
    /// safe to run from several processes at once (an advisory lock
    /// serialises them). Called by [`connect`](Self::connect) unless turned off.
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(failed("begin migration"))?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext('annals.migrate.' || current_schema()))",
        )
        .execute(&mut *tx)
        .await
        .map_err(failed("lock for migration"))?;
        sqlx::raw_sql(self.tables.sql(HISTORY_TABLE))
            .execute(&mut *tx)
            .await
            .map_err(failed("create schema history"))?;
        let applied: i64 = sqlx::query_scalar(
            self.tables
                .sql("SELECT COALESCE(MAX(version), 0)::bigint FROM annals_schema_history"),
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(failed("read schema history"))?;
        for migration in migrations::pending(BACKEND, migrations::POSTGRES, applied)? {
            sqlx::raw_sql(self.tables.sql(migration.sql))
                .execute(&mut *tx)
                .await
                .map_err(failed("apply migration"))?;
            sqlx::query(self.tables.sql(
                "INSERT INTO annals_schema_history (version, name, applied_at) VALUES ($1, $2, $3)",
            ))
            .bind(migration.version)
            .bind(migration.name)
            .bind(Utc::now().to_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(failed("record migration"))?;
        }
        tx.commit().await.map_err(failed("commit migration"))
    }
}

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    super::row::failed(BACKEND, operation)
}

#[async_trait]
impl EventStore for PostgresEventStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn tenant(&self) -> Option<&str> {
        PostgresEventStore::tenant(self)
    }

    #[tracing::instrument(name = "annals.store.append", skip_all, fields(backend = BACKEND, streams = batch.len()))]
    async fn append_batch(&self, batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        crate::observability::telemetry::measured_append(BACKEND, batch, |batch| {
            self.write_batch(batch)
        })
        .await
    }

    #[tracing::instrument(name = "annals.store.stream_version", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let mut session = self.read_session(ReadKind::Load).await?;
        let (version, holders): (i64, i64) = sqlx::query_as(self.tables.sql(
            "SELECT COALESCE((SELECT max(version) FROM annals_events WHERE stream_id = $1), 0)::bigint, \
                    (SELECT count(*) FROM annals_events WHERE stream_id = $1 AND version = 1)",
        ))
        .bind(stream.as_str())
        .fetch_one(session.connection())
        .await
        .map_err(failed("read stream version"))?;
        session.finish().await?;
        check_one_holder(stream, usize::try_from(holders).unwrap_or(usize::MAX))?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    #[tracing::instrument(name = "annals.store.list_streams", skip_all, fields(backend = BACKEND))]
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamInfo>> {
        // The first event of each stream in the order of the stream index
        // (its version column fixed at 1), and the last one found through
        // the same index. Row-level security confines a tenant handle.
        const SQL: &str = "SELECT f.stream_id, f.tenant_id, f.recorded_at, l.version, l.recorded_at \
             FROM annals_events f \
             CROSS JOIN LATERAL (SELECT e.version, e.recorded_at FROM annals_events e \
                 WHERE e.stream_id = f.stream_id \
                   AND coalesce(e.tenant_id, '') = coalesce(f.tenant_id, '') \
                 ORDER BY e.version DESC LIMIT 1) l \
             WHERE f.version = 1 \
               AND ($1::text IS NULL OR starts_with(f.stream_id, $1)) \
               AND ($2::text IS NULL OR (f.stream_id, coalesce(f.tenant_id, '')) > ($2, $3::text)) \
             ORDER BY f.stream_id, coalesce(f.tenant_id, '') LIMIT $4";
        let mut session = self.read_session(ReadKind::Log).await?;
        let rows: Vec<(String, Option<String>, DateTime<Utc>, i64, DateTime<Utc>)> =
            sqlx::query_as(self.tables.sql(SQL))
                .bind(query.prefix.as_deref())
                .bind(query.after.as_ref().map(|(stream, _)| stream.as_str()))
                .bind(query.after.as_ref().map(|(_, tenant)| tenant.as_str()))
                .bind(limit(query.limit))
                .fetch_all(session.connection())
                .await
                .map_err(failed("list streams"))?;
        session.finish().await?;
        Ok(rows
            .into_iter()
            .map(
                |(stream, tenant, created_at, version, updated_at)| StreamInfo {
                    stream_id: StreamId::from_stored(stream),
                    tenant_id: tenant,
                    version: u64::try_from(version).unwrap_or(0),
                    created_at,
                    updated_at,
                },
            )
            .collect())
    }

    #[tracing::instrument(name = "annals.store.read_stream", skip_all, fields(backend = BACKEND, stream = %stream, from_version))]
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        const SQL: &str =
            stream_events!("WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3");
        let query = sqlx::query(self.tables.sql(SQL))
            .bind(stream.as_str())
            .bind(to_i64(from_version))
            .bind(limit(max_count));
        self.fetch_stream_events(query, stream, "read stream").await
    }

    #[tracing::instrument(name = "annals.store.read_stream_backward", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        before_version: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        const SQL: &str =
            stream_events!("WHERE stream_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3");
        let query = sqlx::query(self.tables.sql(SQL))
            .bind(stream.as_str())
            .bind(before_version.map_or(i64::MAX, to_i64))
            .bind(limit(max_count));
        self.fetch_stream_events(query, stream, "read stream backward")
            .await
    }

    #[tracing::instrument(name = "annals.store.read_all", skip_all, fields(backend = BACKEND, after = %after))]
    async fn read_all(&self, after: LogPosition, max_count: usize) -> Result<Vec<RecordedEvent>> {
        const SQL: &str = select_events!(
            "WHERE (transaction_id, position) > ($1::text::xid8, $2) \
               AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY transaction_id, position LIMIT $3"
        );
        let query = sqlx::query(self.tables.sql(SQL))
            .bind(after.commit.to_string())
            .bind(to_i64(after.sequence))
            .bind(limit(max_count));
        self.fetch_events(query, "read log", ReadKind::Log).await
    }

    #[tracing::instrument(name = "annals.store.read_log", skip_all, fields(backend = BACKEND, after = %after))]
    async fn read_log(
        &self,
        after: LogPosition,
        max_count: usize,
        filter: &LogFilter,
    ) -> Result<LogPage> {
        let mut sql = read::log_page(&self.tables, after, max_count, filter);
        let settings = read::log_page_settings(filter);
        let layout = read::Layout::of(filter);
        self.fetch_log_page(sql.build(), after, max_count, settings, layout)
            .await
    }

    #[tracing::instrument(name = "annals.store.query", skip_all, fields(backend = BACKEND))]
    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        let by_tag_index = !query.tags.is_empty() && !query.in_recorded_order();
        let mut sql = match query.tags.first() {
            // A query by tag in log order walks the tag's index entries
            // from the cursor and looks each event up, stopping at the page:
            // its cost is the page, however many events the tag has.
            Some(tag) if by_tag_index => {
                let mut sql = QueryBuilder::<Postgres>::new(self.tables.rename(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM (SELECT position AS tagged FROM annals_event_tags WHERE tag = "
                )));
                sql.push_bind(tag.clone())
                    .push(" AND position > ")
                    .push_bind(to_i64(query.after.sequence))
                    .push(
                        self.tables
                            .rename(") t JOIN annals_events ON position = t.tagged WHERE TRUE"),
                    );
                sql
            }
            _ => {
                let mut sql = QueryBuilder::<Postgres>::new(self.tables.rename(select_events!()));
                sql.push(" WHERE ");
                push_after(&mut sql, query);
                sql
            }
        };
        push_filters(&mut sql, query, &self.tables, usize::from(by_tag_index));
        sql.push(query.order_by_sql());
        read::push_limit(&mut sql, query.limit.saturating_add(1));
        let events = self
            .fetch_events(sql.build(), "query", ReadKind::Log)
            .await?;
        Ok(QueryPage::from_overfetch(events, query))
    }

    async fn read_matching(
        &self,
        tenant: Option<&str>,
        criteria: &EventCriteria,
        after: Option<LogPosition>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        criteria.validate()?;
        let tenant = criteria_tenant(self.tenant(), tenant)?;
        let mut sql = QueryBuilder::<Postgres>::new(self.tables.rename(select_events!()));
        sql.push(" WHERE ");
        push_criteria(
            &mut sql,
            &self.tables,
            &tenant,
            criteria,
            after.unwrap_or(LogPosition::START),
        );
        // Gap-safe, as `read_all`: only transactions that can no longer
        // commit late.
        sql.push(
            " AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY transaction_id, position",
        );
        read::push_limit(&mut sql, max_count);
        self.fetch_events(sql.build(), "read matching events", ReadKind::Primary)
            .await
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let mut session = self.read_session(ReadKind::Log).await?;
        let mut sql = QueryBuilder::<Postgres>::new(
            self.tables
                .rename("SELECT COUNT(*) FROM annals_events WHERE "),
        );
        push_after(&mut sql, query);
        push_filters(&mut sql, query, &self.tables, 0);
        let count: i64 = sql
            .build_query_scalar()
            .fetch_one(session.connection())
            .await
            .map_err(failed("count"))?;
        session.finish().await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(PostgresSnapshots(self.clone()))
    }

    fn checkpoints(&self) -> Arc<dyn crate::checkpoint::CheckpointStore> {
        Arc::new(crate::checkpoint::postgres::PostgresCheckpoints::new(
            self.pool.clone(),
            self.tables.clone(),
            self.tenant.clone(),
        ))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::new(PostgresDeadLetters(self.clone()))
    }

    async fn watch_log(&self) -> super::LogWatch {
        match self.wake().await {
            Some(signal) => signal.watch(),
            None => super::LogWatch::polling(),
        }
    }

    #[tracing::instrument(name = "annals.store.verify_stream", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn verify_stream(&self, stream: &StreamId) -> Result<ChainReport> {
        self.verify(Some(stream), &|_| {}).await
    }

    #[tracing::instrument(name = "annals.store.verify_log", skip_all, fields(backend = BACKEND))]
    async fn verify_log(&self) -> Result<ChainReport> {
        self.verify(None, &|_| {}).await
    }
}
