//! Connecting the example to its storage: the event store, the database of
//! the SQL read models (the store's own), and the cache.

use std::path::PathBuf;
use std::sync::Arc;

use annals::cache::{EventCache, InProcessCache, RedisCache, TwoLevelCache};
use annals::pii::{MasterKey, PiiEventStore, SubjectKeyStore};
use annals::projection::Projection;
use annals::projection::runner::{
    PostgresReadModel, ProjectionRunner, RunningProjection, SqliteReadModel,
};
use annals::projection::sql_read_model::SqlConnection;
use annals::store::{EventStore, InMemoryEventStore, PostgresEventStore, SqliteEventStore};
use anyhow::{Context, Result};

use crate::config::{Config, Database};

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
    _scratch: Option<tempfile::TempDir>,
}

impl Backend {
    /// Connects (recreating the example's SQLite file or PostgreSQL schema
    /// so every run starts empty) and checks Redis answers.
    pub async fn connect(config: &Config) -> Result<Backend> {
        let near = Arc::new(InProcessCache::new());
        let (redis, cache): (Option<Arc<RedisCache>>, Arc<dyn EventCache>) = match &config.redis_url
        {
            None => (None, near.clone()),
            Some(url) => {
                let redis = RedisCache::builder(url.clone())
                    .prefix(format!("iam-example:{}", uuid::Uuid::now_v7().simple()))
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
        let redis_note = match &config.redis_url {
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
        ) = match &config.database {
            Database::Sqlite(path) => {
                remove_sqlite_files(path)?;
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
                recreate_schema(url, schema).await?;
                let postgres = PostgresEventStore::builder(url.clone())
                    .schema(schema.clone())
                    .max_connections(16)
                    .connect()
                    .await?;
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
        let master_key = config
            .master_key
            .clone()
            .unwrap_or_else(MasterKey::generate);
        let pii = Arc::new(
            PiiEventStore::new(store, keys, master_key)
                .purge_state_cache::<iam_domain::user::User>(cache.clone(), None),
        );
        Ok(Backend {
            store: pii.clone(),
            pii,
            cache,
            near,
            redis,
            description: format!("{description}{redis_note}"),
            sqlite_file,
            read_models,
            _scratch: scratch,
        })
    }

    /// Starts a SQL read-model projection (catch-up, then live).
    pub fn run_projection<P>(&self, projection: P, batch_size: usize) -> RunningProjection<P>
    where
        P: Projection<Context = dyn SqlConnection> + Sync + 'static,
    {
        match &self.read_models {
            ReadModelDb::Sqlite(sqlite) => {
                ProjectionRunner::new(self.store.clone(), SqliteReadModel::for_store(sqlite))
                    .batch_size(batch_size)
                    .start(projection)
            }
            ReadModelDb::Postgres(postgres) => {
                ProjectionRunner::new(self.store.clone(), PostgresReadModel::for_store(postgres))
                    .batch_size(batch_size)
                    .start(projection)
            }
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

    /// Creates the read-model tables the projections declare, from the
    /// registry (the DDL `cargo xtask schema` also writes to
    /// `schema/read_models/`).
    pub async fn create_read_model_tables(&self) -> Result<()> {
        let dialect = match &self.read_models {
            ReadModelDb::Sqlite(_) => annals_codegen::Dialect::Sqlite,
            ReadModelDb::Postgres(_) => annals_codegen::Dialect::Postgres,
        };
        let mut connection = self.query().await?;
        for projection in annals::registry::projections() {
            for table in projection.tables {
                for statement in annals_codegen::read_model_ddl::create_table(dialect, table)
                    .split(';')
                    .map(str::trim)
                    .filter(|statement| !statement.is_empty())
                {
                    connection
                        .db()
                        .execute(statement, &[])
                        .await
                        .with_context(|| {
                            format!("cannot create read-model table {}", table.name)
                        })?;
                }
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
