//! PostgreSQL checkpoints and leases: the only place their SQL is written.
//! The store's `load_checkpoint`/`save_checkpoint`, the runners' leases and
//! the SQL read models' batch commits all use it.
//!
//! A row's identity is its tenant and its name (migration 0011) in the
//! store's schema and table prefix: the tenant is the transaction's
//! `annals.tenant` (set by a tenant handle's session), or `''` for the
//! unscoped store, so two tenants' readers of one name never share a row.
//! Lease expiry is judged by the database's clock (`now()`).
//!
//! Every statement here is sent unnamed (`persistent(false)`): a
//! transaction-mode pooler (PgBouncer) hands each transaction to any server
//! connection, where a statement prepared under a name by another client
//! would collide or be missing. Each lease operation is one short
//! transaction with no session state, so the leases work through one.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::PgPool;

use super::{Checkpoint, CheckpointStore, Lease, refusal, ttl_seconds};
use crate::error::Result;
use crate::store::position::LogPosition;
use crate::store::row::{position_from_columns, to_i64};
use crate::store::table_names::TableNames;

/// The row of `$1` in the transaction's tenant.
const LOAD: &str = "SELECT name, commit_id, sequence, owner, generation, renewed_at, lease_expires_at, paused, rebuild_requested \
     FROM annals_checkpoints \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') AND name = $1";

/// Every row of the transaction's tenant.
const LIST: &str = "SELECT name, commit_id, sequence, owner, generation, renewed_at, lease_expires_at, paused, rebuild_requested \
     FROM annals_checkpoints \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') ORDER BY name";

/// Sets `$1`'s position to `($2, $3)` whoever holds its lease.
const SAVE: &str = "INSERT INTO annals_checkpoints (name, commit_id, sequence, updated_at) \
     VALUES ($1, $2, $3, now()) \
     ON CONFLICT (tenant_id, name) DO UPDATE SET commit_id = excluded.commit_id, \
     sequence = excluded.sequence, updated_at = excluded.updated_at";

/// Takes `$1`'s lease for owner `$2` for `$3` seconds unless anyone holds a
/// live one; a new row starts at the beginning of the log.
const ACQUIRE: &str = "INSERT INTO annals_checkpoints AS c \
     (name, commit_id, sequence, updated_at, owner, generation, lease_expires_at, renewed_at) \
     VALUES ($1, 0, 0, now(), $2, 1, now() + make_interval(secs => $3), now()) \
     ON CONFLICT (tenant_id, name) DO UPDATE SET owner = excluded.owner, \
         generation = c.generation + 1, lease_expires_at = excluded.lease_expires_at, \
         renewed_at = excluded.renewed_at \
     WHERE c.owner IS NULL OR c.lease_expires_at IS NULL OR c.lease_expires_at <= now() \
     RETURNING generation, commit_id, sequence, renewed_at, lease_expires_at, paused, rebuild_requested";

/// Extends the lease of `$1` held by `$2` under generation `$3` by `$4` s.
const RENEW: &str = "UPDATE annals_checkpoints \
     SET lease_expires_at = now() + make_interval(secs => $4), renewed_at = now() \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') \
         AND name = $1 AND owner = $2 AND generation = $3 \
     RETURNING renewed_at, lease_expires_at, paused, rebuild_requested";

/// Gives up the lease of `$1` held by `$2` under generation `$3`.
const RELEASE: &str = "UPDATE annals_checkpoints SET owner = NULL, lease_expires_at = NULL \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') \
         AND name = $1 AND owner = $2 AND generation = $3";

/// Moves `$1` from `($3, $4)` to `($5, $6)` if its generation is still `$2`
/// and it is not paused.
const COMMIT: &str = "UPDATE annals_checkpoints \
     SET commit_id = $5, sequence = $6, updated_at = now() \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') \
         AND name = $1 AND generation = $2 AND commit_id = $3 AND sequence = $4 AND NOT paused";

/// Asks (`$2` true) for reader `$1` to rebuild, or withdraws the request.
const REQUEST_REBUILD: &str = "UPDATE annals_checkpoints SET rebuild_requested = $2 \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') AND name = $1";

/// Moves `$1` back to the start from `($3, $4)` if its generation is still
/// `$2` and it is not paused, clearing its rebuild request.
const REBUILD: &str = "UPDATE annals_checkpoints \
     SET commit_id = 0, sequence = 0, rebuild_requested = false, updated_at = now() \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') \
         AND name = $1 AND generation = $2 AND commit_id = $3 AND sequence = $4 AND NOT paused";

/// Pauses (`$2` true) or resumes reader `$1`.
const SET_PAUSED: &str = "UPDATE annals_checkpoints SET paused = $2 \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') AND name = $1";

/// How long a lease statement waits for the row's lock (held, at most, by
/// a batch committing under the lease) before giving up and retrying.
const LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', '2s', true)";

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> crate::Error {
    crate::store::row::failed("postgres", operation)
}

type Row = (
    String,
    i64,
    i64,
    Option<String>,
    i64,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    bool,
    bool,
);

fn checkpoint_of(row: Row) -> Checkpoint {
    let (
        name,
        commit,
        sequence,
        owner,
        generation,
        renewed_at,
        lease_expires_at,
        paused,
        rebuild_requested,
    ) = row;
    Checkpoint {
        name,
        position: position_from_columns(commit, sequence),
        owner,
        generation: u64::try_from(generation).unwrap_or(0),
        renewed_at,
        lease_expires_at,
        paused,
        rebuild_requested,
    }
}

/// Moves the checkpoint under `lease` from `previous` back to the start of
/// the log and clears its rebuild request, inside the caller's transaction
/// (a read model's rebuild, which empties its tables in the same
/// transaction). Refused like a commit.
pub(crate) async fn rebuild_in(
    connection: &mut PgConnection,
    tables: &TableNames,
    lease: &Lease,
    previous: LogPosition,
) -> Result<()> {
    let moved = sqlx::query(tables.sql(REBUILD))
        .persistent(false)
        .bind(&lease.name)
        .bind(to_i64(lease.generation))
        .bind(to_i64(previous.commit))
        .bind(to_i64(previous.sequence))
        .execute(&mut *connection)
        .await
        .map_err(failed("rebuild checkpoint"))?
        .rows_affected();
    fenced_outcome(connection, tables, lease, previous, moved).await
}

/// What a fenced statement that moved `moved` rows means: done, or the
/// refusal the row explains (lease lost, checkpoint moved, paused).
async fn fenced_outcome(
    connection: &mut PgConnection,
    tables: &TableNames,
    lease: &Lease,
    previous: LogPosition,
    moved: u64,
) -> Result<()> {
    if moved == 1 {
        return Ok(());
    }
    let found = load_in(connection, tables, &lease.name).await?;
    Err(refusal(
        lease,
        previous,
        found.map(|row| (row.generation, row.position, row.paused)),
    ))
}

/// The row of reader `name`, inside the caller's transaction.
pub(crate) async fn load_in(
    connection: &mut PgConnection,
    tables: &TableNames,
    name: &str,
) -> Result<Option<Checkpoint>> {
    let row: Option<Row> = sqlx::query_as(tables.sql(LOAD))
        .persistent(false)
        .bind(name)
        .fetch_optional(&mut *connection)
        .await
        .map_err(failed("load checkpoint"))?;
    Ok(row.map(checkpoint_of))
}

/// Moves the checkpoint under `lease`, inside the caller's transaction (a
/// read model's batch): refused with [`crate::Error::LeaseLost`] or
/// [`crate::Error::CheckpointMoved`], and then the caller rolls back.
pub(crate) async fn commit_in(
    connection: &mut PgConnection,
    tables: &TableNames,
    lease: &Lease,
    previous: LogPosition,
    next: LogPosition,
) -> Result<()> {
    next.check_storable_checkpoint(&lease.name)?;
    let moved = sqlx::query(tables.sql(COMMIT))
        .persistent(false)
        .bind(&lease.name)
        .bind(to_i64(lease.generation))
        .bind(to_i64(previous.commit))
        .bind(to_i64(previous.sequence))
        .bind(to_i64(next.commit))
        .bind(to_i64(next.sequence))
        .execute(&mut *connection)
        .await
        .map_err(failed("commit checkpoint"))?
        .rows_affected();
    fenced_outcome(connection, tables, lease, previous, moved).await
}

/// The checkpoints of a PostgreSQL store (or read model): its pool, table
/// prefix and, for a tenant handle, its tenant.
#[derive(Debug, Clone)]
pub(crate) struct PostgresCheckpoints {
    pool: PgPool,
    tables: TableNames,
    tenant: Option<std::sync::Arc<str>>,
}

impl PostgresCheckpoints {
    pub(crate) fn new(
        pool: PgPool,
        tables: TableNames,
        tenant: Option<std::sync::Arc<str>>,
    ) -> Self {
        PostgresCheckpoints {
            pool,
            tables,
            tenant,
        }
    }

    /// Sets one of an operator's flags (`statement`: `$1` name, `$2` value)
    /// on reader `name`'s row; `false` if it has none.
    async fn set_flag(
        &self,
        statement: &'static str,
        name: &str,
        value: bool,
        operation: &'static str,
    ) -> Result<bool> {
        let mut transaction =
            crate::store::tenant_session::begin(&self.pool, self.tenant.as_deref()).await?;
        let changed = sqlx::query(self.tables.sql(statement))
            .persistent(false)
            .bind(name)
            .bind(value)
            .execute(&mut *transaction)
            .await
            .map_err(failed(operation))?
            .rows_affected();
        transaction.commit().await.map_err(failed(operation))?;
        Ok(changed == 1)
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut transaction =
            crate::store::tenant_session::begin(&self.pool, self.tenant.as_deref()).await?;
        sqlx::query(LOCK_TIMEOUT)
            .persistent(false)
            .execute(&mut *transaction)
            .await
            .map_err(failed("set the lock timeout"))?;
        Ok(transaction)
    }
}

#[async_trait]
impl CheckpointStore for PostgresCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>> {
        let mut transaction =
            crate::store::tenant_session::begin(&self.pool, self.tenant.as_deref()).await?;
        let row = load_in(&mut transaction, &self.tables, name).await?;
        transaction
            .commit()
            .await
            .map_err(failed("end checkpoint read"))?;
        Ok(row)
    }

    async fn list(&self) -> Result<Vec<Checkpoint>> {
        let mut transaction =
            crate::store::tenant_session::begin(&self.pool, self.tenant.as_deref()).await?;
        let rows: Vec<Row> = sqlx::query_as(self.tables.sql(LIST))
            .persistent(false)
            .fetch_all(&mut *transaction)
            .await
            .map_err(failed("list checkpoints"))?;
        transaction
            .commit()
            .await
            .map_err(failed("end checkpoint read"))?;
        Ok(rows.into_iter().map(checkpoint_of).collect())
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        self.set_flag(SET_PAUSED, name, paused, "pause reader")
            .await
    }

    async fn request_rebuild(&self, name: &str, requested: bool) -> Result<bool> {
        self.set_flag(REQUEST_REBUILD, name, requested, "request rebuild")
            .await
    }

    async fn save(&self, name: &str, position: LogPosition) -> Result<()> {
        position.check_storable_checkpoint(name)?;
        let mut transaction =
            crate::store::tenant_session::begin(&self.pool, self.tenant.as_deref()).await?;
        sqlx::query(self.tables.sql(SAVE))
            .persistent(false)
            .bind(name)
            .bind(to_i64(position.commit))
            .bind(to_i64(position.sequence))
            .execute(&mut *transaction)
            .await
            .map_err(failed("save checkpoint"))?;
        transaction
            .commit()
            .await
            .map_err(failed("commit checkpoint"))?;
        Ok(())
    }

    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        let mut transaction = self.begin().await?;
        let row: Option<(i64, i64, i64, DateTime<Utc>, DateTime<Utc>, bool, bool)> =
            sqlx::query_as(self.tables.sql(ACQUIRE))
                .persistent(false)
                .bind(name)
                .bind(owner)
                .bind(ttl_seconds(ttl))
                .fetch_optional(&mut *transaction)
                .await
                .map_err(failed("take lease"))?;
        transaction.commit().await.map_err(failed("commit lease"))?;
        Ok(row.map(
            |(generation, commit, sequence, renewed_at, expires_at, paused, rebuild_requested)| {
                Lease {
                    name: name.to_owned(),
                    owner: owner.to_owned(),
                    generation: u64::try_from(generation).unwrap_or(0),
                    position: position_from_columns(commit, sequence),
                    renewed_at,
                    expires_at,
                    paused,
                    rebuild_requested,
                }
            },
        ))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let mut transaction = self.begin().await?;
        let row: Option<(DateTime<Utc>, DateTime<Utc>, bool, bool)> =
            sqlx::query_as(self.tables.sql(RENEW))
                .persistent(false)
                .bind(&lease.name)
                .bind(&lease.owner)
                .bind(to_i64(lease.generation))
                .bind(ttl_seconds(ttl))
                .fetch_optional(&mut *transaction)
                .await
                .map_err(failed("renew lease"))?;
        transaction
            .commit()
            .await
            .map_err(failed("commit lease renewal"))?;
        Ok(row.map(
            |(renewed_at, expires_at, paused, rebuild_requested)| Lease {
                renewed_at,
                expires_at,
                paused,
                rebuild_requested,
                ..lease.clone()
            },
        ))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut transaction = self.begin().await?;
        sqlx::query(self.tables.sql(RELEASE))
            .persistent(false)
            .bind(&lease.name)
            .bind(&lease.owner)
            .bind(to_i64(lease.generation))
            .execute(&mut *transaction)
            .await
            .map_err(failed("release lease"))?;
        transaction
            .commit()
            .await
            .map_err(failed("commit lease release"))?;
        Ok(())
    }

    async fn commit(&self, lease: &Lease, previous: LogPosition, next: LogPosition) -> Result<()> {
        let mut transaction = self.begin().await?;
        commit_in(&mut transaction, &self.tables, lease, previous, next).await?;
        transaction
            .commit()
            .await
            .map_err(failed("commit checkpoint"))?;
        Ok(())
    }
}
