//! The SQLite event store: the embedded default, one file on disk.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite};
use tokio::sync::Mutex;

use super::group_commit::{GroupCommit, GroupCommitStatus};
use super::migrations::{self, HISTORY_TABLE};
use super::row::{limit, to_i64};
use super::table_names::TableNames;
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

use dead_letters::SqliteDeadLetters;
use snapshots::SqliteSnapshots;

const BACKEND: &str = "sqlite";

/// `SELECT <every column> FROM annals_events`, optionally followed by a clause.
macro_rules! select_events {
    () => {
        "SELECT position, commit_id, event_id, stream_id, version, event_type, schema_version, \
         payload, tenant_id, correlation_id, causation_id, actor, trace_context, headers, \
         recorded_at, tags FROM annals_events"
    };
    ($clause:literal) => {
        concat!(select_events!(), " ", $clause)
    };
}

mod append;
mod builder;
mod chain;
mod dead_letters;
mod import;
mod read;
mod snapshots;
mod tenancy;

use crate::store::EventCriteria;
use crate::store::condition::criteria_tenant;
pub use builder::SqliteStoreBuilder;
use chain::seal_unlinked_events;
use read::{column, push_after, push_criteria, push_filters};

/// An event store in a SQLite database file.
///
/// Writers are serialised (`BEGIN IMMEDIATE`, and one writer at a time within
/// the process), so the global log is in commit order. The database runs in
/// WAL mode with `synchronous = FULL`: an append that returned `Ok` survives a
/// crash of the process or the machine.
///
/// ```
/// use annals::store::{EventStore, SqliteEventStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("annals-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = SqliteEventStore::open(dir.join("events.db")).await?;
/// assert_eq!(store.backend(), "sqlite");
///
/// // Another application's tables beside ours in the same file.
/// let other = SqliteEventStore::builder(dir.join("events.db"))
///     .table_prefix("billing_")
///     .open()
///     .await?;
/// assert_eq!(other.table_prefix(), "billing_");
/// let stream = annals::StreamId::new("invoice-1")?;
/// let event = annals::NewEvent::json("billing.invoice.sent", &serde_json::json!({}))?;
/// other.append(&stream, annals::ExpectedVersion::NoStream, vec![event]).await?;
/// assert_eq!(store.stream_version(&stream).await?, 0, "billing_events is a table of its own");
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), annals::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    pool: SqlitePool,
    /// One in-process writer at a time: SQLite has one write lock, and waiting
    /// here is cheaper than spinning on `SQLITE_BUSY`.
    write_gate: Arc<Mutex<()>>,
    /// Wakes this process's log readers after an append commits (other
    /// processes' appends are found by polling).
    appended: Arc<super::AppendSignal>,
    /// The prefix of Annals' tables.
    tables: TableNames,
    /// Where concurrent small appends wait to share a transaction; `None`
    /// when group commit is off.
    group: Option<Arc<GroupCommit>>,
    /// The keys new links are signed and verified with; `None`: unkeyed.
    chain_keys: Option<Arc<ChainKeys>>,
    /// The tenant this handle is scoped to ([`for_tenant`](Self::for_tenant)).
    tenant: Option<Arc<str>>,
}

impl SqliteEventStore {
    /// Opens (creating it if missing) the database file with default options,
    /// and creates or upgrades Annals' tables.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        SqliteEventStore::builder(path).open().await
    }

    /// The tenant this handle is scoped to, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Appends waiting for a group-commit flight and flights being
    /// written, right now (all zero when group commit is off).
    pub fn group_commit_status(&self) -> GroupCommitStatus {
        self.group
            .as_ref()
            .map_or_else(GroupCommitStatus::default, |group| group.status())
    }

    /// The connection pool, for read models that live in the same file.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The prefix of Annals' tables in this database (`annals_` unless
    /// [`SqliteStoreBuilder::table_prefix`] set another).
    pub fn table_prefix(&self) -> &str {
        self.tables.prefix()
    }

    pub(crate) fn table_names(&self) -> &TableNames {
        &self.tables
    }

    /// Where this database's schema stands: the migrations its history
    /// records and those this build would apply, with their SQL. Only
    /// reads: open with [`SqliteStoreBuilder::migrate`]`(false)` to look
    /// before upgrading.
    ///
    /// ```
    /// use annals::store::SqliteEventStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let dir = tempfile::tempdir().map_err(|e| annals::Error::Config(e.to_string()))?;
    /// let path = dir.path().join("events.db");
    /// let fresh = SqliteEventStore::builder(&path).migrate(false).open().await?;
    /// let before = fresh.schema_status().await?;
    /// assert_eq!(before.version(), 0);
    /// assert!(!before.pending.is_empty());
    ///
    /// fresh.migrate().await?;
    /// let after = fresh.schema_status().await?;
    /// assert!(after.is_current());
    /// assert_eq!(after.version(), after.supported);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn schema_status(&self) -> Result<migrations::SchemaStatus> {
        let history: Option<String> = sqlx::query_scalar(self.tables.sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'annals_schema_history'",
        ))
        .fetch_optional(&self.pool)
        .await
        .map_err(failed("look for schema history"))?;
        let applied: Vec<(i64, String, String)> = match history {
            None => Vec::new(),
            Some(_) => sqlx::query_as(self.tables.sql(
                "SELECT version, name, applied_at FROM annals_schema_history ORDER BY version",
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(failed("read schema history"))?,
        };
        Ok(migrations::SchemaStatus::new(
            BACKEND,
            migrations::SQLITE,
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

    /// Creates or upgrades Annals' tables. Idempotent; called by
    /// [`open`](Self::open) unless turned off.
    pub async fn migrate(&self) -> Result<()> {
        let _writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin migration"))?;
        sqlx::raw_sql(self.tables.sql(HISTORY_TABLE))
            .execute(&mut *tx)
            .await
            .map_err(failed("create schema history"))?;
        let applied: i64 = sqlx::query_scalar(
            self.tables
                .sql("SELECT COALESCE(MAX(version), 0) FROM annals_schema_history"),
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(failed("read schema history"))?;
        // Events stored before the hash chain get their links once every
        // migration has run (the rows they read have every column then).
        let mut sealing = false;
        for migration in migrations::pending(BACKEND, migrations::SQLITE, applied)? {
            sqlx::raw_sql(self.tables.sql(migration.sql))
                .execute(&mut *tx)
                .await
                .map_err(failed("apply migration"))?;
            sealing |= migration.name == "hash_chain";
            sqlx::query(self.tables.sql(
                "INSERT INTO annals_schema_history (version, name, applied_at) VALUES (?, ?, ?)",
            ))
            .bind(migration.version)
            .bind(migration.name)
            .bind(Utc::now().to_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(failed("record migration"))?;
        }
        if sealing {
            seal_unlinked_events(&self.tables, &mut tx).await?;
        }
        tx.commit().await.map_err(failed("commit migration"))
    }
}

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    super::row::failed(BACKEND, operation)
}

#[async_trait]
impl EventStore for SqliteEventStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn tenant(&self) -> Option<&str> {
        SqliteEventStore::tenant(self)
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
        let owner = self.stream_owner(stream).await?;
        let version: i64 = sqlx::query_scalar(self.tables.sql(
            "SELECT COALESCE(MAX(version), 0) FROM annals_events \
             WHERE stream_id = ? AND COALESCE(tenant_id, '') = ?",
        ))
        .bind(stream.as_str())
        .bind(owner)
        .fetch_one(&self.pool)
        .await
        .map_err(failed("read stream version"))?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    #[tracing::instrument(name = "annals.store.list_streams", skip_all, fields(backend = BACKEND))]
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamInfo>> {
        // The first event of each stream, in the order of the stream index
        // (version 1 fixed), and the last one found through the same index.
        const SQL: &str = "SELECT f.stream_id, f.tenant_id, f.recorded_at, \
                (SELECT max(l.version) FROM annals_events l \
                  WHERE l.stream_id = f.stream_id AND COALESCE(l.tenant_id, '') = COALESCE(f.tenant_id, '')) AS version, \
                (SELECT l.recorded_at FROM annals_events l \
                  WHERE l.stream_id = f.stream_id AND COALESCE(l.tenant_id, '') = COALESCE(f.tenant_id, '') \
                  ORDER BY l.version DESC LIMIT 1) AS updated_at \
             FROM annals_events f \
             WHERE f.version = 1 \
               AND (?1 IS NULL OR substr(f.stream_id, 1, length(?1)) = ?1) \
               AND (?2 IS NULL OR (f.stream_id, COALESCE(f.tenant_id, '')) > (?2, ?3)) \
               AND (?4 IS NULL OR f.tenant_id = ?4) \
             ORDER BY f.stream_id, COALESCE(f.tenant_id, '') LIMIT ?5";
        let rows: Vec<(String, Option<String>, i64, i64, i64)> =
            sqlx::query_as(self.tables.sql(SQL))
                .bind(query.prefix.as_deref())
                .bind(query.after.as_ref().map(|(stream, _)| stream.as_str()))
                .bind(query.after.as_ref().map(|(_, tenant)| tenant.as_str()))
                .bind(self.tenant.as_deref())
                .bind(limit(query.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(failed("list streams"))?;
        rows.into_iter()
            .map(|(stream, tenant, created, version, updated)| {
                let time = |micros: i64| {
                    chrono::DateTime::from_timestamp_micros(micros).ok_or_else(|| Error::Backend {
                        backend: BACKEND,
                        operation: "list streams",
                        source: format!("stream `{stream}`: recorded_at {micros} is out of range")
                            .into(),
                    })
                };
                Ok(StreamInfo {
                    created_at: time(created)?,
                    updated_at: time(updated)?,
                    version: u64::try_from(version).unwrap_or(0),
                    stream_id: StreamId::from_stored(stream),
                    tenant_id: tenant,
                })
            })
            .collect()
    }

    #[tracing::instrument(name = "annals.store.read_stream", skip_all, fields(backend = BACKEND, stream = %stream, from_version))]
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        const SQL: &str = select_events!(
            "WHERE stream_id = ? AND COALESCE(tenant_id, '') = ? AND version >= ? ORDER BY version LIMIT ?"
        );
        let owner = self.stream_owner(stream).await?;
        let query = sqlx::query(self.tables.sql(SQL))
            .bind(stream.as_str())
            .bind(owner)
            .bind(to_i64(from_version))
            .bind(limit(max_count));
        self.fetch_events(query, "read stream").await
    }

    #[tracing::instrument(name = "annals.store.read_stream_backward", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        before_version: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        const SQL: &str = select_events!(
            "WHERE stream_id = ? AND COALESCE(tenant_id, '') = ? AND version < ? ORDER BY version DESC LIMIT ?"
        );
        let owner = self.stream_owner(stream).await?;
        let query = sqlx::query(self.tables.sql(SQL))
            .bind(stream.as_str())
            .bind(owner)
            .bind(before_version.map_or(i64::MAX, to_i64))
            .bind(limit(max_count));
        self.fetch_events(query, "read stream backward").await
    }

    #[tracing::instrument(name = "annals.store.read_all", skip_all, fields(backend = BACKEND, after = %after))]
    async fn read_all(&self, after: LogPosition, max_count: usize) -> Result<Vec<RecordedEvent>> {
        // Writers are serialised, so sequence order is commit order and the
        // sequence alone locates a position.
        const SQL: &str = select_events!("WHERE position > ? ORDER BY position LIMIT ?");
        const TENANT_SQL: &str =
            select_events!("WHERE tenant_id = ? AND position > ? ORDER BY position LIMIT ?");
        let query = match self.tenant.as_deref() {
            None => sqlx::query(self.tables.sql(SQL)),
            Some(tenant) => sqlx::query(self.tables.sql(TENANT_SQL)).bind(tenant),
        }
        .bind(to_i64(after.sequence))
        .bind(limit(max_count));
        self.fetch_events(query, "read log").await
    }

    #[tracing::instrument(name = "annals.store.read_log", skip_all, fields(backend = BACKEND, after = %after))]
    async fn read_log(
        &self,
        after: LogPosition,
        max_count: usize,
        filter: &LogFilter,
    ) -> Result<LogPage> {
        // The head first, then the page up to it: writers are serialised
        // and positions are in commit order, so every event up to the head
        // is committed, and the page misses none of them.
        let mut head_sql = QueryBuilder::<Sqlite>::new(
            self.tables
                .rename("SELECT commit_id, position FROM annals_events WHERE 1 = 1"),
        );
        self.push_scope(&mut head_sql);
        head_sql.push(" ORDER BY position DESC LIMIT 1");
        let head = head_sql
            .build_query_as::<(i64, i64)>()
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("read log"))?
            .map_or(after, |(commit, sequence)| {
                crate::store::row::position_from_columns(commit, sequence)
            })
            .max(after);
        let mut sql = QueryBuilder::<Sqlite>::new(self.tables.rename(select_events!()));
        sql.push(" WHERE position > ")
            .push_bind(to_i64(after.sequence))
            .push(" AND position <= ")
            .push_bind(to_i64(head.sequence));
        self.push_scope(&mut sql);
        if let Some(types) = filter.types() {
            sql.push(" AND event_type IN (SELECT value FROM json_each(")
                .push_bind(serde_json::Value::from(types.to_vec()).to_string())
                .push("))");
        }
        sql.push(" ORDER BY position LIMIT ")
            .push_bind(limit(max_count));
        let mut events = self.fetch_events(sql.build(), "read log").await?;
        filter.strip_metadata(&mut events);
        Ok(LogPage::new(events, after, max_count, head))
    }

    #[tracing::instrument(name = "annals.store.query", skip_all, fields(backend = BACKEND))]
    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        let mut sql = QueryBuilder::<Sqlite>::new(self.tables.rename(select_events!()));
        sql.push(" WHERE ");
        push_after(&mut sql, query);
        self.push_scope(&mut sql);
        push_filters(&mut sql, query, &self.tables);
        sql.push(query.order_by_sql())
            .push(" LIMIT ")
            .push_bind(limit(query.limit.saturating_add(1)));
        let events = self.fetch_events(sql.build(), "query").await?;
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
        let after = to_i64(after.unwrap_or(LogPosition::START).sequence);
        let mut sql = QueryBuilder::<Sqlite>::new(self.tables.rename(select_events!()));
        sql.push(" WHERE ");
        push_criteria(&mut sql, &self.tables, &tenant, criteria, after);
        sql.push(" ORDER BY position LIMIT ")
            .push_bind(limit(max_count));
        self.fetch_events(sql.build(), "read matching events").await
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            self.tables
                .rename("SELECT COUNT(*) FROM annals_events WHERE "),
        );
        push_after(&mut sql, query);
        self.push_scope(&mut sql);
        push_filters(&mut sql, query, &self.tables);
        let count: i64 = sql
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(failed("count"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(SqliteSnapshots(self.clone()))
    }

    fn checkpoints(&self) -> Arc<dyn crate::checkpoint::CheckpointStore> {
        Arc::new(crate::checkpoint::sqlite::SqliteCheckpoints::new(
            self.pool.clone(),
            self.tables.clone(),
            self.own_tenant(),
        ))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::new(SqliteDeadLetters(self.clone()))
    }

    async fn watch_log(&self) -> super::LogWatch {
        self.appended.watch()
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
