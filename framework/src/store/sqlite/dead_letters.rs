//! The Sqlite store's dead letters table.

use async_trait::async_trait;
use chrono::DateTime;
use uuid::Uuid;

use super::snapshots::field;
use super::{BACKEND, SqliteEventStore, failed};
use crate::error::{Error, Result};
use crate::store::row::to_i64;
use crate::store::stream::StreamId;
use crate::subscription::dead_letter::{DeadLetter, DeadLetterStore};

/// The dead letters of a [`SqliteEventStore`] handle (its tenant's).
pub(super) struct SqliteDeadLetters(pub(super) SqliteEventStore);

#[async_trait]
impl DeadLetterStore for SqliteDeadLetters {
    async fn save(&self, letter: DeadLetter) -> Result<()> {
        sqlx::query(
            self.0.tables.sql("INSERT INTO annals_dead_letters (id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at, tenant_id, retry_requested_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        )
        .bind(letter.id)
        .bind(&letter.handler)
        .bind(letter.event_id)
        .bind(letter.stream_id.as_str())
        .bind(to_i64(letter.version))
        .bind(&letter.event_type)
        .bind(&letter.error)
        .bind(i64::from(letter.attempts))
        .bind(letter.failed_at.timestamp_micros())
        .bind(self.0.own_tenant())
        .bind(letter.retry_requested_at.map(|at| at.timestamp_micros()))
        .execute(&self.0.pool)
        .await
        .map_err(failed("save dead letter"))?;
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            self.0.tables.sql("SELECT id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at, retry_requested_at \
             FROM annals_dead_letters WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY failed_at, id LIMIT ?2"),
        )
        .bind(self.0.tenant.as_deref())
        .bind(crate::store::row::limit(limit))
        .fetch_all(&self.0.pool)
        .await
        .map_err(failed("list dead letters"))?;
        rows.iter()
            .map(|row| letter_of(row, "list dead letters"))
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        let row = sqlx::query(
            self.0.tables.sql("SELECT id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at, retry_requested_at \
             FROM annals_dead_letters WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)"),
        )
        .bind(id)
        .bind(self.0.tenant.as_deref())
        .fetch_optional(&self.0.pool)
        .await
        .map_err(failed("get dead letter"))?;
        row.map(|row| letter_of(&row, "get dead letter"))
            .transpose()
    }

    async fn request_retry(&self, id: Uuid) -> Result<bool> {
        let result = sqlx::query(self.0.tables.sql(
            "UPDATE annals_dead_letters SET retry_requested_at = ?3 \
             WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)",
        ))
        .bind(id)
        .bind(self.0.tenant.as_deref())
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(&self.0.pool)
        .await
        .map_err(failed("request dead letter retry"))?;
        Ok(result.rows_affected() > 0)
    }

    async fn retry_requests(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            self.0.tables.sql("SELECT id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at, retry_requested_at \
             FROM annals_dead_letters WHERE retry_requested_at IS NOT NULL AND (?1 IS NULL OR tenant_id = ?1) \
             ORDER BY retry_requested_at, id LIMIT ?2"),
        )
        .bind(self.0.tenant.as_deref())
        .bind(crate::store::row::limit(limit))
        .fetch_all(&self.0.pool)
        .await
        .map_err(failed("list dead letter retries"))?;
        rows.iter()
            .map(|row| letter_of(row, "list dead letter retries"))
            .collect()
    }

    async fn retry_failed(&self, id: Uuid, error: &str, attempts: u32) -> Result<()> {
        sqlx::query(self.0.tables.sql(
            "UPDATE annals_dead_letters SET error = ?3, attempts = attempts + ?4, failed_at = ?5, \
             retry_requested_at = NULL WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)",
        ))
        .bind(id)
        .bind(self.0.tenant.as_deref())
        .bind(error)
        .bind(i64::from(attempts))
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(&self.0.pool)
        .await
        .map_err(failed("record failed dead letter retry"))?;
        Ok(())
    }

    async fn delete(&self, id: Uuid) -> Result<bool> {
        let result = sqlx::query(self.0.tables.sql(
            "DELETE FROM annals_dead_letters WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)",
        ))
        .bind(id)
        .bind(self.0.tenant.as_deref())
        .execute(&self.0.pool)
        .await
        .map_err(failed("delete dead letter"))?;
        Ok(result.rows_affected() > 0)
    }
}

/// A dead letter from its row.
fn letter_of(row: &sqlx::sqlite::SqliteRow, operation: &'static str) -> Result<DeadLetter> {
    let bad = |column: &str, error: String| Error::Backend {
        backend: BACKEND,
        operation,
        source: format!("column `{column}`: {error}").into(),
    };
    let version: i64 = field(row, "version", &bad)?;
    let attempts: i64 = field(row, "attempts", &bad)?;
    let stream: String = field(row, "stream_id", &bad)?;
    let failed_at: i64 = field(row, "failed_at", &bad)?;
    let failed_at = DateTime::from_timestamp_micros(failed_at)
        .ok_or_else(|| bad("failed_at", format!("{failed_at} is out of range")))?;
    let retry_requested_at: Option<i64> = field(row, "retry_requested_at", &bad)?;
    let retry_requested_at = retry_requested_at
        .map(|micros| {
            DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| bad("retry_requested_at", format!("{micros} is out of range")))
        })
        .transpose()?;
    Ok(DeadLetter {
        id: field(row, "id", &bad)?,
        handler: field(row, "handler", &bad)?,
        event_id: field(row, "event_id", &bad)?,
        stream_id: StreamId::from_stored(stream),
        version: u64::try_from(version).map_err(|e| bad("version", e.to_string()))?,
        event_type: field(row, "event_type", &bad)?,
        error: field(row, "error", &bad)?,
        attempts: u32::try_from(attempts).map_err(|e| bad("attempts", e.to_string()))?,
        failed_at,
        retry_requested_at,
    })
}
