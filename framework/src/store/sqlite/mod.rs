//! The SQLite event store: the embedded default, one file on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::append::{apply_inline, next_version, validate_batch};
use super::group_commit::{
    FlightFailure, FlightWriter, GroupCommit, GroupCommitOptions, GroupCommitStatus, QueuedAppend,
    submit,
};
use super::migrations::{self, HISTORY_TABLE};
use super::row::{RowIdentity, StoredRow, limit, to_i64};
use super::table_names::TableNames;
use super::{AppendResult, EventQuery, EventStore, QueryPage, StreamAppend};
use crate::dead_letter::DeadLetterStore;
use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::hash_chain::{
    ChainKeys, ChainReport, ChainResigner, ChainSigner, ChainVerifier, EventHash, LinkFormat,
    StoredEvent,
};
use crate::metadata::headers_json;
use crate::position::LogPosition;
use crate::snapshot::SnapshotStore;
use crate::sql_read_model::SqliteContext as _;
use crate::stream::StreamId;

mod dead_letters;
mod snapshots;

use dead_letters::SqliteDeadLetters;
use snapshots::SqliteSnapshots;

const BACKEND: &str = "sqlite";

/// `SELECT <every column> FROM annals_events`, optionally followed by a clause.
macro_rules! select_events {
    () => {
        "SELECT position, commit_id, event_id, stream_id, version, event_type, schema_version, \
         payload, tenant_id, correlation_id, causation_id, actor, trace_context, headers, \
         recorded_at FROM annals_events"
    };
    ($clause:literal) => {
        concat!(select_events!(), " ", $clause)
    };
}

/// `SELECT` of an event's position, the columns its link covers and its
/// stored link, followed by a clause (each stream in version order: the
/// unique index's order).
macro_rules! chain_rows {
    ($clause:literal) => {
        concat!(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, \
             payload, tenant_id, correlation_id, causation_id, actor, trace_context, headers, \
             recorded_at, hash, commit_id, chain_key FROM annals_events ",
            $clause
        )
    };
}

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

/// Options for opening a [`SqliteEventStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    max_connections: u32,
    busy_timeout: Duration,
    migrate: bool,
    table_prefix: Option<String>,
    group_commit: Option<GroupCommitOptions>,
    chain_keys: Option<ChainKeys>,
}

impl SqliteStoreBuilder {
    /// Names Annals' tables `{prefix}events`, `{prefix}snapshots`, ...
    /// instead of `annals_events`, ... (1 to 32 lowercase letters, digits or
    /// underscores). Tables made by `annals-codegen` with the same prefix are
    /// used as they are.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = Some(prefix.into());
        self
    }

    /// Most connections in the pool (default 4).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long to wait for another process's write lock (default 10 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How concurrent small appends share a transaction (on by default,
    /// with one flight: SQLite has one writer).
    ///
    /// Appends that arrive while another is being written queue and are
    /// then written in one transaction, each in a savepoint of its own: a
    /// caller's version conflict or duplicate event id undoes only its own
    /// events, and every caller gets its own result. With `synchronous =
    /// FULL` a commit is a disk flush, so sharing one is the main saving. A
    /// lone writer never waits. An append whose caller stops waiting (its
    /// future dropped) is still written.
    ///
    /// ```
    /// use annals::store::{GroupCommitOptions, SqliteEventStore};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteEventStore::builder(dir.path().join("events.db"))
    ///     .group_commit(GroupCommitOptions { max_flight_events: 256, ..GroupCommitOptions::default() })
    ///     .open()
    ///     .await?;
    /// assert_eq!(store.group_commit_status().queued, 0);
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn group_commit(mut self, options: GroupCommitOptions) -> Self {
        self.group_commit = Some(options);
        self
    }

    /// Writes every append in its own transaction.
    pub fn without_group_commit(mut self) -> Self {
        self.group_commit = None;
        self
    }

    /// Signs the hash chain's links with a key the database file does not
    /// hold, and verifies with these keys only (see
    /// [`hash_chain`](crate::hash_chain) for what that detects).
    ///
    /// ```
    /// use annals::hash_chain::{ChainKey, ChainKeys};
    /// use annals::store::{EventStore, SqliteEventStore};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let key = ChainKey::from_hex(1, &"5e".repeat(32))?; // from a secret store in real use
    /// let store = SqliteEventStore::builder(dir.path().join("events.db"))
    ///     .chain_keys(ChainKeys::new(key))
    ///     .open()
    ///     .await?;
    /// assert!(store.verify_log().await?.is_intact());
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn chain_keys(mut self, keys: ChainKeys) -> Self {
        self.chain_keys = Some(keys);
        self
    }

    /// Whether to create and upgrade Annals' tables on open (default `true`).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Opens (creating it if missing) the database file.
    pub async fn open(self) -> Result<SqliteEventStore> {
        let group = match self.group_commit {
            Some(options) => Some(Arc::new(GroupCommit::new(options)?)),
            None => None,
        };
        let tables = match &self.table_prefix {
            Some(prefix) => TableNames::new(prefix)?,
            None => TableNames::default(),
        };
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| {
                Error::Config(format!(
                    "cannot create the directory {} for the SQLite event store: {error}",
                    parent.display()
                ))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(self.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(self.max_connections)
            .connect_with(options)
            .await
            .map_err(|error| Error::Backend {
                backend: BACKEND,
                operation: "open",
                source: format!("cannot open {}: {error}", self.path.display()).into(),
            })?;
        let store = SqliteEventStore {
            pool,
            write_gate: Arc::new(Mutex::new(())),
            appended: Arc::default(),
            tables,
            group,
            chain_keys: self.chain_keys.map(Arc::new),
            tenant: None,
        };
        if self.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

impl SqliteEventStore {
    /// Opens (creating it if missing) the database file with default options,
    /// and creates or upgrades Annals' tables.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        SqliteEventStore::builder(path).open().await
    }

    /// Options for opening the database file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_owned(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(10),
            migrate: true,
            table_prefix: None,
            group_commit: Some(GroupCommitOptions::default()),
            chain_keys: None,
        }
    }

    /// A handle on the same file scoped to `tenant`: it reads, queries and
    /// replays only the tenant's events, snapshots, checkpoints, dead letters
    /// and data subjects, and stamps the tenant on the events it appends
    /// (refusing events that name another tenant). Stream ids belong to
    /// their tenant, as on PostgreSQL: `acme`'s `user-1` and `globex`'s
    /// `user-1` are two streams. The unscoped store addresses a stream by its
    /// id alone, and refuses an id several tenants hold
    /// ([`Error::InvalidInput`], field `stream id`).
    ///
    /// SQLite has no row-level security: the scoping is this code's, and
    /// anything with the file (or the pool) reads every tenant.
    ///
    /// ```
    /// use annals::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteEventStore::open(dir.path().join("tenants.db")).await?;
    /// let acme = store.for_tenant("acme")?;
    /// let globex = store.for_tenant("globex")?;
    /// let user = StreamId::new("user-1")?;
    /// let registered = || NewEvent::json("iam.user.registered", &serde_json::json!({}));
    /// acme.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// assert!(globex.read_stream(&user, 1, 100).await?.is_empty());
    /// globex.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// assert!(matches!(store.read_stream(&user, 1, 100).await, Err(Error::InvalidInput { .. })));
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn for_tenant(&self, tenant: impl Into<String>) -> Result<SqliteEventStore> {
        let tenant = tenant.into();
        super::tenancy::validate_tenant_id(&tenant)?;
        Ok(SqliteEventStore {
            tenant: Some(Arc::from(tenant)),
            ..self.clone()
        })
    }

    /// The tenant this handle is scoped to, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The tenant this handle keeps its own rows under (`""` unscoped).
    fn own_tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or("")
    }

    /// A tenant handle's condition on events, after the query's first one.
    fn push_scope(&self, sql: &mut QueryBuilder<Sqlite>) {
        if let Some(tenant) = self.tenant.as_deref() {
            sql.push(" AND tenant_id = ").push_bind(tenant.to_owned());
        }
    }

    /// A tenant handle's appends carry its tenant.
    fn stamp(&self, batch: &mut [StreamAppend]) -> Result<()> {
        if let Some(tenant) = self.tenant.as_deref() {
            for append in batch {
                super::tenancy::stamp_tenant(tenant, &mut append.events)?;
            }
        }
        Ok(())
    }

    /// The tenant whose stream `stream` means: this handle's, or for the
    /// unscoped store the one tenant holding the id (refused when several
    /// do; `""` when none does).
    async fn stream_owner(&self, stream: &StreamId) -> Result<String> {
        if let Some(tenant) = self.tenant.as_deref() {
            return Ok(tenant.to_owned());
        }
        let holders: Vec<String> = sqlx::query_scalar(self.tables.sql(
            "SELECT COALESCE(tenant_id, '') FROM annals_events WHERE stream_id = ? AND version = 1",
        ))
        .bind(stream.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(failed("find the stream's tenant"))?;
        super::tenancy::check_one_holder(stream, holders.len())?;
        Ok(holders.into_iter().next().unwrap_or_default())
    }

    /// Appends and applies an inline `projection` to the new events in the
    /// same transaction: the read model changes exactly when the events are
    /// stored, and a projection failure aborts the append (nothing written).
    pub async fn append_inline<P>(
        &self,
        mut batch: Vec<StreamAppend>,
        projection: &mut P,
    ) -> Result<Vec<AppendResult>>
    where
        P: crate::projection::Projection,
        P::Context: crate::sql_read_model::SqliteContext,
    {
        validate_batch(&batch)?;
        self.stamp(&mut batch)?;
        let _writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin append"))?;
        let results = append_in(&self.tables, self.chain_keys.as_deref(), &mut tx, &batch).await?;
        // On error `tx` is dropped: the append rolls back.
        apply_inline(
            projection,
            &batch,
            &results,
            P::Context::from_sqlite(&mut tx),
        )
        .await?;
        tx.commit().await.map_err(failed("commit append"))?;
        self.appended.signal();
        Ok(results)
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

    /// Re-signs every link of the log with the signing key of
    /// [`chain_keys`](SqliteStoreBuilder::chain_keys): how a log written
    /// before the store had keys comes under them, and how a retired key
    /// stops being needed.
    ///
    /// It first verifies the whole log, accepting unkeyed links that match
    /// and keyed links of known keys, and changes nothing when a link is
    /// broken ([`Error::ChainBroken`] names it). In one write transaction,
    /// with the update trigger lifted for it and put back as it was.
    /// Returns the new chain's report.
    ///
    /// ```
    /// use annals::hash_chain::{ChainKey, ChainKeys};
    /// use annals::prelude::*;
    /// use annals::store::SqliteEventStore;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("events.db");
    /// let unkeyed = SqliteEventStore::open(&path).await?;
    /// let event = NewEvent::json("iam.user.registered", &serde_json::json!({}))?;
    /// unkeyed.append(&StreamId::new("user-1")?, ExpectedVersion::NoStream, vec![event]).await?;
    ///
    /// let keyed = SqliteEventStore::builder(&path)
    ///     .chain_keys(ChainKeys::new(ChainKey::new(1, [42; 32])?))
    ///     .open()
    ///     .await?;
    /// assert!(!keyed.verify_log().await?.is_intact(), "the old link is not keyed");
    /// assert_eq!(keyed.resign_chain().await?.events_checked, 1);
    /// assert!(keyed.verify_log().await?.is_intact());
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn resign_chain(&self) -> Result<ChainReport> {
        if let Some(tenant) = self.tenant.as_deref() {
            return Err(Error::Config(format!(
                "re-signing rewrites every tenant's links: a handle scoped to tenant {tenant:?} cannot; use the unscoped store"
            )));
        }
        let keys = self.chain_keys.as_deref().ok_or_else(|| {
            Error::Config(
                "re-signing the hash chain needs keys: open the store with `chain_keys`".into(),
            )
        })?;
        let writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin re-signing"))?;
        let trigger: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?")
                .bind(self.tables.rename("annals_events_no_update").as_ref())
                .fetch_one(&mut *tx)
                .await
                .map_err(failed("read the update trigger"))?;
        sqlx::raw_sql(self.tables.sql("DROP TRIGGER annals_events_no_update"))
            .execute(&mut *tx)
            .await
            .map_err(failed("lift the update trigger"))?;
        let mut verifier = ChainVerifier::accepting_unkeyed(keys);
        let mut resigner = ChainResigner::new(keys);
        let mut links: Vec<(i64, EventHash)> = Vec::new();
        {
            let mut rows = sqlx::query(self.tables.sql(chain_rows!(
                "ORDER BY stream_id, COALESCE(tenant_id, ''), version"
            )))
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(failed("read the chain"))? {
                let (event, found, format) = chain_row(&row)?;
                verifier.check(event.position, &event, found, format);
                links.push((to_i64(event.position), resigner.link(&event)));
            }
        }
        if let Some(first_break) = verifier.finish().first_break {
            // Dropping `tx` rolls back: the trigger stays.
            return Err(Error::ChainBroken {
                first_break: Box::new(first_break),
            });
        }
        for (position, link) in links {
            sqlx::query(
                self.tables
                    .sql("UPDATE annals_events SET hash = ?, chain_key = ? WHERE position = ?"),
            )
            .bind(link.as_bytes().as_slice())
            .bind(resigner.key_column())
            .bind(position)
            .execute(&mut *tx)
            .await
            .map_err(failed("re-sign links"))?;
        }
        // The trigger as it was: its text from `sqlite_master` (already
        // carrying this store's prefix).
        sqlx::raw_sql(sqlx::AssertSqlSafe(trigger))
            .execute(&mut *tx)
            .await
            .map_err(failed("restore the update trigger"))?;
        tx.commit().await.map_err(failed("commit re-signing"))?;
        drop(writer);
        self.verify(None).await
    }

    /// Recomputes the links of one stream or of the whole log, streaming
    /// the rows (one statement: one consistent read).
    async fn verify(&self, stream: Option<&StreamId>) -> Result<ChainReport> {
        let owner = match stream {
            Some(stream) => Some(self.stream_owner(stream).await?),
            None => None,
        };
        let mut rows = match (stream, owner) {
            (Some(stream), Some(owner)) => sqlx::query(self.tables.sql(chain_rows!(
                "WHERE stream_id = ? AND COALESCE(tenant_id, '') = ? ORDER BY version"
            )))
            .bind(stream.as_str())
            .bind(owner)
            .fetch(&self.pool),
            _ => sqlx::query(self.tables.sql(chain_rows!(
                "WHERE ?1 IS NULL OR tenant_id = ?1 \
                 ORDER BY stream_id, COALESCE(tenant_id, ''), version"
            )))
            .bind(self.tenant.as_deref())
            .fetch(&self.pool),
        };
        let mut verifier = ChainVerifier::new(self.chain_keys.as_deref());
        while let Some(row) = rows.try_next().await.map_err(failed("verify hash chain"))? {
            let (event, found, format) = chain_row(&row)?;
            verifier.check(event.position, &event, found, format);
        }
        Ok(verifier.finish())
    }

    async fn fetch_events(
        &self,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
        operation: &'static str,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(failed(operation))?;
        rows.iter().map(decode_row).collect()
    }
}

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    super::row::failed(BACKEND, operation)
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// Column `index` of a `select_events!` row (`name` for the error).
fn column<'r, T>(row: &'r SqliteRow, identity: &RowIdentity, index: usize, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(index)
        .map_err(|error| identity.corrupt(format!("column `{name}` is unreadable: {error}")))
}

/// The columns of an event about to be written that its link covers.
fn new_row<'a>(
    append: &'a StreamAppend,
    version: u64,
    event: &'a NewEvent,
    headers: &'a str,
    recorded_at: i64,
    (commit, position): (i64, i64),
) -> StoredEvent<'a> {
    let metadata = &event.metadata;
    StoredEvent {
        event_id: event.event_id,
        stream_id: append.stream_id.as_str(),
        version,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        payload: event.payload.as_json(),
        tenant_id: metadata.tenant_id.as_deref(),
        correlation_id: metadata.correlation_id,
        causation_id: metadata.causation_id,
        actor: metadata.actor.as_deref(),
        trace_context: metadata.trace_context.as_deref(),
        headers,
        recorded_at_micros: recorded_at,
        position: u64::try_from(position).unwrap_or(0),
        commit_id: u64::try_from(commit).unwrap_or(0),
    }
}

/// A `chain_rows!` row: the columns its link covers, its stored link and
/// how it was made, or the error naming the unreadable column.
fn chain_row(row: &SqliteRow) -> Result<(StoredEvent<'_>, Option<EventHash>, LinkFormat)> {
    let unreadable = RowIdentity::unreadable();
    let identity = RowIdentity {
        stream_id: column(row, &unreadable, 2, "stream_id")?,
        version: column(row, &unreadable, 3, "version")?,
        event_type: column(row, &unreadable, 4, "event_type")?,
    };
    let position: i64 = column(row, &identity, 0, "position")?;
    let version: i64 = column(row, &identity, 3, "version")?;
    let schema_version: i64 = column(row, &identity, 5, "schema_version")?;
    let hash: Option<&[u8]> = column(row, &identity, 14, "hash")?;
    let commit_id: i64 = column(row, &identity, 15, "commit_id")?;
    let event = StoredEvent {
        event_id: column(row, &identity, 1, "event_id")?,
        stream_id: column(row, &identity, 2, "stream_id")?,
        version: u64::try_from(version).unwrap_or(0),
        event_type: column(row, &identity, 4, "event_type")?,
        schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
        payload: column(row, &identity, 6, "payload")?,
        tenant_id: column(row, &identity, 7, "tenant_id")?,
        correlation_id: column(row, &identity, 8, "correlation_id")?,
        causation_id: column(row, &identity, 9, "causation_id")?,
        actor: column(row, &identity, 10, "actor")?,
        trace_context: column(row, &identity, 11, "trace_context")?,
        headers: column(row, &identity, 12, "headers")?,
        recorded_at_micros: column(row, &identity, 13, "recorded_at")?,
        position: u64::try_from(position).unwrap_or(0),
        commit_id: u64::try_from(commit_id).unwrap_or(0),
    };
    // A link of the wrong length is as broken as a wrong link.
    let found = hash.map(|bytes| EventHash::from_slice(bytes).unwrap_or(EventHash::GENESIS));
    let format = LinkFormat::from_column(column(row, &identity, 16, "chain_key")?);
    Ok((event, found, format))
}

/// Gives every event stored before the hash chain existed its link, in the
/// migration's transaction (the update trigger allows exactly this), in the
/// legacy format (`chain_key` NULL) its rows were written in.
async fn seal_unlinked_events(
    tables: &TableNames,
    connection: &mut SqliteConnection,
) -> Result<()> {
    let rows = sqlx::query(tables.sql(chain_rows!("ORDER BY stream_id, version")))
        .fetch_all(&mut *connection)
        .await
        .map_err(failed("read events to seal"))?;
    let mut links: Vec<(i64, EventHash)> = Vec::with_capacity(rows.len());
    let mut previous: Option<(String, EventHash)> = None;
    for row in &rows {
        let (event, _, _) = chain_row(row)?;
        let head = match &previous {
            Some((stream, link)) if stream == event.stream_id => *link,
            _ => EventHash::GENESIS,
        };
        let link = head.next(&event.digest(LinkFormat::Legacy));
        links.push((to_i64(event.position), link));
        previous = Some((event.stream_id.to_owned(), link));
    }
    for (position, link) in links {
        sqlx::query(tables.sql("UPDATE annals_events SET hash = ? WHERE position = ?"))
            .bind(link.as_bytes().as_slice())
            .bind(position)
            .execute(&mut *connection)
            .await
            .map_err(failed("seal events"))?;
    }
    Ok(())
}

fn decode_row(row: &SqliteRow) -> Result<RecordedEvent> {
    let unreadable = RowIdentity::unreadable();
    let identity = RowIdentity {
        stream_id: column(row, &unreadable, 3, "stream_id")?,
        version: column(row, &unreadable, 4, "version")?,
        event_type: column(row, &unreadable, 5, "event_type")?,
    };
    let recorded_at: i64 = column(row, &identity, 14, "recorded_at")?;
    let recorded_at = DateTime::from_timestamp_micros(recorded_at)
        .ok_or_else(|| identity.corrupt(format!("recorded_at {recorded_at} is out of range")))?;
    StoredRow {
        commit: column(row, &identity, 1, "commit_id")?,
        position: column(row, &identity, 0, "position")?,
        event_id: column(row, &identity, 2, "event_id")?,
        schema_version: column(row, &identity, 6, "schema_version")?,
        payload: column(row, &identity, 7, "payload")?,
        tenant_id: column(row, &identity, 8, "tenant_id")?,
        correlation_id: column(row, &identity, 9, "correlation_id")?,
        causation_id: column(row, &identity, 10, "causation_id")?,
        actor: column(row, &identity, 11, "actor")?,
        trace_context: column(row, &identity, 12, "trace_context")?,
        headers: column(row, &identity, 13, "headers")?,
        recorded_at,
        identity,
    }
    .into_recorded()
}

impl FlightWriter for SqliteEventStore {
    const BACKEND: &'static str = BACKEND;

    async fn append_alone(&self, batch: &[StreamAppend]) -> Result<Vec<AppendResult>> {
        let _writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin append"))?;
        let results = append_in(&self.tables, self.chain_keys.as_deref(), &mut tx, batch).await?;
        tx.commit().await.map_err(failed("commit append"))?;
        self.appended.signal();
        Ok(results)
    }

    /// One transaction, each caller's append in a savepoint of its own: a
    /// caller's conflict or duplicate event id undoes only its own events.
    async fn write_together(
        &self,
        flight: &[QueuedAppend],
    ) -> std::result::Result<Vec<Result<Vec<AppendResult>>>, FlightFailure> {
        let failure = |error: sqlx::Error| FlightFailure::Failed(format!("append failed: {error}"));
        let _writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failure)?;
        let mut outcomes = Vec::with_capacity(flight.len());
        for queued in flight {
            sqlx::query("SAVEPOINT annals_append")
                .execute(&mut *tx)
                .await
                .map_err(failure)?;
            let outcome = append_in(
                &self.tables,
                self.chain_keys.as_deref(),
                &mut tx,
                &queued.batch,
            )
            .await;
            if outcome.is_err() {
                sqlx::query("ROLLBACK TO SAVEPOINT annals_append")
                    .execute(&mut *tx)
                    .await
                    .map_err(failure)?;
            }
            sqlx::query("RELEASE SAVEPOINT annals_append")
                .execute(&mut *tx)
                .await
                .map_err(failure)?;
            outcomes.push(outcome);
        }
        tx.commit().await.map_err(failure)?;
        self.appended.signal();
        Ok(outcomes)
    }
}

impl SqliteEventStore {
    /// The append itself (`append_batch` adds its metrics).
    async fn write_batch(&self, mut batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        validate_batch(&batch)?;
        self.stamp(&mut batch)?;
        if let Some(group) = self.group.as_ref().filter(|group| group.accepts(&batch)) {
            return submit(group, self, batch).await;
        }
        self.append_alone(&batch).await
    }
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
        crate::telemetry::measured_append(BACKEND, batch, |batch| self.write_batch(batch)).await
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

    #[tracing::instrument(name = "annals.store.query", skip_all, fields(backend = BACKEND))]
    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        let mut sql = QueryBuilder::<Sqlite>::new(self.tables.rename(select_events!()));
        sql.push(" WHERE position > ")
            .push_bind(to_i64(query.after_sequence));
        self.push_scope(&mut sql);
        push_filters(&mut sql, query);
        sql.push(" ORDER BY position LIMIT ")
            .push_bind(limit(query.limit.saturating_add(1)));
        let events = self.fetch_events(sql.build(), "query").await?;
        Ok(QueryPage::from_overfetch(events, query.limit))
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            self.tables
                .rename("SELECT COUNT(*) FROM annals_events WHERE position > "),
        );
        sql.push_bind(to_i64(query.after_sequence));
        self.push_scope(&mut sql);
        push_filters(&mut sql, query);
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
        self.verify(Some(stream)).await
    }

    #[tracing::instrument(name = "annals.store.verify_log", skip_all, fields(backend = BACKEND))]
    async fn verify_log(&self) -> Result<ChainReport> {
        self.verify(None).await
    }
}

/// The append itself, inside the caller's write transaction: check every
/// expectation, then insert. Returning an error leaves the transaction to
/// be rolled back.
async fn append_in(
    tables: &TableNames,
    keys: Option<&ChainKeys>,
    connection: &mut SqliteConnection,
    batch: &[StreamAppend],
) -> Result<Vec<AppendResult>> {
    let mut heads = Vec::with_capacity(batch.len());
    // The first stream's head and the log's head come in one statement:
    // each statement is a round trip to SQLite's worker thread.
    let mut log_head: Option<i64> = None;
    for append in batch {
        // A stream belongs to the tenant its events name (a tenant handle
        // stamped its own on them).
        let tenant = super::tenancy::stream_tenant(&append.stream_id, &append.events)?;
        type Head = (Option<i64>, Option<Vec<u8>>, Option<Uuid>);
        let (current, link, head_event): Head = if log_head.is_none() {
            let (current, link, head_event, next_commit): (
                Option<i64>,
                Option<Vec<u8>>,
                Option<Uuid>,
                i64,
            ) = sqlx::query_as(tables.sql(
                "SELECT head.version, head.hash, head.event_id, \
                        (SELECT COALESCE(MAX(position), 0) + 1 FROM annals_events) \
                 FROM (SELECT 1) LEFT JOIN (SELECT version, hash, event_id FROM annals_events \
                     WHERE stream_id = ? AND COALESCE(tenant_id, '') = ? \
                     ORDER BY version DESC LIMIT 1) AS head",
            ))
            .bind(append.stream_id.as_str())
            .bind(&tenant)
            .fetch_one(&mut *connection)
            .await
            .map_err(failed("read stream version"))?;
            log_head = Some(next_commit);
            (current, link, head_event)
        } else {
            sqlx::query_as(tables.sql(
                "SELECT version, hash, event_id FROM annals_events \
                 WHERE stream_id = ? AND COALESCE(tenant_id, '') = ? ORDER BY version DESC LIMIT 1",
            ))
            .bind(append.stream_id.as_str())
            .bind(&tenant)
            .fetch_optional(&mut *connection)
            .await
            .map_err(failed("read stream version"))?
            .map_or((None, None, None), |(version, hash, event)| {
                (Some(version), hash, Some(event))
            })
        };
        let current = current
            .and_then(|version| u64::try_from(version).ok())
            .unwrap_or(0);
        if !append.expected.accepts(current) {
            // Dropping `tx` rolls back; nothing was written.
            return Err(Error::VersionConflict {
                stream: append.stream_id.to_string(),
                expected: append.expected,
                actual: current,
            });
        }
        append.check_head(current, head_event)?;
        next_version(&append.stream_id, current, append.events.len())?;
        // A head without a link was written past Annals (and is reported by
        // verification); the chain goes on from the start.
        let link = link
            .as_deref()
            .and_then(EventHash::from_slice)
            .unwrap_or(EventHash::GENESIS);
        heads.push((current, link));
    }

    let commit: i64 = match log_head {
        Some(commit) => commit,
        None => sqlx::query_scalar(
            tables.sql("SELECT COALESCE(MAX(position), 0) + 1 FROM annals_events"),
        )
        .fetch_one(&mut *connection)
        .await
        .map_err(failed("read log head"))?,
    };
    let recorded_at_time = Utc::now().trunc_subsecs(6);
    let recorded_at = micros(recorded_at_time);
    let commit_position = u64::try_from(commit).unwrap_or(0);
    // Every row of the batch, in order, with its position and link, then
    // inserted a chunk at a time with one multi-row statement each. The
    // positions are given, not left to AUTOINCREMENT, because links cover
    // them: the writer holds the write lock, and the log's head is `commit`.
    let signer = ChainSigner::new(keys);
    let chain_key = signer.format().column();
    let mut rows = Vec::new();
    let mut position = commit;
    for (append, &(current, head_link)) in batch.iter().zip(&heads) {
        let mut link = head_link;
        for (offset, event) in append.events.iter().enumerate() {
            let version = current + 1 + offset as u64;
            let headers = headers_json(&event.metadata.headers);
            let stored = new_row(
                append,
                version,
                event,
                &headers,
                recorded_at,
                (commit, position),
            );
            link = signer.link(&link, &stored);
            rows.push((append, version, event, headers, link, position));
            position += 1;
        }
    }
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(tables.rename(
            "INSERT INTO annals_events (position, commit_id, event_id, stream_id, version, \
             event_type, schema_version, payload, tenant_id, correlation_id, causation_id, actor, \
             trace_context, headers, recorded_at, hash, chain_key) ",
        ));
        insert.push_values(
            chunk,
            |mut row, (append, version, event, headers, link, position)| {
                let metadata = &event.metadata;
                row.push_bind(*position)
                    .push_bind(commit)
                    .push_bind(event.event_id)
                    .push_bind(append.stream_id.as_str())
                    .push_bind(to_i64(*version))
                    .push_bind(event.event_type.as_str())
                    .push_bind(i64::from(event.schema_version))
                    .push_bind(event.payload.as_json())
                    .push_bind(metadata.tenant_id.as_deref())
                    .push_bind(metadata.correlation_id)
                    .push_bind(metadata.causation_id)
                    .push_bind(metadata.actor.as_deref())
                    .push_bind(metadata.trace_context.as_deref())
                    .push_bind(headers.as_str())
                    .push_bind(recorded_at)
                    .push_bind(link.as_bytes().as_slice())
                    .push_bind(chain_key);
            },
        );
        if let Err(error) = insert.build().execute(&mut *connection).await {
            let stored = stored_event_id(
                tables,
                connection,
                chunk.iter().map(|(_, _, event, _, _, _)| event.event_id),
            )
            .await;
            return Err(insert_error(error, stored));
        }
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut row_positions = rows.iter().map(|(.., position)| *position);
    for (append, &(current, _)) in batch.iter().zip(&heads) {
        let positions: Vec<LogPosition> = row_positions
            .by_ref()
            .take(append.events.len())
            .map(|position| LogPosition::new(commit_position, u64::try_from(position).unwrap_or(0)))
            .collect();
        results.push(AppendResult {
            first_version: current + 1,
            last_version: current + append.events.len() as u64,
            position: positions.last().copied().unwrap_or_default(),
            positions,
            recorded_at: recorded_at_time,
        });
    }
    Ok(results)
}

/// Events per multi-row insert: 14 parameters each, well below SQLite's
/// limit of 32,766 per statement.
const INSERT_CHUNK: usize = 500;

/// The first of `ids` already stored, to name it in the error.
async fn stored_event_id(
    tables: &TableNames,
    connection: &mut SqliteConnection,
    ids: impl Iterator<Item = Uuid>,
) -> Option<Uuid> {
    for id in ids {
        let found: Option<i64> =
            sqlx::query_scalar(tables.sql("SELECT position FROM annals_events WHERE event_id = ?"))
                .bind(id)
                .fetch_optional(&mut *connection)
                .await
                .ok()
                .flatten();
        if found.is_some() {
            return Some(id);
        }
    }
    None
}

fn insert_error(error: sqlx::Error, event_id: Option<Uuid>) -> Error {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
        && db.message().contains("event_id")
    {
        let id = event_id.map_or_else(|| "of this batch".to_owned(), |id| id.to_string());
        return Error::invalid(
            "event id",
            format!("an event with id {id} is already stored; event ids must be unique"),
        );
    }
    failed("insert events")(error)
}

/// The conditions of a query, after `WHERE position > ?`; shared by
/// `query` and `count` so they always agree.
fn push_filters(sql: &mut QueryBuilder<Sqlite>, query: &EventQuery) {
    if !query.event_types.is_empty() {
        sql.push(" AND event_type IN (");
        let mut types = sql.separated(", ");
        for event_type in &query.event_types {
            types.push_bind(event_type.clone());
        }
        sql.push(")");
    }
    if let Some(from) = query.recorded_from {
        sql.push(" AND recorded_at >= ").push_bind(micros(from));
    }
    if let Some(until) = query.recorded_until {
        sql.push(" AND recorded_at < ").push_bind(micros(until));
    }
    if let Some(tenant) = &query.tenant_id {
        sql.push(" AND tenant_id = ").push_bind(tenant.clone());
    }
    if let Some(correlation) = query.correlation_id {
        sql.push(" AND correlation_id = ").push_bind(correlation);
    }
    if let Some(event_id) = query.event_id {
        sql.push(" AND event_id = ").push_bind(event_id);
    }
    if let Some((key, value)) = &query.header {
        sql.push(" AND EXISTS (SELECT 1 FROM json_each(headers) WHERE json_each.key = ")
            .push_bind(key.clone())
            .push(" AND json_each.value = ")
            .push_bind(value.clone())
            .push(")");
    }
}
