//! The Postgres store's dead letters table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::snapshots::field;
use super::{BACKEND, PostgresEventStore, failed};
use crate::error::{Error, Result};
use crate::store::row::to_i64;
use crate::store::stream::StreamId;
use crate::subscription::dead_letter::{DeadLetter, DeadLetterStore};

/// The dead letters of a [`PostgresEventStore`] handle (its tenant's).
pub(super) struct PostgresDeadLetters(pub(super) PostgresEventStore);

#[async_trait]
impl DeadLetterStore for PostgresDeadLetters {
    async fn save(&self, letter: DeadLetter) -> Result<()> {
        let mut session = self.0.session().await?;
        sqlx::query(
            self.0.tables.sql("INSERT INTO annals_dead_letters (id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at, retry_requested_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
        )
        .bind(letter.id)
        .bind(&letter.handler)
        .bind(letter.event_id)
        .bind(letter.stream_id.as_str())
        .bind(to_i64(letter.version))
        .bind(&letter.event_type)
        .bind(&letter.error)
        .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
        .bind(letter.failed_at)
        .bind(letter.retry_requested_at)
        .execute(session.connection())
        .await
        .map_err(failed("save dead letter"))?;
        session.finish().await?;
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut session = self.0.session().await?;
        let rows = sqlx::query(
            self.0.tables.sql("SELECT id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at, retry_requested_at \
             FROM annals_dead_letters ORDER BY failed_at, id LIMIT $1"),
        )
        .bind(crate::store::row::limit(limit))
        .fetch_all(session.connection())
        .await
        .map_err(failed("list dead letters"))?;
        session.finish().await?;
        rows.iter()
            .map(|row| letter_of(row, "list dead letters"))
            .collect()
    }

    async fn get(&self, id: uuid::Uuid) -> Result<Option<DeadLetter>> {
        let mut session = self.0.session().await?;
        let row = sqlx::query(
            self.0.tables.sql("SELECT id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at, retry_requested_at \
             FROM annals_dead_letters WHERE id = $1"),
        )
        .bind(id)
        .fetch_optional(session.connection())
        .await
        .map_err(failed("get dead letter"))?;
        session.finish().await?;
        row.map(|row| letter_of(&row, "get dead letter"))
            .transpose()
    }

    async fn request_retry(&self, id: uuid::Uuid) -> Result<bool> {
        let mut session = self.0.session().await?;
        let result = sqlx::query(self.0.tables.sql(
            "UPDATE annals_dead_letters SET retry_requested_at = date_trunc('microseconds', now()) WHERE id = $1",
        ))
        .bind(id)
        .execute(session.connection())
        .await
        .map_err(failed("request dead letter retry"))?;
        session.finish().await?;
        Ok(result.rows_affected() > 0)
    }

    async fn retry_requests(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut session = self.0.session().await?;
        let rows = sqlx::query(
            self.0.tables.sql("SELECT id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at, retry_requested_at \
             FROM annals_dead_letters WHERE retry_requested_at IS NOT NULL \
             ORDER BY retry_requested_at, id LIMIT $1"),
        )
        .bind(crate::store::row::limit(limit))
        .fetch_all(session.connection())
        .await
        .map_err(failed("list dead letter retries"))?;
        session.finish().await?;
        rows.iter()
            .map(|row| letter_of(row, "list dead letter retries"))
            .collect()
    }

    async fn retry_failed(&self, id: uuid::Uuid, error: &str, attempts: u32) -> Result<()> {
        let mut session = self.0.session().await?;
        sqlx::query(self.0.tables.sql(
            "UPDATE annals_dead_letters SET error = $2, attempts = attempts + $3, \
             failed_at = date_trunc('microseconds', now()), retry_requested_at = NULL WHERE id = $1",
        ))
        .bind(id)
        .bind(error)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .execute(session.connection())
        .await
        .map_err(failed("record failed dead letter retry"))?;
        session.finish().await?;
        Ok(())
    }

    async fn delete(&self, id: uuid::Uuid) -> Result<bool> {
        let mut session = self.0.session().await?;
        let result = sqlx::query(
            self.0
                .tables
                .sql("DELETE FROM annals_dead_letters WHERE id = $1"),
        )
        .bind(id)
        .execute(session.connection())
        .await
        .map_err(failed("delete dead letter"))?;
        session.finish().await?;
        Ok(result.rows_affected() > 0)
    }
}

/// A dead letter from its row.
fn letter_of(row: &sqlx::postgres::PgRow, operation: &'static str) -> Result<DeadLetter> {
    let bad = |column: &str, error: String| Error::Backend {
        backend: BACKEND,
        operation,
        source: format!("column `{column}`: {error}").into(),
    };
    let version: i64 = field(row, "version", &bad)?;
    let attempts: i32 = field(row, "attempts", &bad)?;
    let stream: String = field(row, "stream_id", &bad)?;
    let failed_at: DateTime<Utc> = field(row, "failed_at", &bad)?;
    let retry_requested_at: Option<DateTime<Utc>> = field(row, "retry_requested_at", &bad)?;
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
