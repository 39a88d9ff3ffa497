//! The Sqlite store's snapshots table.

use async_trait::async_trait;
use chrono::DateTime;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};

use super::{BACKEND, SqliteEventStore, failed};
use crate::aggregate::snapshot::{RetentionPolicy, Snapshot, SnapshotStore};
use crate::error::{Error, Result};
use crate::store::row::to_i64;
use crate::store::stream::StreamId;

/// The snapshots of a [`SqliteEventStore`] handle (its tenant's).
pub(super) struct SqliteSnapshots(pub(super) SqliteEventStore);

#[async_trait]
impl SnapshotStore for SqliteSnapshots {
    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        sqlx::query(
            self.0.tables.sql("INSERT INTO annals_snapshots (tenant_id, stream_id, version, snapshot_version, encoding, data, taken_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, stream_id, version) DO UPDATE SET snapshot_version = excluded.snapshot_version, \
             encoding = excluded.encoding, data = excluded.data, taken_at = excluded.taken_at"),
        )
        .bind(self.0.own_tenant())
        .bind(snapshot.stream_id.as_str())
        .bind(to_i64(snapshot.version))
        .bind(i64::from(snapshot.snapshot_version))
        .bind(i64::from(snapshot.encoding))
        .bind(&snapshot.data)
        .bind(snapshot.taken_at.timestamp_micros())
        .execute(&self.0.pool)
        .await
        .map_err(failed("save snapshot"))?;
        Ok(())
    }

    async fn load(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<Snapshot>> {
        let row = sqlx::query(self.0.tables.sql(
            "SELECT version, snapshot_version, encoding, data, taken_at FROM annals_snapshots \
             WHERE tenant_id = ? AND stream_id = ? AND version <= ? ORDER BY version DESC LIMIT 1",
        ))
        .bind(self.0.own_tenant())
        .bind(stream.as_str())
        .bind(max_version.map_or(i64::MAX, to_i64))
        .fetch_optional(&self.0.pool)
        .await
        .map_err(failed("load snapshot"))?;
        row.map(|row| decode_snapshot_row(stream, &row)).transpose()
    }

    async fn prune(&self, policy: &RetentionPolicy) -> Result<u64> {
        let keep_last = policy
            .keep_last
            .map(|keep| i64::try_from(keep).unwrap_or(i64::MAX));
        let cutoff = policy.cutoff().map(|at| at.timestamp_micros());
        let result = sqlx::query(
            self.0.tables.sql("DELETE FROM annals_snapshots WHERE (tenant_id, stream_id, version) IN ( \
                SELECT tenant_id, stream_id, version FROM ( \
                    SELECT tenant_id, stream_id, version, taken_at, \
                           row_number() OVER (PARTITION BY tenant_id, stream_id ORDER BY version DESC) AS rank \
                    FROM annals_snapshots WHERE ?3 IS NULL OR tenant_id = ?3) \
                WHERE (?1 IS NOT NULL AND rank > ?1) OR (?2 IS NOT NULL AND taken_at < ?2))"),
        )
        .bind(keep_last)
        .bind(cutoff)
        .bind(self.0.tenant.as_deref())
        .execute(&self.0.pool)
        .await
        .map_err(failed("prune snapshots"))?;
        Ok(result.rows_affected())
    }

    async fn delete_stream(&self, stream: &StreamId) -> Result<u64> {
        let result = sqlx::query(
            self.0
                .tables
                .sql("DELETE FROM annals_snapshots WHERE tenant_id = ? AND stream_id = ?"),
        )
        .bind(self.0.own_tenant())
        .bind(stream.as_str())
        .execute(&self.0.pool)
        .await
        .map_err(failed("delete snapshots"))?;
        Ok(result.rows_affected())
    }
}

fn decode_snapshot_row(stream: &StreamId, row: &SqliteRow) -> Result<Snapshot> {
    let bad = |column: &str, error: String| Error::Backend {
        backend: BACKEND,
        operation: "load snapshot",
        source: format!("snapshot of `{stream}`: column `{column}`: {error}").into(),
    };
    let version: i64 = field(row, "version", &bad)?;
    let snapshot_version: i64 = field(row, "snapshot_version", &bad)?;
    let encoding: i64 = field(row, "encoding", &bad)?;
    let taken_at: i64 = field(row, "taken_at", &bad)?;
    Ok(Snapshot {
        stream_id: stream.clone(),
        version: u64::try_from(version).map_err(|e| bad("version", e.to_string()))?,
        snapshot_version: u32::try_from(snapshot_version)
            .map_err(|e| bad("snapshot_version", e.to_string()))?,
        encoding: u8::try_from(encoding).map_err(|e| bad("encoding", e.to_string()))?,
        data: field(row, "data", &bad)?,
        taken_at: DateTime::from_timestamp_micros(taken_at)
            .ok_or_else(|| bad("taken_at", format!("{taken_at} is out of range")))?,
    })
}

/// A column of a non-event row (snapshot, dead letter), or the error `bad`
/// builds naming it.
pub(super) fn field<'r, T>(
    row: &'r SqliteRow,
    name: &str,
    bad: &impl Fn(&str, String) -> Error,
) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(name)
        .map_err(|error| bad(name, error.to_string()))
}
