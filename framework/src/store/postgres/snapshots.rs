//! The Postgres store's snapshots table.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};

use super::{BACKEND, PostgresEventStore, failed};
use crate::aggregate::snapshot::{RetentionPolicy, Snapshot, SnapshotStore};
use crate::error::{Error, Result};
use crate::store::row::to_i64;
use crate::store::stream::StreamId;

/// The snapshots of a [`PostgresEventStore`] handle (its tenant's).
pub(super) struct PostgresSnapshots(pub(super) PostgresEventStore);

#[async_trait]
impl SnapshotStore for PostgresSnapshots {
    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        let mut session = self.0.session().await?;
        // The snapshot is the transaction's tenant's ('' unscoped). A tenant
        // handle snapshots only a version its tenant has an event at: the
        // row-level security of the events table answers for it.
        let saved = sqlx::query(
            self.0.tables.sql("INSERT INTO annals_snapshots (stream_id, version, snapshot_version, encoding, data, taken_at) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE NOT $7 OR EXISTS (SELECT 1 FROM annals_events WHERE stream_id = $1 AND version = $2) \
             ON CONFLICT (tenant_id, stream_id, version) DO UPDATE SET snapshot_version = excluded.snapshot_version, \
             encoding = excluded.encoding, data = excluded.data, taken_at = excluded.taken_at"),
        )
        .bind(snapshot.stream_id.as_str())
        .bind(to_i64(snapshot.version))
        .bind(i32::try_from(snapshot.snapshot_version).unwrap_or(i32::MAX))
        .bind(i16::from(snapshot.encoding))
        .bind(&snapshot.data)
        .bind(snapshot.taken_at)
        .bind(self.0.tenant.is_some())
        .execute(session.connection())
        .await
        .map_err(failed("save snapshot"))?;
        if saved.rows_affected() == 0
            && let Some(tenant) = &self.0.tenant
        {
            return Err(Error::invalid(
                "stream id",
                format!(
                    "tenant {tenant:?} has no event at version {} of stream `{}` to snapshot",
                    snapshot.version, snapshot.stream_id
                ),
            ));
        }
        session.finish().await?;
        Ok(())
    }

    async fn load(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<Snapshot>> {
        let mut session = self.0.session().await?;
        let row = sqlx::query(self.0.tables.sql(
            "SELECT version, snapshot_version, encoding, data, taken_at FROM annals_snapshots \
             WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') \
               AND stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT 1",
        ))
        .bind(stream.as_str())
        .bind(max_version.map_or(i64::MAX, to_i64))
        .fetch_optional(session.connection())
        .await
        .map_err(failed("load snapshot"))?;
        session.finish().await?;
        row.map(|row| decode_snapshot_row(stream, &row)).transpose()
    }

    async fn prune(&self, policy: &RetentionPolicy) -> Result<u64> {
        let mut session = self.0.session().await?;
        let keep_last = policy
            .keep_last
            .map(|keep| i64::try_from(keep).unwrap_or(i64::MAX));
        let result = sqlx::query(
            self.0.tables.sql("DELETE FROM annals_snapshots WHERE (tenant_id, stream_id, version) IN ( \
                SELECT tenant_id, stream_id, version FROM ( \
                    SELECT tenant_id, stream_id, version, taken_at, \
                           row_number() OVER (PARTITION BY tenant_id, stream_id ORDER BY version DESC) AS rank \
                    FROM annals_snapshots) ranked \
                WHERE ($1::bigint IS NOT NULL AND rank > $1) OR ($2::timestamptz IS NOT NULL AND taken_at < $2))"),
        )
        .bind(keep_last)
        .bind(policy.cutoff())
        .execute(session.connection())
        .await
        .map_err(failed("prune snapshots"))?;
        session.finish().await?;
        Ok(result.rows_affected())
    }

    async fn delete_stream(&self, stream: &StreamId) -> Result<u64> {
        let mut session = self.0.session().await?;
        let result = sqlx::query(
            self.0
                .tables
                .sql("DELETE FROM annals_snapshots WHERE stream_id = $1"),
        )
        .bind(stream.as_str())
        .execute(session.connection())
        .await
        .map_err(failed("delete snapshots"))?;
        session.finish().await?;
        Ok(result.rows_affected())
    }
}

fn decode_snapshot_row(stream: &StreamId, row: &PgRow) -> Result<Snapshot> {
    let bad = |column: &str, error: String| Error::Backend {
        backend: BACKEND,
        operation: "load snapshot",
        source: format!("snapshot of `{stream}`: column `{column}`: {error}").into(),
    };
    let version: i64 = field(row, "version", &bad)?;
    let snapshot_version: i32 = field(row, "snapshot_version", &bad)?;
    let encoding: i16 = field(row, "encoding", &bad)?;
    Ok(Snapshot {
        stream_id: stream.clone(),
        version: u64::try_from(version).map_err(|e| bad("version", e.to_string()))?,
        snapshot_version: u32::try_from(snapshot_version)
            .map_err(|e| bad("snapshot_version", e.to_string()))?,
        encoding: u8::try_from(encoding).map_err(|e| bad("encoding", e.to_string()))?,
        data: field(row, "data", &bad)?,
        taken_at: field(row, "taken_at", &bad)?,
    })
}

/// A column of a non-event row (snapshot, dead letter), or the error `bad`
/// builds naming it.
pub(super) fn field<'r, T>(
    row: &'r PgRow,
    name: &str,
    bad: &impl Fn(&str, String) -> Error,
) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name)
        .map_err(|error| bad(name, error.to_string()))
}
