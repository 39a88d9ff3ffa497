//! [`SubjectKeyStore`] for the in-memory event store.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::Utc;

use super::{StoredSubjectKey, SubjectKeyStore};
use crate::error::Result;
use crate::store::InMemoryEventStore;
use crate::stream::StreamId;

/// The subject-key tables of an [`InMemoryEventStore`].
#[derive(Debug, Default)]
pub(crate) struct MemorySubjectKeys {
    keys: HashMap<String, StoredSubjectKey>,
    streams: HashMap<String, BTreeSet<StreamId>>,
}

#[async_trait]
impl SubjectKeyStore for InMemoryEventStore {
    async fn load_subject_key(&self, subject: &str) -> Result<Option<StoredSubjectKey>> {
        Ok(self.subject_keys()?.keys.get(subject).cloned())
    }

    async fn create_subject_key(
        &self,
        subject: &str,
        wrapped: Vec<u8>,
    ) -> Result<StoredSubjectKey> {
        Ok(self
            .subject_keys()?
            .keys
            .entry(subject.to_owned())
            .or_insert(StoredSubjectKey::Wrapped(wrapped))
            .clone())
    }

    async fn forget_subject_key(&self, subject: &str) -> Result<()> {
        let mut tables = self.subject_keys()?;
        let entry = tables.keys.entry(subject.to_owned());
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

    async fn record_subject_stream(&self, subject: &str, stream: &StreamId) -> Result<()> {
        self.subject_keys()?
            .streams
            .entry(subject.to_owned())
            .or_default()
            .insert(stream.clone());
        Ok(())
    }

    async fn subject_streams(&self, subject: &str) -> Result<Vec<StreamId>> {
        Ok(self
            .subject_keys()?
            .streams
            .get(subject)
            .map(|streams| streams.iter().cloned().collect())
            .unwrap_or_default())
    }
}
