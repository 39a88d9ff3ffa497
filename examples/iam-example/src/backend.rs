//! Connecting the example to its storage: the event store, the database of
//! the SQL read models (the store's own), and the cache.

use std::path::PathBuf;
use std::sync::Arc;

use annals::cache::{EventCache, InProcessCache, RedisCache, TwoLevelCache};
use annals::checkpoint::LeaseSettings;
use annals::pii::{MasterKey, PiiEventStore, SubjectKeyStore};
use annals::projection::Projection;
use annals::projection::runner::{
    PostgresReadModel, ProjectionRunner, RunningProjection, SqliteReadModel,
};
use annals::projection::sql_read_model::SqlConnection;
use annals::publisher::{JetStream, Publisher};
use annals::store::{EventStore, InMemoryEventStore, PostgresEventStore, SqliteEventStore};
use annals::subscription::{Subscription, SubscriptionHandle};
use anyhow::{Context, Result};

use crate::config::{Config, Database, ServeConfig};

/// The JetStream stream the service relays the log to.
pub const RELAY_STREAM: &str = "IAM_EVENTS";
/// Its subjects' prefix: `iam.<event type>`.
pub const RELAY_PREFIX: &str = "iam";

/// Where the SQL read models live.
#[derive(Debug, Clone)]
enum ReadModelDb {
    Sqlite(SqliteEventStore),
    Postgres(PostgresEventStore),
}

/// A connection for read-model queries, held while it is used.
pub enum QueryConnection {
    /// From the SQLite pool.
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    /// From the PostgreSQL pool.
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl QueryConnection {
    /// The portable connection the domain's queries take.
    pub fn db(&mut self) -> &mut dyn SqlConnection {
        match self {
            QueryConnection::Sqlite(connection) => &mut **connection,
            QueryConnection::Postgres(connection) => &mut **connection,
        }
    }
}

/// The example's storage, connected.
pub struct Backend {
    /// The event store: `pii`, seen as any store.
    pub store: Arc<dyn EventStore>,
    /// The same store, encrypting the users' personal data; `forget` a user
    /// on it.
    pub pii: Arc<PiiEventStore>,
    /// The store as stored: personal data encrypted. What leaves the
    /// process (the JetStream relay) reads this.
    pub log: Arc<dyn EventStore>,
    /// The state cache of the repositories: in-process, with Redis behind it
    /// when configured.
    pub cache: Arc<dyn EventCache>,
    /// The in-process level, for its statistics.
    pub near: Arc<InProcessCache>,
    /// The Redis level, if any, for its statistics.
    pub redis: Option<Arc<RedisCache>>,
    /// A one-line description: backend and location, passwords hidden.
    pub description: String,
    /// The SQLite file, when there is one.
    pub sqlite_file: Option<PathBuf>,
    read_models: ReadModelDb,
    /// The worker name and lease of the projections (`None`: the runner's
    /// defaults).
    leases: Option<(String, LeaseSettings)>,
    _scratch: Option<tempfile::TempDir>,
}

/// What a backend is built from.
struct Setup<'a> {
    database: &'a Database,
    redis_url: Option<&'a str>,
    replica_url: Option<&'a str>,
    master_key: MasterKey,
    /// Start empty (the scenario), or keep what is stored (the service).
    fresh: bool,
}

impl Backend {
    /// Connects (recreating the example's SQLite file or PostgreSQL schema
    /// so every run starts empty) and checks Redis answers.
    pub async fn connect(config: &Config) -> Result<Backend> {
        Backend::build(Setup {
            database: &config.database,
            redis_url: config.redis_url.as_deref(),
            replica_url: None,
            master_key: config
                .master_key
                .clone()
                .unwrap_or_else(MasterKey::generate),
            fresh: true,
        })
        .await
    }

    /// Connects for the service: keeps what the database holds (creating
    /// the store's tables when missing, safely from several instances at
    /// once), shares the Redis cache among the instances on the same data,
    /// reads the log from the replica when one is configured, and runs
    /// projections under the instance's name and lease.
    pub async fn open(config: &ServeConfig) -> Result<Backend> {
        let mut backend = Backend::build(Setup {
            database: &config.database,
            redis_url: config.redis_url.as_deref(),
            replica_url: config.replica_url.as_deref(),
            master_key: config.master_key.clone(),
            fresh: false,
        })
        .await?;
        let worker = config
            .instance
            .clone()
            .unwrap_or_else(annals::checkpoint::default_owner_name);
        backend.leases = Some((worker, LeaseSettings::new(config.lease)));
        Ok(backend)
    }

    async fn build(setup: Setup<'_>) -> Result<Backend> {
        let near = Arc::new(InProcessCache::new());
        // The scenario starts empty, so its cache entries must not meet an
        // earlier run's; the service's instances share theirs.
        let prefix = match (setup.fresh, setup.database) {
            (false, Database::Postgres { schema, .. }) => format!("iam-example:{schema}"),
            (false, Database::Sqlite(_)) => "iam-example:sqlite".to_owned(),
            _ => format!("iam-example:{}", uuid::Uuid::now_v7().simple()),
        };
        let (redis, cache): (Option<Arc<RedisCache>>, Arc<dyn EventCache>) = match setup.redis_url {
            None => (None, near.clone()),
            Some(url) => {
                let redis = RedisCache::builder(url.to_owned())
                    .prefix(prefix)
                    .connect()
                    .await?;
                redis.ping().await?;
                let redis = Arc::new(redis);
                (
                    Some(redis.clone()),
                    Arc::new(TwoLevelCache::new(near.clone(), redis)),
                )
            }
        };
        let redis_note = match setup.redis_url {
            Some(url) => format!(", Redis cache at {}", annals::store::redact_url(url)),
            None => String::new(),
        };
        let (store, keys, read_models, description, sqlite_file, scratch): (
            Arc<dyn EventStore>,
            Arc<dyn SubjectKeyStore>,
            _,
            _,
            _,
            _,
        ) = match setup.database {
            Database::Sqlite(path) => {
                if setup.fresh {
                    remove_sqlite_files(path)?;
                } else if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
                    std::fs::create_dir_all(folder)
                        .with_context(|| format!("cannot create {}", folder.display()))?;
                }
                let sqlite = SqliteEventStore::open(path).await?;
                (
                    Arc::new(sqlite.clone()),
                    Arc::new(sqlite.clone()),
                    ReadModelDb::Sqlite(sqlite),
                    format!("SQLite file {}", path.display()),
                    Some(path.clone()),
                    None,
                )
            }
            Database::Postgres { url, schema } => {
                if setup.fresh {
                    recreate_schema(url, schema).await?;
                }
                let mut builder = PostgresEventStore::builder(url.clone())
                    .schema(schema.clone())
                    .max_connections(16);
                if let Some(replica) = setup.replica_url {
                    builder = builder.read_replica(replica);
                }
                let postgres = builder.connect().await?;
                (
                    Arc::new(postgres.clone()),
                    Arc::new(postgres.clone()),
                    ReadModelDb::Postgres(postgres),
                    format!(
                        "PostgreSQL {} (schema {schema})",
                        annals::store::redact_url(url)
                    ),
                    None,
                    None,
                )
            }
            Database::Memory => {
                let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
                let path = scratch.path().join("read-models.db");
                let sqlite = SqliteEventStore::open(&path).await?;
                let memory = Arc::new(InMemoryEventStore::new());
                (
                    memory.clone(),
                    memory,
                    ReadModelDb::Sqlite(sqlite),
                    format!("in-memory store, read models in {}", path.display()),
                    None,
                    Some(scratch),
                )
            }
        };
        // Outermost, so the repositories' state cache is the only place
        // plaintext is cached: it is purged when a user is forgotten.
        let log = store.clone();
        let pii = Arc::new(
            PiiEventStore::new(store, keys, setup.master_key)
                .purge_state_cache::<iam_domain::user::User>(cache.clone(), None),
        );
        Ok(Backend {
            store: pii.clone(),
            pii,
            log,
            cache,
            near,
            redis,
            description: format!("{description}{redis_note}"),
            sqlite_file,
            read_models,
            leases: None,
            _scratch: scratch,
        })
    }

    /// Starts a SQL read-model projection (catch-up, then live).
    pub fn run_projection<P>(&self, projection: P, batch_size: usize) -> RunningProjection<P>
    where
        P: Projection<Context = dyn SqlConnection> + Sync + 'static,
    {
        match &self.read_models {
            ReadModelDb::Sqlite(sqlite) => self
                .leased(ProjectionRunner::new(
                    self.store.clone(),
                    SqliteReadModel::for_store(sqlite),
                ))
                .batch_size(batch_size)
                .start(projection),
            ReadModelDb::Postgres(postgres) => self
                .leased(ProjectionRunner::new(
                    self.store.clone(),
                    PostgresReadModel::for_store(postgres),
                ))
                .batch_size(batch_size)
                .start(projection),
        }
    }

    /// Starts the JetStream relay: every event of the log as stored
    /// (personal data stays encrypted), in order, from the instance holding
    /// the relay's lease.
    pub async fn relay_to_jetstream(&self, url: &str) -> Result<SubscriptionHandle<Publisher>> {
        let jetstream = JetStream::connect(url, RELAY_STREAM, RELAY_PREFIX).await?;
        let mut relay = Subscription::new(self.log.clone(), "iam-jetstream-relay");
        if let Some((worker, lease)) = &self.leases {
            relay = relay.worker_name(worker.clone()).lease(*lease);
        }
        Ok(relay.start(Publisher::new().with_jetstream(jetstream)))
    }

    /// The name this backend's projections and relay hold leases under
    /// (the process's default unless [`open`](Self::open) was given one).
    pub fn worker_name(&self) -> String {
        match &self.leases {
            Some((worker, _)) => worker.clone(),
            None => annals::checkpoint::default_owner_name(),
        }
    }

    fn leased<T>(&self, runner: ProjectionRunner<T>) -> ProjectionRunner<T> {
        match &self.leases {
            Some((worker, lease)) => runner.worker_name(worker.clone()).lease(*lease),
            None => runner,
        }
    }

    /// A connection for read-model queries.
    pub async fn query(&self) -> Result<QueryConnection> {
        Ok(match &self.read_models {
            ReadModelDb::Sqlite(sqlite) => QueryConnection::Sqlite(
                sqlite
                    .pool()
                    .acquire()
                    .await
                    .context("cannot get a SQLite connection for queries")?,
            ),
            ReadModelDb::Postgres(postgres) => QueryConnection::Postgres(
                postgres
                    .pool()
                    .acquire()
                    .await
                    .context("cannot get a PostgreSQL connection for queries")?,
            ),
        })
    }

    /// Creates the read-model tables the projections declare when missing,
    /// from the registry (the DDL `cargo xtask schema` also writes to
    /// `schema/read_models/`). On PostgreSQL in one transaction under an
    /// advisory lock: instances starting together would otherwise race on
    /// `CREATE TABLE IF NOT EXISTS`, which is not atomic there.
    pub async fn create_read_model_tables(&self) -> Result<()> {
        let statements = |dialect| {
            annals::registry::projections()
                .flat_map(|projection| projection.tables)
                .flat_map(move |table| {
                    annals_codegen::read_model_ddl::create_table(dialect, table)
                        .split(';')
                        .map(str::trim)
                        .filter(|statement| !statement.is_empty())
                        .map(|statement| (table.name, statement.to_owned()))
                        .collect::<Vec<_>>()
                })
        };
        match &self.read_models {
            ReadModelDb::Sqlite(sqlite) => {
                let mut connection = sqlite
                    .pool()
                    .acquire()
                    .await
                    .context("cannot get a SQLite connection")?;
                for (table, statement) in statements(annals_codegen::Dialect::Sqlite) {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut *connection)
                        .await
                        .with_context(|| format!("cannot create read-model table {table}"))?;
                }
            }
            ReadModelDb::Postgres(postgres) => {
                let mut transaction = postgres
                    .pool()
                    .begin()
                    .await
                    .context("cannot begin a PostgreSQL transaction")?;
                sqlx::query(
                    "SELECT pg_advisory_xact_lock(hashtext('iam-example.read-models.' || current_schema()))",
                )
                .execute(&mut *transaction)
                .await
                .context("cannot lock the read-model tables for creation")?;
                for (table, statement) in statements(annals_codegen::Dialect::Postgres) {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut *transaction)
                        .await
                        .with_context(|| format!("cannot create read-model table {table}"))?;
                }
                transaction
                    .commit()
                    .await
                    .context("cannot commit the read-model tables")?;
            }
        }
        Ok(())
    }
}

fn remove_sqlite_files(path: &std::path::Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "cannot remove the previous run's {}",
                        PathBuf::from(&file).display()
                    )
                });
            }
        }
    }
    Ok(())
}

async fn recreate_schema(url: &str, schema: &str) -> Result<()> {
    use sqlx::ConnectOptions as _;
    use std::str::FromStr as _;
    let shown = annals::store::redact_url(url);
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid PostgreSQL URL {shown}"))?;
    let mut connection =
        tokio::time::timeout(std::time::Duration::from_secs(10), options.connect())
            .await
            .with_context(|| format!("no answer from {shown} within 10 s"))?
            .with_context(|| format!("cannot connect to {shown}"))?;
    // The schema name was checked: lowercase letters, digits, underscores.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut connection)
    .await
    .with_context(|| format!("cannot drop the example's schema {schema} on {shown}"))?;
    Ok(())
}
