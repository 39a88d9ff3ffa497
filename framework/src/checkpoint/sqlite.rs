//! SQLite checkpoints and leases: the only place their SQL is written. The
//! store's `load_checkpoint`/`save_checkpoint`, the runners' leases and the
//! SQLite read model's batch commits all use it. Every process on a SQLite
//! file shares one machine's clock, which judges expiry; times are
//! microseconds since the Unix epoch.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;

use super::{Checkpoint, CheckpointStore, Lease};
use crate::error::Result;
use crate::store::position::LogPosition;
use crate::store::row::{position_from_columns, to_i64};
use crate::store::table_names::TableNames;

/// `?1` name, `?2` tenant.
const LOAD: &str = "SELECT name, commit_id, sequence, owner, generation, renewed_at, lease_expires_at, paused, rebuild_requested \
     FROM annals_checkpoints WHERE name = ?1 AND tenant_id = ?2";

/// `?1` tenant.
const LIST: &str = "SELECT name, commit_id, sequence, owner, generation, renewed_at, lease_expires_at, paused, rebuild_requested \
     FROM annals_checkpoints WHERE tenant_id = ?1 ORDER BY name";

/// `?1` name, `?2` commit, `?3` sequence, `?4` now, `?5` tenant.
const SAVE: &str = "INSERT INTO annals_checkpoints (name, commit_id, sequence, updated_at, tenant_id) \
     VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (tenant_id, name) DO UPDATE SET commit_id = excluded.commit_id, \
     sequence = excluded.sequence, updated_at = excluded.updated_at";

/// `?1` name, `?2` owner, `?3` now, `?4` expiry, `?5` tenant.
const ACQUIRE: &str = "INSERT INTO annals_checkpoints \
     (name, commit_id, sequence, updated_at, owner, generation, lease_expires_at, renewed_at, tenant_id) \
     VALUES (?1, 0, 0, ?3, ?2, 1, ?4, ?3, ?5) \
     ON CONFLICT (tenant_id, name) DO UPDATE SET owner = excluded.owner, \
         generation = annals_checkpoints.generation + 1, \
         lease_expires_at = excluded.lease_expires_at, renewed_at = excluded.renewed_at \
     WHERE annals_checkpoints.owner IS NULL OR annals_checkpoints.lease_expires_at IS NULL \
         OR annals_checkpoints.lease_expires_at <= ?3 \
     RETURNING generation, commit_id, sequence, paused, rebuild_requested";

/// `?1` name, `?2` owner, `?3` generation, `?4` now, `?5` expiry, `?6` tenant.
const RENEW: &str = "UPDATE annals_checkpoints SET lease_expires_at = ?5, renewed_at = ?4 \
     WHERE name = ?1 AND owner = ?2 AND generation = ?3 AND tenant_id = ?6 RETURNING paused, rebuild_requested";

/// `?1` name, `?2` owner, `?3` generation, `?4` tenant.
const RELEASE: &str = "UPDATE annals_checkpoints SET owner = NULL, lease_expires_at = NULL \
     WHERE name = ?1 AND owner = ?2 AND generation = ?3 AND tenant_id = ?4";

/// `?1` name, `?2` generation, `?3`/`?4` previous, `?5`/`?6` next, `?7` now,
/// `?8` tenant.
const COMMIT: &str = "UPDATE annals_checkpoints SET commit_id = ?5, sequence = ?6, updated_at = ?7 \
     WHERE name = ?1 AND generation = ?2 AND commit_id = ?3 AND sequence = ?4 AND tenant_id = ?8 \
         AND paused = 0";

/// `?1` name, `?2` requested (0 or 1), `?3` tenant.
const REQUEST_REBUILD: &str =
    "UPDATE annals_checkpoints SET rebuild_requested = ?2 WHERE name = ?1 AND tenant_id = ?3";

/// `?1` name, `?2` generation, `?3`/`?4` previous, `?5` now, `?6` tenant.
const REBUILD: &str = "UPDATE annals_checkpoints \
     SET commit_id = 0, sequence = 0, rebuild_requested = 0, updated_at = ?5 \
     WHERE name = ?1 AND generation = ?2 AND commit_id = ?3 AND sequence = ?4 AND tenant_id = ?6 \
         AND paused = 0";

/// `?1` name, `?2` paused (0 or 1), `?3` tenant.
const SET_PAUSED: &str =
    "UPDATE annals_checkpoints SET paused = ?2 WHERE name = ?1 AND tenant_id = ?3";

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> crate::Error {
    crate::store::row::failed("sqlite", operation)
}

fn time(micros: Option<i64>) -> Option<DateTime<Utc>> {
    micros.and_then(DateTime::from_timestamp_micros)
}

fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

type Row = (
    String,
    i64,
    i64,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    bool,
    bool,
);

/// The row of reader `name`, inside the caller's transaction.
pub(crate) async fn load_in(
    connection: &mut SqliteConnection,
    tables: &TableNames,
    tenant: &str,
    name: &str,
) -> Result<Option<Checkpoint>> {
    let row: Option<Row> = sqlx::query_as(tables.sql(LOAD))
        .bind(name)
        .bind(tenant)
        .fetch_optional(&mut *connection)
        .await
        .map_err(failed("load checkpoint"))?;
    Ok(row.map(checkpoint_of))
}

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
        renewed_at: time(renewed_at),
        lease_expires_at: time(lease_expires_at),
        paused,
        rebuild_requested,
    }
}

/// Moves the checkpoint under `lease` from `previous` back to the start of
/// the log and clears its rebuild request, inside the caller's transaction
/// (a read model's rebuild, which empties its tables in the same
/// transaction). Refused like a commit.
pub(crate) async fn rebuild_in(
    connection: &mut SqliteConnection,
    tables: &TableNames,
    tenant: &str,
    lease: &Lease,
    previous: LogPosition,
) -> Result<()> {
    let moved = sqlx::query(tables.sql(REBUILD))
        .bind(&lease.name)
        .bind(to_i64(lease.generation))
        .bind(to_i64(previous.commit))
        .bind(to_i64(previous.sequence))
        .bind(Utc::now().timestamp_micros())
        .bind(tenant)
        .execute(&mut *connection)
        .await
        .map_err(failed("rebuild checkpoint"))?
        .rows_affected();
    fenced_outcome(connection, tables, tenant, lease, previous, moved).await
}

/// What a fenced statement that moved `moved` rows means: done, or the
/// refusal the row explains (lease lost, checkpoint moved, paused).
async fn fenced_outcome(
    connection: &mut SqliteConnection,
    tables: &TableNames,
    tenant: &str,
    lease: &Lease,
    previous: LogPosition,
    moved: u64,
) -> Result<()> {
    if moved == 1 {
        return Ok(());
    }
    let found = load_in(connection, tables, tenant, &lease.name).await?;
    Err(super::refusal(
        lease,
        previous,
        found.map(|row| (row.generation, row.position, row.paused)),
    ))
}

/// Moves the checkpoint under `lease`, inside the caller's transaction (a
/// read model's batch): refused with [`crate::Error::LeaseLost`] or
/// [`crate::Error::CheckpointMoved`], and then the caller rolls back.
pub(crate) async fn commit_in(
    connection: &mut SqliteConnection,
    tables: &TableNames,
    tenant: &str,
    lease: &Lease,
    previous: LogPosition,
    next: LogPosition,
) -> Result<()> {
    next.check_storable_checkpoint(&lease.name)?;
    let moved = sqlx::query(tables.sql(COMMIT))
        .bind(&lease.name)
        .bind(to_i64(lease.generation))
        .bind(to_i64(previous.commit))
        .bind(to_i64(previous.sequence))
        .bind(to_i64(next.commit))
        .bind(to_i64(next.sequence))
        .bind(Utc::now().timestamp_micros())
        .bind(tenant)
        .execute(&mut *connection)
        .await
        .map_err(failed("commit checkpoint"))?
        .rows_affected();
    fenced_outcome(connection, tables, tenant, lease, previous, moved).await
}

/// The checkpoints of a SQLite store (or read model), in one tenant (`""`:
/// the unscoped store's).
#[derive(Debug, Clone)]
pub(crate) struct SqliteCheckpoints {
    pool: SqlitePool,
    tables: TableNames,
    tenant: String,
}

impl SqliteCheckpoints {
    /// Sets one of an operator's flags (`statement`: `?1` name, `?2` value,
    /// `?3` tenant) on reader `name`'s row; `false` if it has none.
    async fn set_flag(
        &self,
        statement: &'static str,
        name: &str,
        value: bool,
        operation: &'static str,
    ) -> Result<bool> {
        let changed = sqlx::query(self.tables.sql(statement))
            .bind(name)
            .bind(value)
            .bind(&self.tenant)
            .execute(&self.pool)
            .await
            .map_err(failed(operation))?
            .rows_affected();
        Ok(changed == 1)
    }

    pub(crate) fn new(pool: SqlitePool, tables: TableNames, tenant: &str) -> Self {
        SqliteCheckpoints {
            pool,
            tables,
            tenant: tenant.to_owned(),
        }
    }
}

#[async_trait]
impl CheckpointStore for SqliteCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(failed("acquire connection"))?;
        load_in(&mut connection, &self.tables, &self.tenant, name).await
    }

    async fn list(&self) -> Result<Vec<Checkpoint>> {
        let rows: Vec<Row> = sqlx::query_as(self.tables.sql(LIST))
            .bind(&self.tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("list checkpoints"))?;
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
        sqlx::query(self.tables.sql(SAVE))
            .bind(name)
            .bind(to_i64(position.commit))
            .bind(to_i64(position.sequence))
            .bind(Utc::now().timestamp_micros())
            .bind(&self.tenant)
            .execute(&self.pool)
            .await
            .map_err(failed("save checkpoint"))?;
        Ok(())
    }

    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        let now = Utc::now();
        let expires_at = expiry(now, ttl);
        let row: Option<(i64, i64, i64, bool, bool)> = sqlx::query_as(self.tables.sql(ACQUIRE))
            .bind(name)
            .bind(owner)
            .bind(now.timestamp_micros())
            .bind(expires_at.timestamp_micros())
            .bind(&self.tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("take lease"))?;
        Ok(row.map(
            |(generation, commit, sequence, paused, rebuild_requested)| Lease {
                name: name.to_owned(),
                owner: owner.to_owned(),
                generation: u64::try_from(generation).unwrap_or(0),
                position: position_from_columns(commit, sequence),
                renewed_at: now,
                expires_at,
                paused,
                rebuild_requested,
            },
        ))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let now = Utc::now();
        let expires_at = expiry(now, ttl);
        let flags: Option<(bool, bool)> = sqlx::query_as(self.tables.sql(RENEW))
            .bind(&lease.name)
            .bind(&lease.owner)
            .bind(to_i64(lease.generation))
            .bind(now.timestamp_micros())
            .bind(expires_at.timestamp_micros())
            .bind(&self.tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("renew lease"))?;
        Ok(flags.map(|(paused, rebuild_requested)| Lease {
            renewed_at: now,
            expires_at,
            paused,
            rebuild_requested,
            ..lease.clone()
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        sqlx::query(self.tables.sql(RELEASE))
            .bind(&lease.name)
            .bind(&lease.owner)
            .bind(to_i64(lease.generation))
            .bind(&self.tenant)
            .execute(&self.pool)
            .await
            .map_err(failed("release lease"))?;
        Ok(())
    }

    async fn commit(&self, lease: &Lease, previous: LogPosition, next: LogPosition) -> Result<()> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(failed("acquire connection"))?;
        commit_in(
            &mut connection,
            &self.tables,
            &self.tenant,
            lease,
            previous,
            next,
        )
        .await
    }
}
