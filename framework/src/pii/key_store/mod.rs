//! [`SubjectKeyStore`]: where the data subjects' wrapped keys, their
//! tombstones and the streams holding their data are kept. Every event store
//! implements it, in its own tables (`{prefix}subject_keys`,
//! `{prefix}subject_streams`).

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::store::stream::StreamId;

pub(crate) use memory::MemorySubjectKeys;
#[cfg(feature = "postgres")]
pub(crate) use postgres::restore_subject_key as restore_postgres_subject_key;
#[cfg(feature = "sqlite")]
pub(crate) use sqlite::restore_subject_key as restore_sqlite_subject_key;

/// A data subject's stored key: wrapped under the master key, or a
/// tombstone once the subject is forgotten. Its `Debug` never shows the
/// wrapped bytes.
///
/// ```
/// use annals::pii::StoredSubjectKey;
///
/// let key = StoredSubjectKey::Wrapped(vec![7; 60]);
/// assert_eq!(format!("{key:?}"), "Wrapped(..)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum StoredSubjectKey {
    /// The data key, encrypted under the master key (a nonce, then the
    /// sealed key).
    Wrapped(Vec<u8>),
    /// The subject was forgotten: the key is destroyed and never recreated.
    Forgotten {
        /// When it was forgotten.
        forgotten_at: DateTime<Utc>,
    },
}

impl StoredSubjectKey {
    /// A key row from its two columns, or why it is neither a key nor a
    /// tombstone.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_columns(
        wrapped_key: Option<Vec<u8>>,
        forgotten_at: Option<DateTime<Utc>>,
    ) -> std::result::Result<Self, &'static str> {
        match (wrapped_key, forgotten_at) {
            (_, Some(forgotten_at)) => Ok(StoredSubjectKey::Forgotten { forgotten_at }),
            (Some(wrapped), None) => Ok(StoredSubjectKey::Wrapped(wrapped)),
            (None, None) => Err("neither a key nor a tombstone"),
        }
    }
}

impl std::fmt::Debug for StoredSubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredSubjectKey::Wrapped(_) => f.write_str("Wrapped(..)"),
            StoredSubjectKey::Forgotten { forgotten_at } => f
                .debug_struct("Forgotten")
                .field("forgotten_at", forgotten_at)
                .finish(),
        }
    }
}

/// Storage of data subjects' keys for crypto-shredding
/// ([`PiiEventStore`](crate::pii::PiiEventStore)). Implemented by
/// [`InMemoryEventStore`](crate::store::InMemoryEventStore),
/// `SqliteEventStore` and `PostgresEventStore`, in the same database as the
/// events.
///
/// A subject is named within its tenant: `(tenant, subject)` is the
/// identity, `None` the namespace of events without a tenant. Two tenants'
/// subjects `1` have two keys, and forgetting one leaves the other. On
/// PostgreSQL a tenant handle reaches only its own tenant's keys (row-level
/// security); the owner's unscoped store reaches every tenant's.
///
/// ```
/// use annals::pii::{StoredSubjectKey, SubjectKeyStore};
/// use annals::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let keys = InMemoryEventStore::new();
/// let acme = Some("acme");
/// let first = keys.create_subject_key(acme, "user-1", vec![1; 60]).await?;
/// let second = keys.create_subject_key(acme, "user-1", vec![2; 60]).await?;
/// assert_eq!(first, second, "the first key created wins");
///
/// keys.record_subject_stream(acme, "user-1", &StreamId::new("user-1")?).await?;
/// keys.forget_subject_key(acme, "user-1").await?;
/// assert!(matches!(keys.load_subject_key(acme, "user-1").await?, Some(StoredSubjectKey::Forgotten { .. })));
/// // A forgotten subject never gets a new key.
/// assert!(matches!(keys.create_subject_key(acme, "user-1", vec![3; 60]).await?, StoredSubjectKey::Forgotten { .. }));
/// assert_eq!(keys.subject_streams(acme, "user-1").await?, vec![StreamId::new("user-1")?]);
/// // Another tenant's `user-1` is another subject.
/// assert!(keys.load_subject_key(Some("globex"), "user-1").await?.is_none());
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait SubjectKeyStore: Send + Sync {
    /// The subject's stored key or tombstone; `None` if it never had a key.
    async fn load_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
    ) -> Result<Option<StoredSubjectKey>>;

    /// The stored keys or tombstones of several subjects of one tenant at
    /// once, by subject (subjects that never had a key are left out): what
    /// a reader of a page of events from many subjects needs, in one query
    /// on the SQL stores. The default asks
    /// [`load_subject_key`](Self::load_subject_key) for each.
    async fn load_subject_keys(
        &self,
        tenant: Option<&str>,
        subjects: &[String],
    ) -> Result<HashMap<String, StoredSubjectKey>> {
        let mut found = HashMap::with_capacity(subjects.len());
        for subject in subjects {
            if let Some(key) = self.load_subject_key(tenant, subject).await? {
                found.insert(subject.clone(), key);
            }
        }
        Ok(found)
    }

    /// Stores `wrapped` as the subject's key unless it already has a key or
    /// a tombstone, and returns what is stored: safe against concurrent
    /// creators (insert-if-absent, then read).
    async fn create_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
        wrapped: Vec<u8>,
    ) -> Result<StoredSubjectKey>;

    /// Destroys the subject's key, leaving a tombstone with the time it was
    /// forgotten (kept if it was already forgotten). Idempotent.
    async fn forget_subject_key(&self, tenant: Option<&str>, subject: &str) -> Result<()>;

    /// Records that `stream` holds encrypted fields of `subject`.
    /// Idempotent.
    async fn record_subject_stream(
        &self,
        tenant: Option<&str>,
        subject: &str,
        stream: &StreamId,
    ) -> Result<()>;

    /// The streams recorded for `subject`, in stream id order.
    async fn subject_streams(&self, tenant: Option<&str>, subject: &str) -> Result<Vec<StreamId>>;

    /// Up to `limit` stored keys and tombstones (this store's tenant's, on
    /// a tenant handle) with the streams recorded for each, ordered by
    /// tenant (none first), then subject, starting after `after` (the last
    /// record of the previous page): what an export copies, so that an
    /// imported log's encrypted fields still open, and forgotten subjects
    /// stay forgotten.
    async fn list_subject_keys(
        &self,
        after: Option<&SubjectKeyRecord>,
        limit: usize,
    ) -> Result<Vec<SubjectKeyRecord>>;

    /// Up to `limit` subjects forgotten at or after `since` (this store's
    /// tenant's, on a tenant handle), oldest first: how other instances
    /// learn of a forget ([`PiiEventStore::forget_watch`](crate::pii::PiiEventStore::forget_watch)).
    async fn forgotten_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ForgottenSubject>>;
}

/// Whether a store scoped to `scope` sees `tenant`'s subjects: a tenant
/// handle its own tenant's alone (row-level security does this on
/// PostgreSQL; SQLite and the in-memory store check here).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(super) fn sees(scope: Option<&str>, tenant: Option<&str>) -> bool {
    scope.is_none_or(|scope| tenant == Some(scope))
}

/// Refuses a write of another tenant's subject through a tenant handle.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(super) fn refuse_other_tenant(scope: Option<&str>, tenant: Option<&str>) -> Result<()> {
    if sees(scope, tenant) {
        return Ok(());
    }
    Err(crate::Error::invalid(
        "tenant id",
        format!(
            "a store scoped to tenant {:?} keeps only that tenant's subjects, not {tenant:?}'s",
            scope.unwrap_or_default()
        ),
    ))
}

/// A subject's stored key or tombstone with the streams recorded for it,
/// as [`SubjectKeyStore::list_subject_keys`] lists it and an import
/// restores it. Its `Debug` never shows the wrapped bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKeyRecord {
    /// The subject's tenant (`None`: events without one).
    pub tenant: Option<String>,
    /// The subject.
    pub subject: String,
    /// Its key, wrapped under the master key, or its tombstone.
    pub key: StoredSubjectKey,
    /// The streams holding its encrypted fields, in id order.
    pub streams: Vec<StreamId>,
}

impl SubjectKeyRecord {
    /// A record from a key row's columns: its tenant (`''` for none),
    /// subject, key and streams' ids.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_columns(
        tenant: String,
        subject: String,
        key: StoredSubjectKey,
        streams: Vec<String>,
    ) -> Result<SubjectKeyRecord> {
        Ok(SubjectKeyRecord {
            tenant: Some(tenant).filter(|tenant| !tenant.is_empty()),
            subject,
            key,
            streams: streams
                .into_iter()
                .map(StreamId::new)
                .collect::<Result<_>>()?,
        })
    }

    /// Its place in [`SubjectKeyStore::list_subject_keys`]'s order.
    pub fn order_key(&self) -> (&str, &str) {
        (self.tenant.as_deref().unwrap_or(""), &self.subject)
    }
}

/// A subject's tombstone, as [`SubjectKeyStore::forgotten_since`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgottenSubject {
    /// The subject's tenant (`None`: events without one).
    pub tenant: Option<String>,
    /// The subject.
    pub subject: String,
    /// When it was forgotten.
    pub forgotten_at: DateTime<Utc>,
}

impl std::fmt::Debug for dyn SubjectKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKeyStore")
    }
}

/// Refuses to restore `record` over a different key or tombstone already
/// stored for its subject (`stored`): the imported events' fields are
/// sealed under the record's key.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn check_restored(
    record: &SubjectKeyRecord,
    stored: Option<StoredSubjectKey>,
) -> Result<()> {
    let same = match (&record.key, &stored) {
        (StoredSubjectKey::Wrapped(imported), Some(StoredSubjectKey::Wrapped(here))) => {
            imported == here
        }
        (StoredSubjectKey::Forgotten { .. }, Some(StoredSubjectKey::Forgotten { .. })) => true,
        _ => false,
    };
    if same {
        return Ok(());
    }
    Err(crate::Error::invalid(
        "subject key",
        format!(
            "subject `{}`{} already has {} in this store, and the import holds {}",
            record.subject,
            record
                .tenant
                .as_deref()
                .map(|tenant| format!(" of tenant {tenant:?}"))
                .unwrap_or_default(),
            match stored {
                Some(StoredSubjectKey::Wrapped(_)) => "another key",
                Some(StoredSubjectKey::Forgotten { .. }) => "a tombstone (it was forgotten)",
                None => "no key",
            },
            match record.key {
                StoredSubjectKey::Wrapped(_) => "a key",
                StoredSubjectKey::Forgotten { .. } => "a tombstone",
            }
        ),
    ))
}
