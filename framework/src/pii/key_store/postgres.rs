//! [`SubjectKeyStore`] for the PostgreSQL event store (migration 0008).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{ForgottenSubject, StoredSubjectKey, SubjectKeyStore};
use crate::error::{Error, Result};
use crate::store::PostgresEventStore;
use crate::store::stream::StreamId;

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    crate::store::row::failed("postgres", operation)
}

fn decode_key(subject: &str, row: &PgRow) -> Result<StoredSubjectKey> {
    let bad = |reason: String| Error::Backend {
        backend: "postgres",
        operation: "load subject key",
        source: format!("key row of subject `{subject}`: {reason}").into(),
    };
    let wrapped: Option<Vec<u8>> = row.try_get("wrapped_key").map_err(|e| bad(e.to_string()))?;
    let forgotten_at: Option<DateTime<Utc>> = row
        .try_get("forgotten_at")
        .map_err(|e| bad(e.to_string()))?;
    StoredSubjectKey::from_columns(wrapped, forgotten_at).map_err(|reason| bad(reason.to_owned()))
}

#[async_trait]
impl SubjectKeyStore for PostgresEventStore {
    async fn load_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
    ) -> Result<Option<StoredSubjectKey>> {
        let mut session = self.session().await?;
        let row = sqlx::query(self.table_names().sql(
            "SELECT wrapped_key, forgotten_at FROM annals_subject_keys \
             WHERE tenant_id = COALESCE($1, '') AND subject = $2",
        ))
        .bind(tenant)
        .bind(subject)
        .fetch_optional(session.connection())
        .await
        .map_err(failed("load subject key"))?;
        session.finish().await?;
        row.map(|row| decode_key(subject, &row)).transpose()
    }

    async fn load_subject_keys(
        &self,
        tenant: Option<&str>,
        subjects: &[String],
    ) -> Result<HashMap<String, StoredSubjectKey>> {
        let mut session = self.session().await?;
        let rows = sqlx::query(self.table_names().sql(
            "SELECT subject, wrapped_key, forgotten_at FROM annals_subject_keys \
             WHERE tenant_id = COALESCE($1, '') AND subject = ANY($2)",
        ))
        .bind(tenant)
        .bind(subjects)
        .fetch_all(session.connection())
        .await
        .map_err(failed("load subject keys"))?;
        session.finish().await?;
        rows.iter()
            .map(|row| {
                let subject: String = row
                    .try_get("subject")
                    .map_err(failed("load subject keys"))?;
                let key = decode_key(&subject, row)?;
                Ok((subject, key))
            })
            .collect()
    }

    async fn create_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
        wrapped: Vec<u8>,
    ) -> Result<StoredSubjectKey> {
        let mut session = self.session().await?;
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_keys (tenant_id, subject, wrapped_key) \
             VALUES (COALESCE($1, ''), $2, $3) ON CONFLICT (tenant_id, subject) DO NOTHING",
        ))
        .bind(tenant)
        .bind(subject)
        .bind(wrapped)
        .execute(session.connection())
        .await
        .map_err(failed("create subject key"))?;
        session.finish().await?;
        self.load_subject_key(tenant, subject)
            .await?
            .ok_or_else(|| Error::Backend {
                backend: "postgres",
                operation: "create subject key",
                source: format!("the key of subject `{subject}` is missing after insert").into(),
            })
    }

    async fn forget_subject_key(&self, tenant: Option<&str>, subject: &str) -> Result<()> {
        let mut session = self.session().await?;
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_keys (tenant_id, subject, wrapped_key, forgotten_at) \
             VALUES (COALESCE($1, ''), $2, NULL, now()) \
             ON CONFLICT (tenant_id, subject) DO UPDATE SET wrapped_key = NULL, \
             forgotten_at = COALESCE(annals_subject_keys.forgotten_at, excluded.forgotten_at)",
        ))
        .bind(tenant)
        .bind(subject)
        .execute(session.connection())
        .await
        .map_err(failed("forget subject key"))?;
        session.finish().await?;
        Ok(())
    }

    async fn record_subject_stream(
        &self,
        tenant: Option<&str>,
        subject: &str,
        stream: &StreamId,
    ) -> Result<()> {
        let mut session = self.session().await?;
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_streams (tenant_id, subject, stream_id) \
             VALUES (COALESCE($1, ''), $2, $3) ON CONFLICT DO NOTHING",
        ))
        .bind(tenant)
        .bind(subject)
        .bind(stream.as_str())
        .execute(session.connection())
        .await
        .map_err(failed("record subject stream"))?;
        session.finish().await?;
        Ok(())
    }

    async fn subject_streams(&self, tenant: Option<&str>, subject: &str) -> Result<Vec<StreamId>> {
        let mut session = self.session().await?;
        let ids: Vec<String> = sqlx::query_scalar(self.table_names().sql(
            "SELECT stream_id FROM annals_subject_streams \
             WHERE tenant_id = COALESCE($1, '') AND subject = $2 ORDER BY stream_id",
        ))
        .bind(tenant)
        .bind(subject)
        .fetch_all(session.connection())
        .await
        .map_err(failed("list subject streams"))?;
        session.finish().await?;
        ids.into_iter().map(StreamId::new).collect()
    }

    async fn forgotten_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ForgottenSubject>> {
        let mut session = self.session().await?;
        let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(self.table_names().sql(
            "SELECT tenant_id, subject, forgotten_at FROM annals_subject_keys \
             WHERE forgotten_at >= $1 ORDER BY forgotten_at, tenant_id, subject LIMIT $2",
        ))
        .bind(since)
        .bind(crate::store::row::limit(limit))
        .fetch_all(session.connection())
        .await
        .map_err(failed("list forgotten subjects"))?;
        session.finish().await?;
        Ok(rows
            .into_iter()
            .map(|(tenant, subject, forgotten_at)| ForgottenSubject {
                tenant: Some(tenant).filter(|tenant| !tenant.is_empty()),
                subject,
                forgotten_at,
            })
            .collect())
    }
}
