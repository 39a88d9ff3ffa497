//! A fresh, isolated store per test: memory, a SQLite file in a temporary
//! directory, or a new schema in the test PostgreSQL database.

use std::str::FromStr;
use std::sync::Arc;

use annals::store::{
    EventStore, InMemoryEventStore, PostgresEventStore, PostgresStoreBuilder, SqliteEventStore,
};
use annals::{ExpectedVersion, NewEvent, StreamId};
use annals_codegen::{Dialect, Partitioning, StoreLayout, store_migrations};
use sqlx::{PgPool, SqlitePool};
use tempfile::TempDir;

/// The variable `cargo xtask test` sets to the throwaway PostgreSQL server.
pub const DATABASE_URL_VAR: &str = "ANNALS_TEST_DATABASE_URL";

/// The test PostgreSQL URL. Panics, saying how to get one, when it is unset:
/// a PostgreSQL test never passes silently without a server.
pub fn postgres_url() -> String {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this test needs PostgreSQL, but {DATABASE_URL_VAR} is not set.\n\
             Run every suite with `cargo xtask test` (it starts a throwaway server), or start \
             servers with `cargo xtask services up` and export the {DATABASE_URL_VAR} it prints."
        ),
    }
}

/// A fresh PostgreSQL store in a schema of its own, so tests can assert on
/// the whole global log while other tests run beside them.
pub async fn fresh_postgres_store() -> PostgresEventStore {
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    PostgresEventStore::builder(postgres_url())
        .schema(schema)
        .max_connections(12)
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to the test PostgreSQL: {error:?}"))
}

/// The test server's URL with another role (the server trusts loopback).
pub fn postgres_url_as(role: &str) -> String {
    let base = postgres_url();
    let (scheme, rest) = base
        .split_once("://")
        .unwrap_or(("postgres", base.as_str()));
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

/// A new login role (created by the superuser, as a DBA would), granted
/// the application role's privileges on `owner`'s tables by the owner
/// (`grant_tenant_access`), and a store on `owner`'s schema and prefix
/// connected as it, not migrating.
pub async fn application_role_store(owner: &PostgresEventStore) -> PostgresEventStore {
    application_role_builder(owner)
        .await
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect as the application role: {error:?}"))
}

/// [`application_role_store`]'s new role and grants, and the builder of
/// its store, to add options (hash chain keys, say) before connecting.
pub async fn application_role_builder(owner: &PostgresEventStore) -> PostgresStoreBuilder {
    let role = application_role(owner).await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(owner.pool())
        .await
        .unwrap_or_else(|error| panic!("cannot read the schema: {error}"));
    PostgresEventStore::builder(postgres_url_as(&role))
        .schema(schema)
        .table_prefix(owner.table_prefix())
        .migrate(false)
        .max_connections(12)
}

/// A new login role (created by the superuser, as a DBA would), granted
/// the application role's privileges on `owner`'s tables by the owner;
/// its name (connect with [`postgres_url_as`]).
pub async fn application_role(owner: &PostgresEventStore) -> String {
    let role = format!("app_{}", uuid::Uuid::now_v7().simple());
    let dba = PgPool::connect(&postgres_url())
        .await
        .unwrap_or_else(|error| panic!("cannot connect to the test PostgreSQL: {error}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&dba)
        .await
        .unwrap_or_else(|error| panic!("cannot create an application role: {error}"));
    dba.close().await;
    owner
        .grant_tenant_access(&role)
        .await
        .unwrap_or_else(|error| panic!("cannot grant tenant access: {error:?}"));
    role
}

/// Direct access to a backend's tables, bypassing the store's checks.
#[derive(Debug, Clone)]
pub enum RawAccess {
    /// The in-memory store has no tables.
    Memory,
    /// The SQLite store's pool.
    Sqlite(SqlitePool),
    /// The PostgreSQL store's pool (search path set to its schema).
    Postgres(PgPool),
}

/// A store under test, with raw access to its storage.
pub struct TestStore {
    /// The store, as the conformance suite sees it.
    pub store: Arc<dyn EventStore>,
    /// Raw access to plant bad data.
    pub raw: RawAccess,
    /// The prefix of Annals' tables in `raw`.
    pub table_prefix: String,
    _dir: Option<TempDir>,
}

/// Events, a snapshot, a checkpoint and a dead letter of tenant `intruder`,
/// under names the conformance suite also uses, written through an unscoped
/// store: a tenant handle over the same store must see none of them.
pub async fn plant_another_tenant(store: &dyn EventStore) {
    let intruder = |n: u64| {
        let mut event = NewEvent::json("test.numbered", &serde_json::json!({ "n": n }))
            .unwrap_or_else(|error| panic!("event: {error}"));
        event.metadata.tenant_id = Some("intruder".to_owned());
        event
    };
    for stream in ["user-1", "user-2", "a", "b"] {
        let id = StreamId::new(stream).unwrap_or_else(|error| panic!("stream id: {error}"));
        store
            .append(
                &id,
                ExpectedVersion::NoStream,
                vec![intruder(1), intruder(2)],
            )
            .await
            .unwrap_or_else(|error| panic!("plant {stream}: {error}"));
    }
}

impl TestStore {
    /// A new in-memory store.
    pub async fn memory() -> Self {
        TestStore {
            store: Arc::new(InMemoryEventStore::new()),
            raw: RawAccess::Memory,
            table_prefix: String::new(),
            _dir: None,
        }
    }

    /// A tenant handle (`for_tenant("acme")`) on a new in-memory store
    /// that already holds another tenant's events, so any leak shows.
    pub async fn memory_tenant_handle() -> Self {
        let store = InMemoryEventStore::new();
        plant_another_tenant(&store).await;
        let handle = store
            .for_tenant("acme")
            .unwrap_or_else(|error| panic!("cannot make a tenant handle: {error:?}"));
        TestStore {
            store: Arc::new(handle),
            raw: RawAccess::Memory,
            table_prefix: String::new(),
            _dir: None,
        }
    }

    /// A new SQLite store in a temporary file.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let store = SqliteEventStore::open(dir.path().join("events.db"))
            .await
            .unwrap_or_else(|error| panic!("cannot open the SQLite store: {error:?}"));
        TestStore {
            raw: RawAccess::Sqlite(store.pool().clone()),
            table_prefix: store.table_prefix().to_owned(),
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }

    /// A tenant handle (`for_tenant("acme")`) on a new SQLite file that
    /// already holds another tenant's events, so any leak shows.
    pub async fn sqlite_tenant_handle() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let store = SqliteEventStore::open(dir.path().join("events.db"))
            .await
            .unwrap_or_else(|error| panic!("cannot open the SQLite store: {error:?}"));
        plant_another_tenant(&store).await;
        let handle = store
            .for_tenant("acme")
            .unwrap_or_else(|error| panic!("cannot make a tenant handle: {error:?}"));
        TestStore {
            raw: RawAccess::Sqlite(store.pool().clone()),
            table_prefix: store.table_prefix().to_owned(),
            store: Arc::new(handle),
            _dir: Some(dir),
        }
    }

    /// A new SQLite store in a temporary file, and the same store as a
    /// subject-key store.
    pub async fn sqlite_with_keys() -> (Self, Arc<dyn annals::pii::SubjectKeyStore>) {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let store = Arc::new(
            SqliteEventStore::open(dir.path().join("events.db"))
                .await
                .unwrap_or_else(|error| panic!("cannot open the SQLite store: {error:?}")),
        );
        let test_store = TestStore {
            raw: RawAccess::Sqlite(store.pool().clone()),
            table_prefix: store.table_prefix().to_owned(),
            store: store.clone(),
            _dir: Some(dir),
        };
        (test_store, store)
    }

    /// The directory of a file-backed store (SQLite), if any.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(TempDir::path)
    }

    /// A SQLite store on tables that `annals-codegen` generated with the
    /// table prefix `iam_`, applied before the store opens (as a migration
    /// tool would).
    pub async fn sqlite_generated_prefixed() -> Self {
        let layout = StoreLayout::default()
            .table_prefix("iam_")
            .unwrap_or_else(|error| panic!("{error}"));
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let path = dir.path().join("generated.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options)
            .await
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        for migration in store_migrations::migrations(Dialect::Sqlite, &layout) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql.clone()))
                .execute(&pool)
                .await
                .unwrap_or_else(|error| {
                    panic!("{} does not apply: {error}", migration.file_name())
                });
        }
        pool.close().await;
        let store = SqliteEventStore::builder(&path)
            .table_prefix("iam_")
            .open()
            .await
            .unwrap_or_else(|error| panic!("cannot open the generated SQLite store: {error:?}"));
        TestStore {
            raw: RawAccess::Sqlite(store.pool().clone()),
            table_prefix: store.table_prefix().to_owned(),
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }

    /// A new PostgreSQL store in a schema of its own.
    pub async fn postgres() -> Self {
        TestStore::from_postgres(fresh_postgres_store().await)
    }

    /// `store`, with its own pool as raw access.
    pub fn from_postgres(store: PostgresEventStore) -> Self {
        TestStore {
            raw: RawAccess::Postgres(store.pool().clone()),
            table_prefix: store.table_prefix().to_owned(),
            store: Arc::new(store),
            _dir: None,
        }
    }

    /// `store`, whose file is in `dir`, with its own pool as raw access.
    pub fn from_sqlite(store: SqliteEventStore, dir: TempDir) -> Self {
        TestStore {
            raw: RawAccess::Sqlite(store.pool().clone()),
            table_prefix: store.table_prefix().to_owned(),
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }

    /// A tenant handle (`for_tenant("acme")`) on a new schema, connected as
    /// an application role granted by `grant_tenant_access`, so row-level
    /// security confines it; raw access is the owner's (superuser) pool.
    pub async fn postgres_tenant_handle() -> Self {
        let owner = fresh_postgres_store().await;
        let app = application_role_store(&owner).await;
        let handle = app
            .for_tenant("acme")
            .await
            .unwrap_or_else(|error| panic!("cannot make a tenant handle: {error:?}"));
        TestStore {
            raw: RawAccess::Postgres(owner.pool().clone()),
            table_prefix: owner.table_prefix().to_owned(),
            store: Arc::new(handle),
            _dir: None,
        }
    }

    /// A new PostgreSQL store in a schema of its own, and the same store as
    /// a subject-key store.
    pub async fn postgres_with_keys() -> (Self, Arc<dyn annals::pii::SubjectKeyStore>) {
        let store = Arc::new(fresh_postgres_store().await);
        let test_store = TestStore {
            raw: RawAccess::Postgres(store.pool().clone()),
            table_prefix: store.table_prefix().to_owned(),
            store: store.clone(),
            _dir: None,
        };
        (test_store, store)
    }

    /// A PostgreSQL store on generated tables partitioned by hash of the
    /// stream id, with the table prefix `iam_`.
    pub async fn postgres_partitioned_by_stream() -> Self {
        TestStore::postgres_generated(Partitioning::ByStreamHash { partitions: 4 }, "iam_").await
    }

    /// A PostgreSQL store on generated tables partitioned by tenant.
    pub async fn postgres_partitioned_by_tenant() -> Self {
        TestStore::postgres_generated(Partitioning::ByTenant { partitions: 3 }, "annals_").await
    }

    /// A PostgreSQL store in a fresh schema whose tables `annals-codegen`
    /// generated for `partitioning` and `prefix`, applied before the store
    /// connects (as a DBA or migration tool would); the store must find them
    /// current and use them as they are.
    pub async fn postgres_generated(partitioning: Partitioning, prefix: &str) -> Self {
        let schema = format!("g_{}", uuid::Uuid::now_v7().simple());
        let layout = StoreLayout::default()
            .schema(&schema)
            .and_then(|layout| layout.table_prefix(prefix))
            .unwrap_or_else(|error| panic!("{error}"))
            .partitioning(partitioning);
        let admin = PgPool::connect(&postgres_url())
            .await
            .unwrap_or_else(|error| panic!("cannot connect to the test PostgreSQL: {error}"));
        for migration in store_migrations::migrations(Dialect::Postgres, &layout) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql.clone()))
                .execute(&admin)
                .await
                .unwrap_or_else(|error| {
                    panic!("{} does not apply: {error}", migration.file_name())
                });
        }
        admin.close().await;
        let store = PostgresEventStore::builder(postgres_url())
            .schema(schema)
            .table_prefix(prefix)
            .max_connections(12)
            .connect()
            .await
            .unwrap_or_else(|error| panic!("cannot connect to the generated schema: {error:?}"));
        TestStore {
            raw: RawAccess::Postgres(store.pool().clone()),
            table_prefix: store.table_prefix().to_owned(),
            store: Arc::new(store),
            _dir: None,
        }
    }

    /// A SQLite store behind a [`PiiEventStore`] (its own subject-key
    /// store, a generated master key): a store with no personal-data
    /// fields in its events must behave exactly like the one it wraps.
    ///
    /// [`PiiEventStore`]: annals::pii::PiiEventStore
    pub async fn pii_sqlite() -> Self {
        let (mut backend, keys) = TestStore::sqlite_with_keys().await;
        backend.store = Arc::new(annals::pii::PiiEventStore::new(
            backend.store.clone(),
            keys,
            annals::pii::MasterKey::generate(),
        ));
        backend
    }

    /// A SQLite store behind a [`CachingEventStore`] with an in-process cache.
    ///
    /// [`CachingEventStore`]: annals::cache::CachingEventStore
    pub async fn cached_sqlite() -> Self {
        let inner = TestStore::sqlite().await;
        let cache = Arc::new(annals::cache::InProcessCache::new());
        TestStore {
            store: Arc::new(annals::cache::CachingEventStore::new(
                inner.store.clone(),
                cache,
            )),
            ..inner
        }
    }

    /// A PostgreSQL store behind a [`CachingEventStore`] with the test Redis
    /// (a key prefix of its own).
    ///
    /// [`CachingEventStore`]: annals::cache::CachingEventStore
    pub async fn cached_postgres() -> Self {
        let inner = TestStore::postgres().await;
        let cache = annals::cache::RedisCache::builder(redis_url())
            .prefix(format!("conformance-{}", uuid::Uuid::now_v7().simple()))
            .connect()
            .await
            .unwrap_or_else(|error| panic!("cannot set up the test Redis: {error:?}"));
        TestStore {
            store: Arc::new(annals::cache::CachingEventStore::new(
                inner.store.clone(),
                Arc::new(cache),
            )),
            ..inner
        }
    }

    /// `statement` (written with `annals_` table names) for this store's
    /// table prefix.
    pub fn sql(&self, statement: &str) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(statement.replace("annals_", &self.table_prefix))
    }

    /// Writes a row with `payload` as its payload text, bypassing every check.
    /// `Err` carries the storage's refusal (a `jsonb` column refuses invalid
    /// JSON; the in-memory store only ever holds validated payloads).
    pub async fn plant_raw_event(
        &self,
        stream: &str,
        version: i64,
        event_type: &str,
        payload: &str,
    ) -> Result<(), String> {
        let event_id = uuid::Uuid::now_v7();
        match &self.raw {
            RawAccess::Memory => Err("the in-memory store only holds validated JSON".to_owned()),
            // In the store's tenant, so a tenant handle reads it.
            RawAccess::Sqlite(pool) => sqlx::query(self.sql(
                "INSERT INTO annals_events (commit_id, event_id, stream_id, version, event_type, \
                 schema_version, payload, headers, recorded_at, tenant_id) \
                 VALUES ((SELECT COALESCE(MAX(position), 0) + 1 FROM annals_events), ?, ?, ?, ?, 1, ?, '{}', ?, ?)",
            ))
            .bind(event_id)
            .bind(stream)
            .bind(version)
            .bind(event_type)
            .bind(payload)
            .bind(chrono::Utc::now().timestamp_micros())
            .bind(self.store.tenant())
            .execute(pool)
            .await
            .map(drop)
            .map_err(|error| error.to_string()),
            RawAccess::Postgres(pool) => sqlx::query(self.sql(
                "INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version, payload) \
                 VALUES ($1, $2, $3, $4, 1, $5::jsonb)",
            ))
            .bind(event_id)
            .bind(stream)
            .bind(version)
            .bind(event_type)
            .bind(payload)
            .execute(pool)
            .await
            .map(drop)
            .map_err(|error| error.to_string()),
        }
    }

    /// Runs `statement` (written with `annals_` names) with the events
    /// table's immutability trigger out of the way, as someone tampering with
    /// the database would, and puts the trigger back. `None` for the
    /// in-memory store; otherwise the rows the statement changed.
    pub async fn tamper(&self, statement: &str) -> Option<u64> {
        let statement = self.sql(statement);
        match &self.raw {
            RawAccess::Memory => None,
            RawAccess::Sqlite(pool) => {
                let mut tx = pool.begin().await.expect("begin");
                let triggers: Vec<(String, String)> = sqlx::query_as(self.sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' \
                     AND name IN ('annals_events_no_update', 'annals_events_no_delete')",
                ))
                .fetch_all(&mut *tx)
                .await
                .expect("read the immutability triggers");
                assert_eq!(triggers.len(), 2, "both immutability triggers exist");
                for (name, _) in &triggers {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TRIGGER {name}")))
                        .execute(&mut *tx)
                        .await
                        .expect("drop a trigger");
                }
                let changed = sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .expect("tampering statement")
                    .rows_affected();
                for (_, definition) in triggers {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(definition))
                        .execute(&mut *tx)
                        .await
                        .expect("restore a trigger");
                }
                tx.commit().await.expect("commit");
                Some(changed)
            }
            RawAccess::Postgres(pool) => {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query(
                    self.sql("ALTER TABLE annals_events DISABLE TRIGGER annals_events_immutable"),
                )
                .execute(&mut *tx)
                .await
                .expect("disable the trigger");
                let changed = sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .expect("tampering statement")
                    .rows_affected();
                sqlx::query(
                    self.sql("ALTER TABLE annals_events ENABLE TRIGGER annals_events_immutable"),
                )
                .execute(&mut *tx)
                .await
                .expect("enable the trigger");
                tx.commit().await.expect("commit");
                Some(changed)
            }
        }
    }

    /// Tries to change stored events with raw SQL. `None` for the in-memory
    /// store (it has no SQL, and its API has no update path); otherwise the
    /// outcome of an `UPDATE` and of a `DELETE`.
    pub async fn try_raw_mutations(&self) -> Option<[Result<u64, String>; 2]> {
        const UPDATE: &str = "UPDATE annals_events SET event_type = 'tampered'";
        const DELETE: &str = "DELETE FROM annals_events";
        let outcome = |result: Result<u64, sqlx::Error>| result.map_err(|error| error.to_string());
        match &self.raw {
            RawAccess::Memory => None,
            RawAccess::Sqlite(pool) => Some([
                outcome(
                    sqlx::query(self.sql(UPDATE))
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected()),
                ),
                outcome(
                    sqlx::query(self.sql(DELETE))
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected()),
                ),
            ]),
            RawAccess::Postgres(pool) => Some([
                outcome(
                    sqlx::query(self.sql(UPDATE))
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected()),
                ),
                outcome(
                    sqlx::query(self.sql(DELETE))
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected()),
                ),
            ]),
        }
    }
}

/// The variable `cargo xtask test` sets to the throwaway Redis server.
pub const REDIS_URL_VAR: &str = "ANNALS_TEST_REDIS_URL";

/// The test Redis URL. Panics, saying how to get one, when it is unset.
pub fn redis_url() -> String {
    match std::env::var(REDIS_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this test needs Redis, but {REDIS_URL_VAR} is not set.\n\
             Run every suite with `cargo xtask test` (it starts a throwaway server), or start \
             servers with `cargo xtask services up` and export the {REDIS_URL_VAR} it prints."
        ),
    }
}

/// Servers a test owns (to stop, crash or restart them): shared with the
/// IAM example's deployment test.
pub use annals_test_servers::{OwnNats, OwnPostgres, OwnRedis, OwnRedisCluster};

/// A PgBouncer in transaction pooling mode in front of the test PostgreSQL
/// server, logging every client in as one role over at most
/// `server_connections` server connections: each transaction may run on
/// any of them, so nothing that needs session state survives it.
pub struct OwnPgBouncer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

impl OwnPgBouncer {
    /// Starts one in front of `postgres_url()`'s server and database, as
    /// `role`. Panics with instructions when PgBouncer is missing.
    pub async fn start(role: &str, server_connections: u32) -> Self {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!("PgBouncer is not installed; `cargo xtask test` installs it (apt-get install pgbouncer)")
            });
        let server = sqlx::postgres::PgConnectOptions::from_str(&postgres_url())
            .unwrap_or_else(|error| panic!("bad {DATABASE_URL_VAR}: {error}"));
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let config = format!(
            "[databases]\n\
             * = host={host} port={server_port} user={role}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = transaction\n\
             default_pool_size = {server_connections}\n\
             max_client_conn = 100\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            host = server.get_host(),
            server_port = server.get_port(),
            dir = dir.path().display(),
        );
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini, config)
            .unwrap_or_else(|error| panic!("cannot write {ini:?}: {error}"));
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
        // PgBouncer refuses to run as root.
        let mut command = if as_root {
            let _ = std::process::Command::new("chmod")
                .arg("0777")
                .arg(dir.path())
                .status();
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            std::process::Command::new(&binary)
        };
        let output = command
            .arg("-d")
            .arg(&ini)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {binary:?}: {error}"));
        assert!(
            output.status.success(),
            "PgBouncer did not start: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let bouncer = OwnPgBouncer { port, dir };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "PgBouncer is not listening on {port}: {}",
                std::fs::read_to_string(bouncer.dir.path().join("pgbouncer.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        bouncer
    }

    /// A URL through it to the test database.
    pub fn url(&self) -> String {
        let server = sqlx::postgres::PgConnectOptions::from_str(&postgres_url())
            .unwrap_or_else(|error| panic!("bad {DATABASE_URL_VAR}: {error}"));
        format!(
            "postgres://pooled@127.0.0.1:{}/{}",
            self.port,
            server.get_database().unwrap_or("annals")
        )
    }
}

impl Drop for OwnPgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid")) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}
