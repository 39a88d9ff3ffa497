//! [`SubjectKeyStore`] for the SQLite event store (migration 0007).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{ForgottenSubject, StoredSubjectKey, SubjectKeyRecord, SubjectKeyStore};
use crate::error::{Error, Result};
use crate::store::SqliteEventStore;
use crate::store::stream::StreamId;

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

impl SqliteEventStore {
    fn sees_subjects_of(&self, tenant: Option<&str>) -> bool {
        super::sees(self.tenant(), tenant)
    }

    fn refuse_other_tenant(&self, tenant: Option<&str>) -> Result<()> {
        super::refuse_other_tenant(self.tenant(), tenant)
    }
}

#[async_trait]
impl SubjectKeyStore for SqliteEventStore {
    async fn load_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
    ) -> Result<Option<StoredSubjectKey>> {
        if !self.sees_subjects_of(tenant) {
            return Ok(None);
        }
        let row = sqlx::query(self.table_names().sql(
            "SELECT wrapped_key, forgotten_at FROM annals_subject_keys \
             WHERE tenant_id = COALESCE(?, '') AND subject = ?",
        ))
        .bind(tenant)
        .bind(subject)
        .fetch_optional(self.pool())
        .await
        .map_err(failed("load subject key"))?;
        row.map(|row| decode_key(subject, &row)).transpose()
    }

    async fn load_subject_keys(
        &self,
        tenant: Option<&str>,
        subjects: &[String],
    ) -> Result<HashMap<String, StoredSubjectKey>> {
        if !self.sees_subjects_of(tenant) {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(self.table_names().sql(
            "SELECT subject, wrapped_key, forgotten_at FROM annals_subject_keys \
             WHERE tenant_id = COALESCE(?, '') AND subject IN (SELECT value FROM json_each(?))",
        ))
        .bind(tenant)
        .bind(serde_json::Value::from(subjects.to_vec()).to_string())
        .fetch_all(self.pool())
        .await
        .map_err(failed("load subject keys"))?;
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
        self.refuse_other_tenant(tenant)?;
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_keys (tenant_id, subject, wrapped_key, created_at) \
             VALUES (COALESCE(?, ''), ?, ?, ?) ON CONFLICT (tenant_id, subject) DO NOTHING",
        ))
        .bind(tenant)
        .bind(subject)
        .bind(wrapped)
        .bind(Utc::now().timestamp_micros())
        .execute(self.pool())
        .await
        .map_err(failed("create subject key"))?;
        self.load_subject_key(tenant, subject)
            .await?
            .ok_or_else(|| Error::Backend {
                backend: "sqlite",
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
        let rows = sqlx::query(self.table_names().sql(
            "SELECT k.tenant_id, k.subject, k.wrapped_key, k.forgotten_at,                     (SELECT json_group_array(stream_id) FROM (SELECT s.stream_id                         FROM annals_subject_streams s                         WHERE s.tenant_id = k.tenant_id AND s.subject = k.subject                         ORDER BY s.stream_id)) AS streams              FROM annals_subject_keys k              WHERE (?1 IS NULL OR k.tenant_id = ?1)                AND (?3 IS NULL OR (k.tenant_id, k.subject) > (?2, ?3))              ORDER BY k.tenant_id, k.subject LIMIT ?4",
        ))
        .bind(self.tenant())
        .bind(after_tenant)
        .bind(after_subject)
        .bind(crate::store::row::limit(limit))
        .fetch_all(self.pool())
        .await
        .map_err(failed("list subject keys"))?;
        rows.iter()
            .map(|row| {
                let read = failed("list subject keys");
                let tenant: String = row.try_get("tenant_id").map_err(read)?;
                let subject: String = row
                    .try_get("subject")
                    .map_err(failed("list subject keys"))?;
                let streams: String = row
                    .try_get("streams")
                    .map_err(failed("list subject keys"))?;
                let streams: Vec<String> =
                    serde_json::from_str(&streams).map_err(|error| Error::Backend {
                        backend: "sqlite",
                        operation: "list subject keys",
                        source: format!("streams of subject `{subject}`: {error}").into(),
                    })?;
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
        self.refuse_other_tenant(tenant)?;
        let now = Utc::now().timestamp_micros();
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_keys (tenant_id, subject, wrapped_key, created_at, forgotten_at) \
             VALUES (COALESCE(?1, ''), ?2, NULL, ?3, ?3) \
             ON CONFLICT (tenant_id, subject) DO UPDATE SET wrapped_key = NULL, \
             forgotten_at = COALESCE(annals_subject_keys.forgotten_at, excluded.forgotten_at)",
        ))
        .bind(tenant)
        .bind(subject)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(failed("forget subject key"))?;
        Ok(())
    }

    async fn record_subject_stream(
        &self,
        tenant: Option<&str>,
        subject: &str,
        stream: &StreamId,
    ) -> Result<()> {
        self.refuse_other_tenant(tenant)?;
        sqlx::query(self.table_names().sql(
            "INSERT INTO annals_subject_streams (tenant_id, subject, stream_id) \
             VALUES (COALESCE(?, ''), ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(tenant)
        .bind(subject)
        .bind(stream.as_str())
        .execute(self.pool())
        .await
        .map_err(failed("record subject stream"))?;
        Ok(())
    }

    async fn subject_streams(&self, tenant: Option<&str>, subject: &str) -> Result<Vec<StreamId>> {
        if !self.sees_subjects_of(tenant) {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = sqlx::query_scalar(self.table_names().sql(
            "SELECT stream_id FROM annals_subject_streams \
             WHERE tenant_id = COALESCE(?, '') AND subject = ? ORDER BY stream_id",
        ))
        .bind(tenant)
        .bind(subject)
        .fetch_all(self.pool())
        .await
        .map_err(failed("list subject streams"))?;
        ids.into_iter().map(StreamId::new).collect()
    }

    async fn forgotten_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ForgottenSubject>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(self.table_names().sql(
            "SELECT tenant_id, subject, forgotten_at FROM annals_subject_keys \
             WHERE forgotten_at >= ?1 AND (?3 IS NULL OR tenant_id = ?3) \
             ORDER BY forgotten_at, tenant_id, subject LIMIT ?2",
        ))
        .bind(since.timestamp_micros())
        .bind(crate::store::row::limit(limit))
        .bind(self.tenant())
        .fetch_all(self.pool())
        .await
        .map_err(failed("list forgotten subjects"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(tenant, subject, micros)| {
                Some(ForgottenSubject {
                    tenant: Some(tenant).filter(|tenant| !tenant.is_empty()),
                    subject,
                    forgotten_at: DateTime::from_timestamp_micros(micros)?,
                })
            })
            .collect())
    }
}

/// Writes an imported subject key (or tombstone) and its streams inside the
/// import's transaction; refuses a different key already stored.
pub(crate) async fn restore_subject_key(
    store: &SqliteEventStore,
    connection: &mut sqlx::SqliteConnection,
    record: &SubjectKeyRecord,
) -> Result<()> {
    let tenant = record.tenant.as_deref();
    store.refuse_other_tenant(tenant)?;
    let (wrapped, forgotten_at) = match &record.key {
        StoredSubjectKey::Wrapped(wrapped) => (Some(wrapped.as_slice()), None),
        StoredSubjectKey::Forgotten { forgotten_at } => {
            (None, Some(forgotten_at.timestamp_micros()))
        }
    };
    sqlx::query(store.table_names().sql(
        "INSERT INTO annals_subject_keys (tenant_id, subject, wrapped_key, created_at, forgotten_at) \
         VALUES (COALESCE(?, ''), ?, ?, ?, ?) ON CONFLICT (tenant_id, subject) DO NOTHING",
    ))
    .bind(tenant)
    .bind(&record.subject)
    .bind(wrapped)
    .bind(Utc::now().timestamp_micros())
    .bind(forgotten_at)
    .execute(&mut *connection)
    .await
    .map_err(failed("import subject key"))?;
    let stored = sqlx::query(store.table_names().sql(
        "SELECT wrapped_key, forgotten_at FROM annals_subject_keys \
         WHERE tenant_id = COALESCE(?, '') AND subject = ?",
    ))
    .bind(tenant)
    .bind(&record.subject)
    .fetch_optional(&mut *connection)
    .await
    .map_err(failed("import subject key"))?
    .map(|row| decode_key(&record.subject, &row))
    .transpose()?;
    super::check_restored(record, stored)?;
    for stream in &record.streams {
        sqlx::query(store.table_names().sql(
            "INSERT INTO annals_subject_streams (tenant_id, subject, stream_id) \
             VALUES (COALESCE(?, ''), ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(tenant)
        .bind(&record.subject)
        .bind(stream.as_str())
        .execute(&mut *connection)
        .await
        .map_err(failed("import subject stream"))?;
    }
    Ok(())
}
