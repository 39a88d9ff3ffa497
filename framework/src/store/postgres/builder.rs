//! The options a PostgreSQL store is connected with.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::RestampReport;
use crate::error::{Error, Result};
use crate::hash_chain::ChainKeys;
use crate::store::connect::redact_url;
use crate::store::group_commit::{GroupCommit, GroupCommitOptions};
use crate::store::table_names::{TableNames, is_plain_identifier};

use super::{BACKEND, PostgresEventStore, Replica, failed};

impl PostgresEventStore {
    /// Options for connecting to `url` (`postgres://user:password@host:port/db`).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            migrate: true,
            table_prefix: None,
            group_commit: Some(GroupCommitOptions::default()),
            chain_keys: None,
            replica_url: None,
            load_from_replica: false,
        }
    }
}

/// Options for connecting a [`PostgresEventStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
    table_prefix: Option<String>,
    group_commit: Option<GroupCommitOptions>,
    chain_keys: Option<ChainKeys>,
    replica_url: Option<String>,
    load_from_replica: bool,
}

impl PostgresStoreBuilder {
    /// Names Annals' tables `{prefix}events`, `{prefix}snapshots`, ...
    /// instead of `annals_events`, ... (1 to 32 lowercase letters, digits or
    /// underscores). Tables made by `annals-codegen` with the same prefix
    /// (and any partitioning) are used as they are.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = Some(prefix.into());
        self
    }

    /// Keeps Annals' tables in this schema (created if missing) instead of
    /// the connection's default search path.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Most connections in the pool (default 10). With group commit on
    /// (the default), flights are written on connections of their own
    /// besides, one per flight ([`GroupCommitOptions::flights`], default 1),
    /// opened on the first flight: the store needs at most `max + flights`.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long to wait for a pooled connection (default 10 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How concurrent small appends share a statement and a commit (on by
    /// default with [`GroupCommitOptions::default`]).
    ///
    /// While `flights` appends are being written, further small appends
    /// queue and are written together next, each caller still getting its
    /// own result: its events, or its own version conflict (the others in
    /// the flight are written regardless). A lone writer never waits: with
    /// a free flight its append is written at once. An append whose caller
    /// stops waiting (its future dropped) is still written.
    ///
    /// ```no_run
    /// use annals::store::{GroupCommitOptions, PostgresEventStore};
    ///
    /// # async fn run() -> annals::Result<()> {
    /// let store = PostgresEventStore::builder("postgres://annals@localhost/annals")
    ///     .group_commit(GroupCommitOptions { flights: 4, ..GroupCommitOptions::default() })
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn group_commit(mut self, options: GroupCommitOptions) -> Self {
        self.group_commit = Some(options);
        self
    }

    /// Writes every append with its own statement and commit.
    pub fn without_group_commit(mut self) -> Self {
        self.group_commit = None;
        self
    }

    /// Whether to create and upgrade Annals' tables (and the
    /// [`schema`](Self::schema), if missing) on connect (default `true`).
    /// Without, connecting creates nothing.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Signs the hash chain's links with a key the database does not hold
    /// (HMAC-SHA-256), and verifies with these keys only: an event the
    /// application's database role writes past Annals, or any change to a
    /// stored event, then shows up in [`verify_log`](crate::store::EventStore::verify_log).
    /// See [`hash_chain`](crate::hash_chain) for exactly what that detects.
    ///
    /// ```no_run
    /// use annals::hash_chain::{ChainKey, ChainKeys};
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// // The secret comes from the environment or a secret manager, never the database.
    /// let secret = std::env::var("ANNALS_CHAIN_KEY_2").unwrap_or_default();
    /// let keys = ChainKeys::new(ChainKey::from_hex(2, &secret)?)
    ///     // still verifies what the previous key signed
    ///     .with_retired(ChainKey::from_hex(1, &std::env::var("ANNALS_CHAIN_KEY_1").unwrap_or_default())?)?;
    /// let store = PostgresEventStore::builder("postgres://annals@localhost/annals")
    ///     .chain_keys(keys)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn chain_keys(mut self, keys: ChainKeys) -> Self {
        self.chain_keys = Some(keys);
        self
    }

    /// Reads the log from a streaming replica (a hot standby) of this
    /// database at `url`, reached as the same role: `read_all`,
    /// `read_log` (so subscriptions, projections and replays), queries,
    /// counts and stream listings. Appends, checkpoints, leases, snapshots,
    /// dead letters, decisions' reads and everything else stay on the
    /// primary; stream loads too, unless
    /// [`load_from_replica`](Self::load_from_replica). The gap-safe order
    /// holds on the replica (see the module `replica`); a read there sees
    /// the primary's commits once it has replayed them: after an append,
    /// [`wait_for_replica`](PostgresEventStore::wait_for_replica) waits
    /// for that (read-your-writes). Readers woken by an append's `NOTIFY`
    /// (it comes from the primary) may find the replica not there yet and
    /// read it at their next poll. `connect` refuses a server that is not
    /// in recovery, one of another cluster (when the role may read
    /// `pg_control_system()`), and another role.
    ///
    /// ```no_run
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// let store = PostgresEventStore::builder("postgres://annals@primary/iam")
    ///     .read_replica("postgres://annals@replica/iam")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_replica(mut self, url: impl Into<String>) -> Self {
        self.replica_url = Some(url.into());
        self
    }

    /// Also loads streams (`read_stream`, `read_stream_backward`,
    /// `stream_version`) from the read replica. A load there may be behind
    /// the primary: a command decided on it fails its append with a version
    /// conflict (nothing wrong is written) and is retried, so turn this on
    /// when loads far outnumber writes to the same streams.
    pub fn load_from_replica(mut self, loads: bool) -> Self {
        self.load_from_replica = loads;
        self
    }

    /// Connects, and migrates unless turned off. A log restored from
    /// another cluster (`pg_dump`/`pg_restore`, logical replication) is
    /// refused with [`Error::ForeignHistory`]: repair it once with
    /// [`restamp_restored_log`](Self::restamp_restored_log).
    pub async fn connect(self) -> Result<PostgresEventStore> {
        let store = self.connect_unchecked().await?;
        if let Some(foreign) = store.foreign_history().await? {
            return Err(Error::ForeignHistory {
                stored: foreign.stored,
                next: foreign.next,
            });
        }
        Ok(store)
    }

    /// Connects (as the role that owns Annals' tables) and re-stamps a log
    /// restored from another cluster, so that this cluster's readers see
    /// it in its order and new events follow it: every event keeps its
    /// position and the log its order; tag entries and checkpoints follow;
    /// the hash chain is checked first (a broken one is refused, changing
    /// nothing) and linked anew, with the builder's
    /// [`chain_keys`](Self::chain_keys) when the log is keyed. A log of this
    /// cluster is left as it is (`events` is 0). Run it once after the
    /// restore, before the application starts; appends wait meanwhile.
    ///
    /// ```no_run
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// let (store, report) = PostgresEventStore::builder("postgres://owner@new-cluster/annals")
    ///     .restamp_restored_log()
    ///     .await?;
    /// println!("{} events re-stamped with {} commit ids", report.events, report.commits);
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn restamp_restored_log(self) -> Result<(PostgresEventStore, RestampReport)> {
        let store = self.connect_unchecked().await?;
        let report = store.restamp().await?;
        Ok((store, report))
    }

    async fn connect_unchecked(self) -> Result<PostgresEventStore> {
        let group = match self.group_commit {
            Some(options) => Some(Arc::new(GroupCommit::new(options)?)),
            None => None,
        };
        let tables = match &self.table_prefix {
            Some(prefix) => TableNames::new(prefix)?,
            None => TableNames::default(),
        };
        if let Some(schema) = &self.schema {
            validate_schema_name(schema)?;
        }
        let pool = self.open_pool(&self.url).await?;
        let flight_pool = self
            .group_commit
            .map(|options| flight_pool(&pool, options.flights, self.acquire_timeout));
        let replica = match &self.replica_url {
            Some(url) => Some(
                Replica::check(
                    &pool,
                    self.open_pool(url).await?,
                    &redact_url(url),
                    self.load_from_replica,
                )
                .await?,
            ),
            None => None,
        };
        let schema_missing = match &self.schema {
            // An application role may lack CREATE on the database, which
            // `CREATE SCHEMA IF NOT EXISTS` checks even when the schema is
            // there: only try when it is not. A store that does not
            // migrate creates nothing (a tool looking at a mistyped schema
            // must not leave an empty one behind).
            Some(schema) if self.migrate => !sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            )
            .bind(schema)
            .fetch_one(&pool)
            .await
            .map_err(failed("look up schema"))?,
            _ => false,
        };
        if let Some(schema) = self.schema.as_ref().filter(|_| schema_missing) {
            // Validated above: lowercase letters, digits and underscores only.
            let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&pool)
            .await;
            // `IF NOT EXISTS` is not safe against a concurrent create: the
            // loser of that race sees a unique violation, and the schema is
            // there all the same.
            match created {
                Err(sqlx::Error::Database(db))
                    if matches!(db.code().as_deref(), Some("23505" | "42P06")) => {}
                other => {
                    other.map_err(failed("create schema"))?;
                }
            }
        }
        let store = PostgresEventStore {
            pool,
            replica,
            wake: Arc::default(),
            tables,
            group,
            flight_pool,
            tenant: None,
            role: Arc::default(),
            chain_keys: self.chain_keys.map(Arc::new),
        };
        if self.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

impl PostgresStoreBuilder {
    /// A pool of connections to `url` with the builder's schema and limits.
    async fn open_pool(&self, url: &str) -> Result<sqlx::PgPool> {
        let shown = redact_url(url);
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|error| Error::Config(format!("invalid PostgreSQL URL {shown}: {error}")))?;
        if let Some(schema) = &self.schema {
            options = options.options([("search_path", schema.as_str())]);
        }
        // One direct connection first: a pool reports an unreachable server as
        // "timed out", this says "connection refused" or "password failed".
        let probe = tokio::time::timeout(self.acquire_timeout, options.connect())
            .await
            .map_err(|_| Error::Backend {
                backend: BACKEND,
                operation: "connect",
                source: format!("no answer from {shown} within {:?}", self.acquire_timeout).into(),
            })?
            .map_err(|error| Error::Backend {
                backend: BACKEND,
                operation: "connect",
                source: format!("cannot connect to {shown}: {error}").into(),
            })?;
        drop(probe);
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|error| Error::Backend {
                backend: BACKEND,
                operation: "connect",
                source: format!("cannot connect to {shown}: {error}").into(),
            })
    }
}

/// The connections group-commit flights are written on: `flights` of them,
/// opened on first use with `pool`'s options (server, role, schema) and the
/// append statement's generic plan for the whole session (see
/// `APPEND_SETTINGS`; only the append statement runs on them).
fn flight_pool(pool: &sqlx::PgPool, flights: usize, acquire_timeout: Duration) -> sqlx::PgPool {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options(super::append::APPEND_SETTINGS.iter().copied());
    PgPoolOptions::new()
        .max_connections(u32::try_from(flights).unwrap_or(u32::MAX))
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options)
}

pub(super) fn validate_schema_name(schema: &str) -> Result<()> {
    if is_plain_identifier(schema, 63) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "PostgreSQL schema name {schema:?} must be 1 to 63 lowercase letters, digits or underscores, not starting with a digit"
        )))
    }
}
