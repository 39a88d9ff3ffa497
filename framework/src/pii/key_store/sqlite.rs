//! [`SubjectKeyStore`] for the SQLite event store (migration 0007).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{StoredSubjectKey, SubjectKeyStore};
use crate::error::{Error, Result};
use crate::store::SqliteEventStore;
use crate::stream::StreamId;

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    crate::store::row::failed("sqlite", operation)
}

fn decode_key(subject: &str, row: &SqliteRow) -> Result<StoredSubjectKey> {
    let bad = |reason: String| Error::Backend {
        backend: "sqlite",
        operation: "load subject key",
        source: format!("key row of subject `{subject}`: {reason}").into(),
    };
    let wrapped: Option<Vec<u8>> = row.try_get("wrapped_key").map_err(|e| bad(e.to_string()))?;
    let forgotten_at: Option<i64> = row
        .try_get("forgotten_at")
        .map_err(|e| bad(e.to_string()))?;
    let forgotten_at = forgotten_at
        .map(|micros| {
            DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| bad(format!("forgotten_at {micros} is out of range")))
        })
        .transpose()?;
    StoredSubjectKey::from_columns(wrapped, forgotten_at).map_err(|reason| bad(reason.to_owned()))
}

#[async_trait]
impl SubjectKeyStore for SqliteEventStore {
    async fn load_subject_key(&self, subject: &str) -> Result<Option<StoredSubjectKey>> {
        let row = sqlx::query(
            self.table_names()
                .sql("SELECT wrapped_key, forgotten_at FROM annals_subject_keys WHERE subject = ?"),
        )
        .bind(subject)
        .fetch_optional(self.pool())
        .await
        .map_err(failed("load subject key"))?;
        row.map(|row| decode_key(subject, &row)).transpose()
    }

    async fn create_subject_key(
        &self,
        subject: &str,
        wrapped: Vec<u8>,
    ) -> Result<StoredSubjectKey> {
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_keys (subject, wrapped_key, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (subject) DO NOTHING",
        ))
        .bind(subject)
        .bind(wrapped)
        .bind(Utc::now().timestamp_micros())
        .execute(self.pool())
        .await
        .map_err(failed("create subject key"))?;
        self.load_subject_key(subject)
            .await?
            .ok_or_else(|| Error::Backend {
                backend: "sqlite",
                operation: "create subject key",
                source: format!("the key of subject `{subject}` is missing after insert").into(),
            })
    }

    async fn forget_subject_key(&self, subject: &str) -> Result<()> {
        let now = Utc::now().timestamp_micros();
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_keys (subject, wrapped_key, created_at, forgotten_at) \
             VALUES (?1, NULL, ?2, ?2) \
             ON CONFLICT (subject) DO UPDATE SET wrapped_key = NULL, \
             forgotten_at = COALESCE(annals_subject_keys.forgotten_at, excluded.forgotten_at)",
        ))
        .bind(subject)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(failed("forget subject key"))?;
        Ok(())
    }

    async fn record_subject_stream(&self, subject: &str, stream: &StreamId) -> Result<()> {
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_streams (subject, stream_id) VALUES (?, ?) \
             ON CONFLICT DO NOTHING",
        ))
        .bind(subject)
        .bind(stream.as_str())
        .execute(self.pool())
        .await
        .map_err(failed("record subject stream"))?;
        Ok(())
    }

    async fn subject_streams(&self, subject: &str) -> Result<Vec<StreamId>> {
        let ids: Vec<String> = sqlx::query_scalar(self.table_names().sql(
            "SELECT stream_id FROM annals_subject_streams WHERE subject = ? ORDER BY stream_id",
        ))
        .bind(subject)
        .fetch_all(self.pool())
        .await
        .map_err(failed("list subject streams"))?;
        ids.into_iter().map(StreamId::new).collect()
    }
}
