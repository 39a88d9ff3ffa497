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

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Postgres, QueryBuilder, Row};

use super::append::{apply_inline, next_version, validate_batch};
use super::connect::redact_url;
use super::group_commit::{
    FlightFailure, FlightWriter, GroupCommit, GroupCommitOptions, GroupCommitStatus, QueuedAppend,
    submit,
};
use super::migrations::{self, HISTORY_TABLE};
use super::row::{RowIdentity, StoredRow, limit, to_i64};
use super::table_names::{TableNames, is_plain_identifier};
use super::tenancy::{check_one_holder, stream_tenant};
use super::tenant_roles::{self, PoolRole};
use super::tenant_session::{self, Session};
use super::{AppendResult, EventQuery, EventStore, QueryPage, StreamAppend};
use crate::dead_letter::DeadLetterStore;
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::hash_chain::{
    ChainKeys, ChainReport, ChainResigner, ChainVerifier, EventHash, LinkFormat, StoredEvent,
};
use crate::metadata::headers_json;
use crate::position::LogPosition;
use crate::snapshot::SnapshotStore;
use crate::sql_read_model::PostgresContext as _;
use crate::stream::{ExpectedVersion, StreamId};

mod dead_letters;
mod snapshots;

use dead_letters::PostgresDeadLetters;
use snapshots::PostgresSnapshots;

const BACKEND: &str = "postgres";

/// How often an append is re-run after colliding with a concurrent writer
/// before giving up.
const APPEND_ATTEMPTS: usize = 16;

/// `SELECT <every column> FROM annals_events`, optionally followed by a clause.
macro_rules! select_events {
    () => {
        concat!("SELECT ", event_columns!(), " FROM annals_events")
    };
    ($clause:literal) => {
        concat!(select_events!(), " ", $clause)
    };
}

/// Every column of an event, in the order `decode_row` reads them.
macro_rules! event_columns {
    () => {
        "position, transaction_id::text::bigint AS commit_id, event_id, stream_id, \
         version, event_type, schema_version, payload::text AS payload, tenant_id, \
         correlation_id, causation_id, actor, trace_context, headers::text AS headers, \
         recorded_at"
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

/// The whole append in one statement; see the module docs. Each stream
/// belongs to a group (`$15`): a group commit writes several callers' appends
/// at once, and a conflict keeps only its own group's events out.
const APPEND_SQL: &str = "
WITH expectations AS (
    SELECT s.stream_id, s.expected, s.grp, s.expected_head, COALESCE(h.version, 0) AS head,
           h.event_id AS head_event,
           COALESCE(h.hash, '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) AS head_link
    FROM unnest($1::text[], $2::int8[], $15::int4[], $19::text[], $20::uuid[])
         AS s(stream_id, expected, grp, tenant_key, expected_head)
    LEFT JOIN LATERAL (
        SELECT e.version, e.hash, e.event_id FROM annals_events e
        WHERE e.stream_id = s.stream_id AND coalesce(e.tenant_id, '') = s.tenant_key
        ORDER BY e.version DESC LIMIT 1
    ) h ON true
),
conflicts AS (
    SELECT stream_id, head, head_event, grp FROM expectations
    WHERE NOT (expected = -1 OR (expected = -2 AND head > 0) OR expected = head)
       OR (expected_head IS NOT NULL AND expected_head IS DISTINCT FROM head_event)
),
inserted AS (
    INSERT INTO annals_events (position, transaction_id, event_id, stream_id, version, event_type,
                               schema_version, payload, tenant_id, correlation_id, causation_id,
                               actor, trace_context, headers, recorded_at, hash, chain_key)
    OVERRIDING SYSTEM VALUE
    SELECT n.position, n.transaction_id, n.event_id, n.stream_id, n.version, n.event_type,
           n.schema_version, n.payload, n.tenant_id, n.correlation_id, n.causation_id, n.actor,
           n.trace_context, n.headers, n.recorded_at,
           annals_keyed_chain(n.head_link, annals_event_link_digest(
               n.event_id, n.stream_id, n.version, n.event_type, n.schema_version, n.payload::text,
               n.tenant_id, n.correlation_id, n.causation_id, n.actor, n.trace_context,
               n.headers::text, n.recorded_at, n.position, n.transaction_id::text::int8),
               $16::bytea, $17::bytea)
               OVER (PARTITION BY n.stream_id ORDER BY n.version),
           $18::int2
    -- Positions are drawn in the callers' order, before the links that
    -- cover them are computed.
    FROM (
        SELECT r.*, nextval('annals_events_position_seq'::regclass) AS position,
               pg_current_xact_id() AS transaction_id
        -- A fence (OFFSET 0): each payload is parsed once, not once per use.
        FROM (
            SELECT i.event_id, i.stream_id, x.head + i.idx AS version, i.event_type,
                   i.schema_version, i.payload::jsonb AS payload, i.tenant_id, i.correlation_id,
                   i.causation_id, i.actor, i.trace_context, i.headers::jsonb AS headers,
                   now() AS recorded_at, x.head_link, i.ord
            FROM unnest($3::text[], $4::int8[], $5::uuid[], $6::text[], $7::int4[], $8::text[],
                        $9::text[], $10::uuid[], $11::uuid[], $12::text[], $13::text[], $14::text[])
                 WITH ORDINALITY
                 AS i(stream_id, idx, event_id, event_type, schema_version, payload,
                      tenant_id, correlation_id, causation_id, actor, trace_context, headers, ord)
            JOIN expectations x ON x.stream_id = i.stream_id
            WHERE x.grp NOT IN (SELECT grp FROM conflicts)
            ORDER BY i.ord
            OFFSET 0
        ) r
    ) n
    -- Rows go in by stream, whatever order the callers named the streams
    -- in: two appends to the same streams then take their version keys in
    -- the same order and never wait on each other crosswise (a deadlock).
    -- Positions were drawn above, in the callers' order.
    ORDER BY n.stream_id, n.version
    RETURNING stream_id, version, position, transaction_id, recorded_at
)
SELECT false AS conflict, stream_id, version, position, transaction_id::text::bigint AS commit_id,
       recorded_at, NULL::uuid AS head_event
FROM inserted
UNION ALL
SELECT true, stream_id, head, 0, 0, now(), head_event FROM conflicts";

/// Every column a link covers, its stored link and how it was made, each
/// stream in version order, followed by a clause. `recorded_at` comes as
/// the microseconds the append hashed.
macro_rules! chain_rows {
    ($clause:literal) => {
        concat!(
            "SELECT position, transaction_id::text::int8, event_id, stream_id, version, \
             event_type, schema_version, payload::text, tenant_id, correlation_id, \
             causation_id, actor, trace_context, headers::text, \
             (extract(epoch FROM recorded_at) * 1000000)::int8, hash, chain_key \
             FROM annals_events ",
            $clause,
            " ORDER BY stream_id, version"
        )
    };
}

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
    /// Woken by `NOTIFY annals_events` for this store's schema; the
    /// listening task starts with the first reader that waits.
    wake: Arc<tokio::sync::OnceCell<Arc<super::AppendSignal>>>,
    /// The prefix of Annals' tables.
    tables: TableNames,
    /// Where concurrent small appends wait to be written together; `None`
    /// when group commit is off.
    group: Option<Arc<GroupCommit>>,
    /// The tenant every statement is confined to (row-level security), for
    /// a handle from [`for_tenant`](Self::for_tenant).
    tenant: Option<Arc<str>>,
    /// The keys new links are signed and verified with; `None`: unkeyed.
    chain_keys: Option<Arc<ChainKeys>>,
    /// The pool's role and whether row-level security passes it by, read
    /// by the first `for_tenant` (handles are often made per request).
    role: Arc<tokio::sync::OnceCell<PoolRole>>,
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

    /// Most connections in the pool (default 10).
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

    /// Whether to create and upgrade Annals' tables on connect (default `true`).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Signs the hash chain's links with a key the database does not hold
    /// (HMAC-SHA-256), and verifies with these keys only: an event the
    /// application's database role writes past Annals, or any change to a
    /// stored event, then shows up in [`verify_log`](EventStore::verify_log).
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

    /// Connects, and migrates unless turned off.
    pub async fn connect(self) -> Result<PostgresEventStore> {
        let group = match self.group_commit {
            Some(options) => Some(Arc::new(GroupCommit::new(options)?)),
            None => None,
        };
        let tables = match &self.table_prefix {
            Some(prefix) => TableNames::new(prefix)?,
            None => TableNames::default(),
        };
        let shown = redact_url(&self.url);
        let mut options = PgConnectOptions::from_str(&self.url)
            .map_err(|error| Error::Config(format!("invalid PostgreSQL URL {shown}: {error}")))?;
        if let Some(schema) = &self.schema {
            validate_schema_name(schema)?;
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
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|error| Error::Backend {
                backend: BACKEND,
                operation: "connect",
                source: format!("cannot connect to {shown}: {error}").into(),
            })?;
        let schema_missing = match &self.schema {
            // An application role may lack CREATE on the database, which
            // `CREATE SCHEMA IF NOT EXISTS` checks even when the schema is
            // there: only try when it is not.
            Some(schema) => !sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            )
            .bind(schema)
            .fetch_one(&pool)
            .await
            .map_err(failed("look up schema"))?,
            None => false,
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
            wake: Arc::default(),
            tables,
            group,
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

fn validate_schema_name(schema: &str) -> Result<()> {
    if is_plain_identifier(schema, 63) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "PostgreSQL schema name {schema:?} must be 1 to 63 lowercase letters, digits or underscores, not starting with a digit"
        )))
    }
}

impl PostgresEventStore {
    /// Connects with default options and creates or upgrades Annals' tables.
    pub async fn connect(url: &str) -> Result<Self> {
        PostgresEventStore::builder(url).connect().await
    }

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
        }
    }

    /// The connection pool, for read models that live in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A handle on the same pool whose every statement PostgreSQL confines
    /// to `tenant`'s rows, by row-level security on Annals' tables: each
    /// operation runs in a transaction that sets `annals.tenant` for itself
    /// alone. It reads, queries and replays only the tenant's events,
    /// snapshots, checkpoints and dead letters, and stamps the tenant on the
    /// events it appends (refusing events that name another tenant).
    /// Stream ids belong to their tenant: `acme`'s `user-1` and `globex`'s
    /// `user-1` are two streams, each with its own versions, and neither
    /// tenant's appends or errors reveal the other's. The handle does not
    /// migrate and has no group commit.
    ///
    /// The unscoped store (the owner's cross-tenant path) addresses a stream
    /// by its id alone: reading an id that several tenants use is refused
    /// ([`Error::InvalidInput`], field `stream id`), and its appends go to
    /// the stream of the tenant their events name.
    ///
    /// The pool must connect as the *application role*: a role granted
    /// access with [`grant_tenant_access`](Self::grant_tenant_access), which
    /// PostgreSQL confines to the tenant its transaction names and to
    /// nothing without one. The handle refuses ([`Error::Config`]) a role
    /// the policies pass by: a superuser, a `BYPASSRLS` role, or the owner
    /// role that applied the migrations (the cross-tenant path).
    ///
    /// ```no_run
    /// use annals::prelude::*;
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// let store = PostgresEventStore::builder("postgres://iam_app@localhost/iam")
    ///     .migrate(false) // the owner role migrates
    ///     .connect()
    ///     .await?;
    /// let acme = store.for_tenant("acme").await?;
    /// let globex = store.for_tenant("globex").await?;
    /// let user = StreamId::new("user-1")?;
    /// let registered = || NewEvent::json("iam.user.registered", &serde_json::json!({}));
    /// acme.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// // globex's `user-1` is another stream: it does not exist yet.
    /// assert!(globex.read_stream(&user, 1, 100).await?.is_empty());
    /// globex.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn for_tenant(&self, tenant: impl Into<String>) -> Result<PostgresEventStore> {
        let tenant = tenant.into();
        super::tenancy::validate_tenant_id(&tenant)?;
        let role = self
            .role
            .get_or_try_init(|| PoolRole::read(&self.pool, &self.tables))
            .await?;
        if let Some(reason) = role.unconfined {
            return Err(Error::Config(format!(
                "a handle scoped to tenant {tenant:?} needs row-level security, but PostgreSQL \
                 does not confine role {:?} ({reason}); connect tenant handles as an \
                 application role granted access with `grant_tenant_access`",
                role.name
            )));
        }
        Ok(PostgresEventStore {
            tenant: Some(tenant.into()),
            group: None,
            ..self.clone()
        })
    }

    /// The statements that give `role` (an existing role: 1 to 63
    /// lowercase letters, digits or underscores) the privileges of the
    /// application role on this store's tables: `SELECT` and `INSERT` on
    /// events, read and write on snapshots, checkpoints, dead letters and
    /// subject keys, all through the row-level security policies, and
    /// nothing on a partitioned layout's side table. For a DBA to review
    /// and apply; [`grant_tenant_access`](Self::grant_tenant_access) applies
    /// them.
    ///
    /// ```no_run
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// let owner = PostgresEventStore::builder("postgres://iam_owner@localhost/iam")
    ///     .schema("iam")
    ///     .connect()
    ///     .await?;
    /// println!("{}", owner.tenant_access_sql("iam_app").await?);
    /// // GRANT USAGE ON SCHEMA iam TO iam_app;
    /// // GRANT SELECT ON iam.annals_schema_history TO iam_app;
    /// // GRANT SELECT, INSERT ON iam.annals_events TO iam_app; ...
    /// # Ok(())
    /// # }
    /// ```
    pub async fn tenant_access_sql(&self, role: &str) -> Result<String> {
        let schema = tenant_roles::home_schema(&self.pool, &self.tables).await?;
        tenant_roles::application_grants(&schema, &self.tables, role)
    }

    /// Grants `role` the application role's privileges (see
    /// [`tenant_access_sql`](Self::tenant_access_sql)). Run it connected as
    /// the owner role; the role must exist (`CREATE ROLE iam_app LOGIN`).
    ///
    /// ```no_run
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// // Once, as the owner: migrate and grant.
    /// let owner = PostgresEventStore::connect("postgres://iam_owner@localhost/iam").await?;
    /// owner.grant_tenant_access("iam_app").await?;
    /// // Then the service, as the application role.
    /// let app = PostgresEventStore::builder("postgres://iam_app@localhost/iam")
    ///     .migrate(false)
    ///     .connect()
    ///     .await?;
    /// let acme = app.for_tenant("acme").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn grant_tenant_access(&self, role: &str) -> Result<()> {
        let sql = self.tenant_access_sql(role).await?;
        // Identifiers checked by `application_grants`: plain names only.
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map_err(failed("grant tenant access"))?;
        Ok(())
    }

    /// On a tenant-scoped handle, puts the tenant on every event, refusing
    /// an event that names another.
    fn stamp_tenant(&self, batch: &mut [StreamAppend]) -> Result<()> {
        let Some(tenant) = &self.tenant else {
            return Ok(());
        };
        for append in batch {
            for event in &mut append.events {
                match &event.metadata.tenant_id {
                    None => event.metadata.tenant_id = Some(tenant.to_string()),
                    Some(named) if **named == **tenant => {}
                    Some(named) => {
                        return Err(Error::invalid(
                            "tenant id",
                            format!(
                                "event {} for stream `{}` names tenant {named:?}, but the handle is scoped to {tenant:?}",
                                event.event_id, append.stream_id
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The tenant this handle is scoped to, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// A connection for one operation (a tenant's transaction if scoped).
    pub(crate) async fn session(&self) -> Result<Session> {
        Session::open(&self.pool, self.tenant.as_deref()).await
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

    async fn fetch_events(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        operation: &'static str,
    ) -> Result<Vec<RecordedEvent>> {
        // Decoded as they arrive: the server produces the next rows while
        // this decodes the last ones.
        let mut session = self.session().await?;
        let mut rows = query.fetch(session.connection());
        let mut events = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(failed(operation))? {
            events.push(decode_row(&row)?);
        }
        drop(rows);
        session.finish().await?;
        Ok(events)
    }
}

impl PostgresEventStore {
    /// [`fetch_events`](Self::fetch_events) for a `stream_events!` query,
    /// refusing a stream id several tenants hold.
    async fn fetch_stream_events(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        stream: &StreamId,
        operation: &'static str,
    ) -> Result<Vec<RecordedEvent>> {
        let mut session = self.session().await?;
        let mut rows = query.fetch(session.connection());
        let mut events = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(failed(operation))? {
            if events.is_empty() {
                let holders: i64 = row.try_get(15).map_err(|error| failed(operation)(error))?;
                check_one_holder(stream, usize::try_from(holders).unwrap_or(usize::MAX))?;
            }
            events.push(decode_row(&row)?);
        }
        drop(rows);
        session.finish().await?;
        Ok(events)
    }
}

impl PostgresEventStore {
    /// The notifier woken by appends to this store's schema, starting the
    /// listening task on first use. `None` if listening cannot start (the
    /// caller then just polls).
    async fn wake(&self) -> Option<Arc<super::AppendSignal>> {
        self.wake
            .get_or_try_init(|| async {
                let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&self.pool)
                    .await?;
                // A connection of its own, outside the store's pool: LISTEN
                // holds it for as long as the store lives, and the pool's
                // connections stay for statements.
                let own = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(self.pool.connect_options().as_ref().clone());
                let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
                listener
                    .listen(&self.tables.rename("annals_events"))
                    .await?;
                let notify = Arc::new(super::AppendSignal::default());
                tokio::spawn(listen(listener, schema, Arc::downgrade(&notify)));
                Ok::<_, sqlx::Error>(notify)
            })
            .await
            .inspect_err(|error| tracing::warn!(%error, "cannot LISTEN for appends; polling only"))
            .ok()
            .cloned()
    }
}

/// Forwards notifications for `schema` to the notifier until it is dropped.
/// A lost connection wakes everyone too (notifications may have been
/// missed), and `PgListener` reconnects on the next receive.
async fn listen(
    mut listener: sqlx::postgres::PgListener,
    schema: String,
    notify: Weak<super::AppendSignal>,
) {
    loop {
        let received = tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await;
        let Some(notify) = notify.upgrade() else {
            return;
        };
        match received {
            Ok(Ok(Some(notification))) if notification.payload() == schema => notify.signal(),
            Ok(Ok(Some(_))) | Err(_) => {}
            Ok(Ok(None)) => notify.signal(),
            Ok(Err(error)) => {
                tracing::warn!(%error, "LISTEN connection failed; retrying");
                notify.signal();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl PostgresEventStore {
    /// Recomputes the links of one stream or of the whole log in the
    /// application (the keys never reach the database), streaming the rows
    /// of one statement: one consistent read.
    async fn verify(&self, stream: Option<&StreamId>) -> Result<ChainReport> {
        let mut session = self.session().await?;
        let mut verifier = ChainVerifier::new(self.chain_keys.as_deref());
        {
            let mut rows = match stream {
                Some(stream) => sqlx::query(self.tables.sql(chain_rows!("WHERE stream_id = $1")))
                    .bind(stream.as_str())
                    .fetch(session.connection()),
                None => sqlx::query(self.tables.sql(chain_rows!(""))).fetch(session.connection()),
            };
            while let Some(row) = rows.try_next().await.map_err(failed("verify hash chain"))? {
                let (event, found, format) = chain_row(&row)?;
                verifier.check(event.position, &event, found, format);
            }
        }
        session.finish().await?;
        Ok(verifier.finish())
    }
}

impl PostgresEventStore {
    /// Re-signs every link of the log with the signing key of
    /// [`chain_keys`](PostgresStoreBuilder::chain_keys): how a log written
    /// before the store had keys comes under them, and how a retired key
    /// stops being needed. Run it once, connected as the role that owns the
    /// tables (it lifts the events' immutability trigger for the
    /// transaction), not as the application role.
    ///
    /// It first verifies the whole log, accepting unkeyed links that match
    /// and keyed links of known keys, and changes nothing when a link is
    /// broken ([`Error::ChainBroken`] names it): re-signing vouches for what
    /// the log holds. Appends wait until it commits; readers do not. Every
    /// event's row is rewritten once. Returns the new chain's report.
    ///
    /// ```no_run
    /// use annals::hash_chain::{ChainKey, ChainKeys};
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run(secret: &str) -> annals::Result<()> {
    /// let owner = PostgresEventStore::builder("postgres://annals_owner@localhost/annals")
    ///     .chain_keys(ChainKeys::new(ChainKey::from_hex(1, secret)?))
    ///     .connect()
    ///     .await?;
    /// let report = owner.resign_chain().await?;
    /// println!("{} events now signed with key 1", report.events_checked);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resign_chain(&self) -> Result<ChainReport> {
        let keys = self.chain_keys.as_deref().ok_or_else(|| {
            Error::Config(
                "re-signing the hash chain needs keys: build the store with `chain_keys`".into(),
            )
        })?;
        if let Some(tenant) = &self.tenant {
            return Err(Error::Config(format!(
                "re-signing the hash chain covers every tenant: run it on the owner's store, \
                 not on the handle of tenant {tenant:?}"
            )));
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(failed("begin re-signing"))?;
        // Takes a lock that holds appends back until the commit.
        sqlx::query(
            self.tables
                .sql("ALTER TABLE annals_events DISABLE TRIGGER annals_events_immutable"),
        )
        .execute(&mut *tx)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => {
                Error::Config(format!(
                    "re-signing the hash chain must run as the role that owns Annals' tables: {db}"
                ))
            }
            _ => failed("lift the immutability trigger")(error),
        })?;
        let mut verifier = ChainVerifier::accepting_unkeyed(keys);
        let mut resigner = ChainResigner::new(keys);
        let mut positions: Vec<i64> = Vec::new();
        let mut links: Vec<Vec<u8>> = Vec::new();
        {
            let mut rows = sqlx::query(self.tables.sql(chain_rows!(""))).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(failed("read the chain"))? {
                let (event, found, format) = chain_row(&row)?;
                verifier.check(event.position, &event, found, format);
                positions.push(to_i64(event.position));
                links.push(resigner.link(&event).as_bytes().to_vec());
            }
        }
        if let Some(first_break) = verifier.finish().first_break {
            // Dropping `tx` rolls back: the trigger stays on.
            return Err(Error::ChainBroken {
                first_break: Box::new(first_break),
            });
        }
        for (positions, links) in positions
            .chunks(RESIGN_CHUNK)
            .zip(links.chunks(RESIGN_CHUNK))
        {
            sqlx::query(self.tables.sql(
                "UPDATE annals_events AS e SET hash = n.hash, chain_key = $3 \
                 FROM unnest($1::int8[], $2::bytea[]) AS n(position, hash) \
                 WHERE e.position = n.position",
            ))
            .bind(positions)
            .bind(links)
            .bind(resigner.key_column())
            .execute(&mut *tx)
            .await
            .map_err(failed("re-sign links"))?;
        }
        sqlx::query(
            self.tables
                .sql("ALTER TABLE annals_events ENABLE TRIGGER annals_events_immutable"),
        )
        .execute(&mut *tx)
        .await
        .map_err(failed("restore the immutability trigger"))?;
        tx.commit().await.map_err(failed("commit re-signing"))?;
        self.verify(None).await
    }
}

/// Links re-signed per `UPDATE` statement.
const RESIGN_CHUNK: usize = 10_000;

/// A `chain_rows!` row: the columns its link covers, its stored link and
/// how it was made, or the error naming the unreadable column.
fn chain_row(row: &PgRow) -> Result<(StoredEvent<'_>, Option<EventHash>, LinkFormat)> {
    let unreadable = RowIdentity::unreadable();
    let identity = RowIdentity {
        stream_id: column(row, &unreadable, 3, "stream_id")?,
        version: column(row, &unreadable, 4, "version")?,
        event_type: column(row, &unreadable, 5, "event_type")?,
    };
    let number = |value: i64| u64::try_from(value).unwrap_or(0);
    let version: i64 = column(row, &identity, 4, "version")?;
    let schema_version: i32 = column(row, &identity, 6, "schema_version")?;
    let hash: Option<&[u8]> = column(row, &identity, 15, "hash")?;
    let chain_key: Option<i16> = column(row, &identity, 16, "chain_key")?;
    let event = StoredEvent {
        event_id: column(row, &identity, 2, "event_id")?,
        stream_id: column(row, &identity, 3, "stream_id")?,
        version: number(version),
        event_type: column(row, &identity, 5, "event_type")?,
        schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
        payload: column(row, &identity, 7, "payload")?,
        tenant_id: column(row, &identity, 8, "tenant_id")?,
        correlation_id: column(row, &identity, 9, "correlation_id")?,
        causation_id: column(row, &identity, 10, "causation_id")?,
        actor: column(row, &identity, 11, "actor")?,
        trace_context: column(row, &identity, 12, "trace_context")?,
        headers: column(row, &identity, 13, "headers")?,
        recorded_at_micros: column(row, &identity, 14, "recorded_at")?,
        position: number(column(row, &identity, 0, "position")?),
        commit_id: number(column(row, &identity, 1, "transaction_id")?),
    };
    // A link of the wrong length is as broken as a wrong link.
    let found = hash.map(|bytes| EventHash::from_slice(bytes).unwrap_or(EventHash::GENESIS));
    Ok((
        event,
        found,
        LinkFormat::from_column(chain_key.map(i64::from)),
    ))
}

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    super::row::failed(BACKEND, operation)
}

/// `expected` as the number the append statement compares with the head.
fn encode_expected(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::StreamExists => -2,
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(version) => to_i64(version),
    }
}

/// Column `index` of a `select_events!` row (`name` for the error).
fn column<'r, T>(row: &'r PgRow, identity: &RowIdentity, index: usize, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(index)
        .map_err(|error| identity.corrupt(format!("column `{name}` is unreadable: {error}")))
}

/// Decodes a row of `select_events!`, by column position (a name lookup
/// per column was a tenth of a catch-up's time).
fn decode_row(row: &PgRow) -> Result<RecordedEvent> {
    let unreadable = RowIdentity::unreadable();
    let identity = RowIdentity {
        stream_id: column(row, &unreadable, 3, "stream_id")?,
        version: column(row, &unreadable, 4, "version")?,
        event_type: column(row, &unreadable, 5, "event_type")?,
    };
    let schema_version: i32 = column(row, &identity, 6, "schema_version")?;
    let recorded_at: DateTime<Utc> = column(row, &identity, 14, "recorded_at")?;
    StoredRow {
        commit: column(row, &identity, 1, "commit_id")?,
        position: column(row, &identity, 0, "position")?,
        event_id: column(row, &identity, 2, "event_id")?,
        schema_version: i64::from(schema_version),
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

/// The append's arguments as column arrays for `UNNEST`.
#[derive(Default)]
struct AppendColumns<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    groups: Vec<i32>,
    stream_ids: Vec<&'a str>,
    indexes: Vec<i64>,
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<&'a str>,
    tenant_ids: Vec<Option<&'a str>>,
    correlation_ids: Vec<Option<uuid::Uuid>>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    actors: Vec<Option<&'a str>>,
    trace_contexts: Vec<Option<&'a str>>,
    headers: Vec<String>,
    /// Per stream: the tenant it belongs to (`''` for none), part of its
    /// identity since migration 16.
    stream_tenants: Vec<String>,
    /// Per stream: the id its newest event must have, if any.
    expected_heads: Vec<Option<uuid::Uuid>>,
}

impl<'a> AppendColumns<'a> {
    /// One caller's batch: a single group.
    fn new(batch: &'a [StreamAppend]) -> Result<Self> {
        let mut columns = AppendColumns::default();
        columns.push_group(0, batch)?;
        Ok(columns)
    }

    /// Several callers' batches, each its own group.
    fn grouped(batches: impl IntoIterator<Item = &'a [StreamAppend]>) -> Result<Self> {
        let mut columns = AppendColumns::default();
        for (group, batch) in (0..).zip(batches) {
            columns.push_group(group, batch)?;
        }
        Ok(columns)
    }

    fn push_group(&mut self, group: i32, batch: &'a [StreamAppend]) -> Result<()> {
        let columns = self;
        for append in batch {
            columns.streams.push(append.stream_id.as_str());
            columns.expected.push(encode_expected(append.expected));
            columns.groups.push(group);
            columns
                .stream_tenants
                .push(stream_tenant(&append.stream_id, &append.events)?);
            columns.expected_heads.push(append.expected_head);
            for (index, event) in append.events.iter().enumerate() {
                let metadata = &event.metadata;
                columns.stream_ids.push(append.stream_id.as_str());
                columns.indexes.push(to_i64(index as u64 + 1));
                columns.event_ids.push(event.event_id);
                columns.event_types.push(&event.event_type);
                columns
                    .schema_versions
                    .push(i32::try_from(event.schema_version).map_err(|_| {
                        Error::invalid(
                            "schema version",
                            format!(
                                "schema version {} of `{}` is too large",
                                event.schema_version, event.event_type
                            ),
                        )
                    })?);
                columns.payloads.push(event.payload.as_json());
                columns.tenant_ids.push(metadata.tenant_id.as_deref());
                columns.correlation_ids.push(metadata.correlation_id);
                columns.causation_ids.push(metadata.causation_id);
                columns.actors.push(metadata.actor.as_deref());
                columns
                    .trace_contexts
                    .push(metadata.trace_context.as_deref());
                columns.headers.push(headers_json(&metadata.headers));
            }
        }
        Ok(())
    }
}

/// Per stream: (version, position) of every row written, and when.
type WrittenRows = (Vec<(u64, LogPosition)>, DateTime<Utc>);

/// What the append statement reported for one stream.
enum StreamOutcome {
    Written(WrittenRows),
    /// The expected version did not hold; the stream's head.
    Conflict(u64, Option<uuid::Uuid>),
}

/// What one run of the append statement found.
enum AppendOutcome {
    Written(Vec<AppendResult>),
    /// Lost a race with a concurrent writer (unique violation, deadlock):
    /// run again on a fresh snapshot.
    Collided(sqlx::Error),
}

/// The append statement's rows, per stream.
fn stream_outcomes(rows: &[PgRow]) -> Result<HashMap<String, StreamOutcome>> {
    let read = |error: sqlx::Error| failed("read append result")(error);
    let mut outcomes: HashMap<String, StreamOutcome> = HashMap::new();
    for row in rows {
        let conflict: bool = row.try_get("conflict").map_err(read)?;
        let stream: String = row.try_get("stream_id").map_err(read)?;
        let version: i64 = row.try_get("version").map_err(read)?;
        let version = u64::try_from(version).unwrap_or(0);
        if conflict {
            let head_event: Option<uuid::Uuid> = row.try_get("head_event").map_err(read)?;
            outcomes.insert(stream, StreamOutcome::Conflict(version, head_event));
            continue;
        }
        let commit: i64 = row.try_get("commit_id").map_err(read)?;
        let position: i64 = row.try_get("position").map_err(read)?;
        let position = LogPosition::new(
            u64::try_from(commit).unwrap_or(0),
            u64::try_from(position).unwrap_or(0),
        );
        let recorded_at: DateTime<Utc> = row.try_get("recorded_at").map_err(read)?;
        if let StreamOutcome::Written((rows, _)) = outcomes
            .entry(stream)
            .or_insert_with(|| StreamOutcome::Written((Vec::new(), recorded_at)))
        {
            rows.push((version, position));
        }
    }
    Ok(outcomes)
}

/// One caller's result out of the statement's outcomes: its own version
/// conflict if any of its streams had one (then none of them was written),
/// else each stream's versions and positions.
fn batch_results(
    batch: &[StreamAppend],
    outcomes: &mut HashMap<String, StreamOutcome>,
) -> Result<Vec<AppendResult>> {
    for append in batch {
        if let Some(StreamOutcome::Conflict(head, head_event)) =
            outcomes.get(append.stream_id.as_str())
        {
            if !append.expected.accepts(*head) {
                return Err(Error::VersionConflict {
                    stream: append.stream_id.as_str().to_owned(),
                    expected: append.expected,
                    actual: *head,
                });
            }
            append.check_head(*head, *head_event)?;
        }
    }
    batch
        .iter()
        .map(|append| {
            let Some(StreamOutcome::Written((mut rows, recorded_at))) =
                outcomes.remove(append.stream_id.as_str())
            else {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "append",
                    source: format!("no rows were reported for stream `{}`", append.stream_id)
                        .into(),
                });
            };
            rows.sort_unstable();
            let last_version = rows.last().map_or(0, |(version, _)| *version);
            let positions: Vec<LogPosition> = rows.iter().map(|(_, position)| *position).collect();
            Ok(AppendResult {
                first_version: last_version + 1 - append.events.len() as u64,
                last_version,
                position: positions.last().copied().unwrap_or_default(),
                positions,
                recorded_at,
            })
        })
        .collect()
}

impl PostgresEventStore {
    /// Appends and applies an inline `projection` to the new events in the
    /// same transaction: the read model changes exactly when the events are
    /// stored, and a projection failure aborts the append (nothing written).
    /// Keep inline projections quick: the open transaction holds back the
    /// log's visibility horizon for every reader.
    pub async fn append_inline<P>(
        &self,
        mut batch: Vec<StreamAppend>,
        projection: &mut P,
    ) -> Result<Vec<AppendResult>>
    where
        P: crate::projection::Projection,
        P::Context: crate::sql_read_model::PostgresContext,
    {
        self.stamp_tenant(&mut batch)?;
        validate_batch(&batch)?;
        for append in &batch {
            next_version(&append.stream_id, 0, append.events.len())?;
        }
        let columns = AppendColumns::new(&batch)?;
        for _ in 0..APPEND_ATTEMPTS {
            let mut tx = self.begin().await?;
            match self.try_append(&mut *tx, &batch, &columns).await? {
                AppendOutcome::Written(results) => {
                    // On error `tx` is dropped: the append rolls back.
                    apply_inline(
                        projection,
                        &batch,
                        &results,
                        P::Context::from_postgres(&mut tx),
                    )
                    .await?;
                    tx.commit().await.map_err(failed("commit append"))?;
                    return Ok(results);
                }
                AppendOutcome::Collided(_) => continue,
            }
        }
        Err(Error::Backend {
            backend: BACKEND,
            operation: "append",
            source: format!("the append collided with concurrent writers {APPEND_ATTEMPTS} times")
                .into(),
        })
    }

    async fn try_append<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        batch: &[StreamAppend],
        columns: &AppendColumns<'_>,
    ) -> Result<AppendOutcome> {
        match self.run_append(executor, columns).await {
            Ok(rows) => {
                batch_results(batch, &mut stream_outcomes(&rows)?).map(AppendOutcome::Written)
            }
            Err(error) => classify_append_error(&self.tables, error, batch),
        }
    }

    async fn run_append<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        columns: &AppendColumns<'_>,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        // HMAC's padded keys, when the store signs: the statement keys the
        // links with them, and they are never stored.
        let pads = self.chain_keys.as_deref().map(|keys| keys.signing().pads());
        sqlx::query(self.tables.sql(APPEND_SQL))
            .bind(&columns.streams)
            .bind(&columns.expected)
            .bind(&columns.stream_ids)
            .bind(&columns.indexes)
            .bind(&columns.event_ids)
            .bind(&columns.event_types)
            .bind(&columns.schema_versions)
            .bind(&columns.payloads)
            .bind(&columns.tenant_ids)
            .bind(&columns.correlation_ids)
            .bind(&columns.causation_ids)
            .bind(&columns.actors)
            .bind(&columns.trace_contexts)
            .bind(&columns.headers)
            .bind(&columns.groups)
            .bind(pads.as_ref().map(|(inner, _)| inner.as_slice()))
            .bind(pads.as_ref().map(|(_, outer)| outer.as_slice()))
            .bind(LinkFormat::signing(self.chain_keys.as_deref()).column())
            .bind(&columns.stream_tenants)
            .bind(&columns.expected_heads)
            .fetch_all(executor)
            .await
    }
}

impl FlightWriter for PostgresEventStore {
    const BACKEND: &'static str = BACKEND;

    /// One append as its own statement, re-run after collisions.
    async fn append_alone(&self, batch: &[StreamAppend]) -> Result<Vec<AppendResult>> {
        let columns = AppendColumns::new(batch)?;
        let mut last_collision = None;
        for attempt in 0..APPEND_ATTEMPTS {
            // A collision aborts a tenant's transaction: each attempt gets
            // a session of its own.
            let mut session = self.session().await?;
            match self
                .try_append(session.connection(), batch, &columns)
                .await?
            {
                AppendOutcome::Written(results) => {
                    session.finish().await?;
                    return Ok(results);
                }
                AppendOutcome::Collided(error) => {
                    tracing::debug!(attempt, %error, "append collided with a concurrent writer; re-running");
                    last_collision = Some(error);
                }
            }
        }
        Err(Error::Backend {
            backend: BACKEND,
            operation: "append",
            source: format!(
                "the append collided with concurrent writers {APPEND_ATTEMPTS} times; last error: {}",
                last_collision.map_or_else(String::new, |error| error.to_string())
            )
            .into(),
        })
    }

    /// One statement for the whole flight; a conflict keeps only its own
    /// caller's events out (each caller's streams are a group of their own).
    async fn write_together(
        &self,
        flight: &[QueuedAppend],
    ) -> std::result::Result<Vec<Result<Vec<AppendResult>>>, FlightFailure> {
        let columns = AppendColumns::grouped(flight.iter().map(|q| q.batch.as_slice()))
            .map_err(|_| FlightFailure::WriteEachAlone)?;
        match self.run_append(&self.pool, &columns).await {
            Ok(rows) => {
                let mut outcomes = stream_outcomes(&rows)
                    .map_err(|error| FlightFailure::Failed(error.to_string()))?;
                Ok(flight
                    .iter()
                    .map(|queued| batch_results(&queued.batch, &mut outcomes))
                    .collect())
            }
            // The statement failed and rolled back.
            Err(sqlx::Error::Database(_)) => Err(FlightFailure::WriteEachAlone),
            Err(error) => Err(FlightFailure::Failed(format!("append failed: {error}"))),
        }
    }
}

fn classify_append_error(
    tables: &TableNames,
    error: sqlx::Error,
    batch: &[StreamAppend],
) -> Result<AppendOutcome> {
    if let sqlx::Error::Database(db) = &error {
        // Constraint names carry the table prefix (`annals_events_event_id`).
        let constraint = db
            .constraint()
            .and_then(|name| name.strip_prefix(tables.prefix()));
        match (db.code().as_deref(), constraint) {
            (Some("23505"), Some("events_event_id")) => {
                // PostgreSQL names the key in the error's detail:
                // "Key (event_id)=(...) already exists."
                let detail = db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.detail())
                    .unwrap_or_default();
                let ids: Vec<String> = batch
                    .iter()
                    .flat_map(|append| &append.events)
                    .map(|event| event.event_id.to_string())
                    .collect();
                let reason = match ids.iter().find(|id| detail.contains(id.as_str())) {
                    Some(id) => {
                        format!("an event with id {id} is already stored; event ids must be unique")
                    }
                    // Under row-level security PostgreSQL withholds the key
                    // from the detail: name the batch's ids instead.
                    None => format!(
                        "one of this batch's event ids ({}{}) is already stored; event ids must be unique",
                        ids.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                        if ids.len() > 10 { ", ..." } else { "" }
                    ),
                };
                return Err(Error::invalid("event id", reason));
            }
            // Another writer took the version first, or two multi-stream
            // appends waited on each other: re-run on a fresh snapshot.
            (Some("23505"), Some("events_stream_version"))
            | (Some("40P01"), _)
            | (Some("40001"), _) => return Ok(AppendOutcome::Collided(error)),
            _ => {}
        }
    }
    Err(failed("append")(error))
}

impl PostgresEventStore {
    /// The append itself (`append_batch` adds its metrics).
    async fn write_batch(&self, mut batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.stamp_tenant(&mut batch)?;
        validate_batch(&batch)?;
        for append in &batch {
            // Only checks that the largest possible version fits the column.
            next_version(&append.stream_id, 0, append.events.len())?;
        }
        if let Some(group) = self.group.as_ref().filter(|group| group.accepts(&batch)) {
            return submit(group, self, batch).await;
        }
        self.append_alone(&batch).await
    }
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
        crate::telemetry::measured_append(BACKEND, batch, |batch| self.write_batch(batch)).await
    }

    #[tracing::instrument(name = "annals.store.stream_version", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let mut session = self.session().await?;
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
        self.fetch_events(query, "read log").await
    }

    #[tracing::instrument(name = "annals.store.query", skip_all, fields(backend = BACKEND))]
    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        let mut sql = QueryBuilder::<Postgres>::new(self.tables.rename(select_events!()));
        sql.push(" WHERE position > ")
            .push_bind(to_i64(query.after_sequence));
        push_filters(&mut sql, query);
        sql.push(" ORDER BY position LIMIT ")
            .push_bind(limit(query.limit.saturating_add(1)));
        let events = self.fetch_events(sql.build(), "query").await?;
        Ok(QueryPage::from_overfetch(events, query.limit))
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let mut session = self.session().await?;
        let mut sql = QueryBuilder::<Postgres>::new(
            self.tables
                .rename("SELECT COUNT(*) FROM annals_events WHERE position > "),
        );
        sql.push_bind(to_i64(query.after_sequence));
        push_filters(&mut sql, query);
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
        self.verify(Some(stream)).await
    }

    #[tracing::instrument(name = "annals.store.verify_log", skip_all, fields(backend = BACKEND))]
    async fn verify_log(&self) -> Result<ChainReport> {
        self.verify(None).await
    }
}

/// The conditions of a query, after `WHERE position > ?`; shared by
/// `query` and `count` so they always agree.
fn push_filters(sql: &mut QueryBuilder<Postgres>, query: &EventQuery) {
    if !query.event_types.is_empty() {
        sql.push(" AND event_type = ANY(")
            .push_bind(query.event_types.clone())
            .push(")");
    }
    if let Some(from) = query.recorded_from {
        sql.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(until) = query.recorded_until {
        sql.push(" AND recorded_at < ").push_bind(until);
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
        sql.push(" AND headers @> jsonb_build_object(")
            .push_bind(key.clone())
            .push("::text, ")
            .push_bind(value.clone())
            .push("::text)");
    }
}
