//! The options a SQLite store is opened with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::hash_chain::ChainKeys;
use crate::store::group_commit::{GroupCommit, GroupCommitOptions};
use crate::store::table_names::TableNames;

use super::{BACKEND, SqliteEventStore};

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
}
