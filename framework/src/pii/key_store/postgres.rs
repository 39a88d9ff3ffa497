//! [`SubjectKeyStore`] for the PostgreSQL event store (migration 0008).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{ForgottenSubject, StoredSubjectKey, SubjectKeyRecord, SubjectKeyStore};
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

    async fn list_subject_keys(
        &self,
        after: Option<&SubjectKeyRecord>,
        limit: usize,
    ) -> Result<Vec<SubjectKeyRecord>> {
        let (after_tenant, after_subject) = after.map_or(("", None), |after| {
            let (tenant, subject) = after.order_key();
            (tenant, Some(subject))
        });
        let mut session = self.session().await?;
        // Row-level security confines a tenant handle to its own rows.
        let rows = sqlx::query(self.table_names().sql(
            "SELECT k.tenant_id, k.subject, k.wrapped_key, k.forgotten_at,                     ARRAY(SELECT s.stream_id FROM annals_subject_streams s                           WHERE s.tenant_id = k.tenant_id AND s.subject = k.subject                           ORDER BY s.stream_id) AS streams              FROM annals_subject_keys k              WHERE $2::text IS NULL OR (k.tenant_id, k.subject) > ($1, $2)              ORDER BY k.tenant_id, k.subject LIMIT $3",
        ))
        .bind(after_tenant)
        .bind(after_subject)
        .bind(crate::store::row::limit(limit))
        .fetch_all(session.connection())
        .await
        .map_err(failed("list subject keys"))?;
        session.finish().await?;
        rows.iter()
            .map(|row| {
                let tenant: String = row
                    .try_get("tenant_id")
                    .map_err(failed("list subject keys"))?;
                let subject: String = row
                    .try_get("subject")
                    .map_err(failed("list subject keys"))?;
                let streams: Vec<String> = row
                    .try_get("streams")
                    .map_err(failed("list subject keys"))?;
                SubjectKeyRecord::from_columns(
                    tenant,
                    subject.clone(),
                    decode_key(&subject, row)?,
                    streams,
                )
            })
            .collect()
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

/// Writes an imported subject key (or tombstone) and its streams inside the
/// import's transaction; refuses a different key already stored. On a
/// tenant handle row-level security refuses another tenant's.
pub(crate) async fn restore_subject_key(
    store: &PostgresEventStore,
    connection: &mut sqlx::PgConnection,
    record: &SubjectKeyRecord,
) -> Result<()> {
    let tenant = record.tenant.as_deref();
    if let Some(scope) = store.tenant()
        && tenant != Some(scope)
    {
        return Err(Error::invalid(
            "tenant id",
            format!(
                "a store scoped to tenant {scope:?} keeps only that tenant's subjects, not {tenant:?}'s"
            ),
        ));
    }
    let (wrapped, forgotten_at) = match &record.key {
        StoredSubjectKey::Wrapped(wrapped) => (Some(wrapped.as_slice()), None),
        StoredSubjectKey::Forgotten { forgotten_at } => (None, Some(*forgotten_at)),
    };
    sqlx::query(store.table_names().sql(
        "INSERT INTO annals_subject_keys (tenant_id, subject, wrapped_key, forgotten_at) \
         VALUES (COALESCE($1, ''), $2, $3, $4) ON CONFLICT (tenant_id, subject) DO NOTHING",
    ))
    .bind(tenant)
    .bind(&record.subject)
    .bind(wrapped)
    .bind(forgotten_at)
    .execute(&mut *connection)
    .await
    .map_err(failed("import subject key"))?;
    let stored = sqlx::query(store.table_names().sql(
        "SELECT wrapped_key, forgotten_at FROM annals_subject_keys \
         WHERE tenant_id = COALESCE($1, '') AND subject = $2",
    ))
    .bind(tenant)
    .bind(&record.subject)
    .fetch_optional(&mut *connection)
    .await
    .map_err(failed("import subject key"))?
    .map(|row| decode_key(&record.subject, &row))
    .transpose()?;
    super::check_restored(record, stored)?;
    let streams: Vec<&str> = record.streams.iter().map(StreamId::as_str).collect();
    sqlx::query(store.table_names().sql(
        "INSERT INTO annals_subject_streams (tenant_id, subject, stream_id) \
         SELECT COALESCE($1, ''), $2, s FROM unnest($3::text[]) AS s ON CONFLICT DO NOTHING",
    ))
    .bind(tenant)
    .bind(&record.subject)
    .bind(&streams)
    .execute(&mut *connection)
    .await
    .map_err(failed("import subject stream"))?;
    Ok(())
}
