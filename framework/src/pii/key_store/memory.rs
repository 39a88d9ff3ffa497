//! [`SubjectKeyStore`] for the in-memory event store.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::Utc;

use super::{ForgottenSubject, StoredSubjectKey, SubjectKeyStore};
use crate::error::Result;
use crate::store::InMemoryEventStore;
use crate::stream::StreamId;

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

#[async_trait]
impl SubjectKeyStore for InMemoryEventStore {
    async fn load_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
    ) -> Result<Option<StoredSubjectKey>> {
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
        Ok(self
            .subject_keys()?
            .keys
            .entry(subject_id(tenant, subject))
            .or_insert(StoredSubjectKey::Wrapped(wrapped))
            .clone())
    }

    async fn forget_subject_key(&self, tenant: Option<&str>, subject: &str) -> Result<()> {
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
        self.subject_keys()?
            .streams
            .entry(subject_id(tenant, subject))
            .or_default()
            .insert(stream.clone());
        Ok(())
    }

    async fn subject_streams(&self, tenant: Option<&str>, subject: &str) -> Result<Vec<StreamId>> {
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
