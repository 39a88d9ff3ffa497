//! [`SubjectKeyStore`] for the in-memory event store.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::Utc;

use super::{ForgottenSubject, StoredSubjectKey, SubjectKeyRecord, SubjectKeyStore};
use crate::error::Result;
use crate::store::InMemoryEventStore;
use crate::store::stream::StreamId;

/// A subject's identity: its tenant (`None`: events without one) and name.
type SubjectId = (Option<String>, String);

fn subject_id(tenant: Option<&str>, subject: &str) -> SubjectId {
    (tenant.map(str::to_owned), subject.to_owned())
}

/// The subject-key tables of an [`InMemoryEventStore`].
#[derive(Debug, Default)]
pub(crate) struct MemorySubjectKeys {
    keys: HashMap<SubjectId, StoredSubjectKey>,
    streams: HashMap<SubjectId, BTreeSet<StreamId>>,
}

impl InMemoryEventStore {
    fn sees_subjects_of(&self, tenant: Option<&str>) -> bool {
        super::sees(crate::store::EventStore::tenant(self), tenant)
    }

    fn refuse_other_tenant(&self, tenant: Option<&str>) -> Result<()> {
        super::refuse_other_tenant(crate::store::EventStore::tenant(self), tenant)
    }
}

#[async_trait]
impl SubjectKeyStore for InMemoryEventStore {
    async fn load_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
    ) -> Result<Option<StoredSubjectKey>> {
        if !self.sees_subjects_of(tenant) {
            return Ok(None);
        }
        Ok(self
            .subject_keys()?
            .keys
            .get(&subject_id(tenant, subject))
            .cloned())
    }

    async fn create_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
        wrapped: Vec<u8>,
    ) -> Result<StoredSubjectKey> {
        self.refuse_other_tenant(tenant)?;
        Ok(self
            .subject_keys()?
            .keys
            .entry(subject_id(tenant, subject))
            .or_insert(StoredSubjectKey::Wrapped(wrapped))
            .clone())
    }

    async fn list_subject_keys(
        &self,
        after: Option<&SubjectKeyRecord>,
        limit: usize,
    ) -> Result<Vec<SubjectKeyRecord>> {
        let tables = self.subject_keys()?;
        let mut records: Vec<SubjectKeyRecord> = tables
            .keys
            .iter()
            .filter(|((tenant, _), _)| self.sees_subjects_of(tenant.as_deref()))
            .map(|(id, key)| SubjectKeyRecord {
                tenant: id.0.clone(),
                subject: id.1.clone(),
                key: key.clone(),
                streams: tables
                    .streams
                    .get(id)
                    .map(|streams| streams.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .filter(|record| after.is_none_or(|after| record.order_key() > after.order_key()))
            .collect();
        records.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        records.truncate(limit);
        Ok(records)
    }

    async fn forget_subject_key(&self, tenant: Option<&str>, subject: &str) -> Result<()> {
        self.refuse_other_tenant(tenant)?;
        let mut tables = self.subject_keys()?;
        let entry = tables.keys.entry(subject_id(tenant, subject));
        let now = Utc::now();
        entry
            .and_modify(|key| {
                if let StoredSubjectKey::Wrapped(_) = key {
                    *key = StoredSubjectKey::Forgotten { forgotten_at: now };
                }
            })
            .or_insert(StoredSubjectKey::Forgotten { forgotten_at: now });
        Ok(())
    }

    async fn record_subject_stream(
        &self,
        tenant: Option<&str>,
        subject: &str,
        stream: &StreamId,
    ) -> Result<()> {
        self.refuse_other_tenant(tenant)?;
        self.subject_keys()?
            .streams
            .entry(subject_id(tenant, subject))
            .or_default()
            .insert(stream.clone());
        Ok(())
    }

    async fn subject_streams(&self, tenant: Option<&str>, subject: &str) -> Result<Vec<StreamId>> {
        if !self.sees_subjects_of(tenant) {
            return Ok(Vec::new());
        }
        Ok(self
            .subject_keys()?
            .streams
            .get(&subject_id(tenant, subject))
            .map(|streams| streams.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn forgotten_since(
        &self,
        since: chrono::DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ForgottenSubject>> {
        let tables = self.subject_keys()?;
        let mut forgotten: Vec<ForgottenSubject> = tables
            .keys
            .iter()
            .filter(|((tenant, _), _)| self.sees_subjects_of(tenant.as_deref()))
            .filter_map(|((tenant, subject), key)| match key {
                StoredSubjectKey::Forgotten { forgotten_at } if *forgotten_at >= since => {
                    Some(ForgottenSubject {
                        tenant: tenant.clone(),
                        subject: subject.clone(),
                        forgotten_at: *forgotten_at,
                    })
                }
                _ => None,
            })
            .collect();
        forgotten.sort_by(|a, b| {
            (a.forgotten_at, &a.tenant, &a.subject).cmp(&(b.forgotten_at, &b.tenant, &b.subject))
        });
        forgotten.truncate(limit);
        Ok(forgotten)
    }
}
