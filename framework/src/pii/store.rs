//! [`PiiEventStore`]: the store decorator that encrypts `#[pii]` fields on
//! append, decrypts (or redacts) them on every read, and forgets subjects.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aes_gcm::aead::Generate;
use aes_gcm::{Aes256Gcm, Key};
use async_trait::async_trait;
use serde_json::{Map, Value};

use super::key_store::{StoredSubjectKey, SubjectKeyStore};
use super::master_key::MasterKey;
use super::page_on_every_core::map_on_every_core;
use super::sealed_field::{self, may_hold_sealed_fields, subject_of};
use super::stored_members::StoredMembers;
use crate::aggregate::Aggregate;
use crate::cache::{CacheKey, EventCache};
use crate::error::{Error, Result};
use crate::event::envelope::{NewEvent, RecordedEvent};
use crate::event::payload::Payload;
use crate::hash_chain::ChainReport;
use crate::registry::PiiField;
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;
use crate::store::{AppendResult, EventQuery, EventStore, QueryPage, StreamAppend};

/// Subjects whose unwrapped keys are kept in memory by default.
pub const DEFAULT_KEY_CACHE_SUBJECTS: u64 = 10_000;
/// How long an unwrapped key (or a tombstone) is trusted in memory by
/// default; with the forget watch off, another process's `forget` is seen
/// by this one within it.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// How often a store looks for subjects forgotten by other instances, by
/// default (see [`PiiEventStore::forget_watch`]).
pub const DEFAULT_FORGET_WATCH: Duration = Duration::from_secs(1);

/// A subject's key as this process knows it.
#[derive(Clone)]
pub(super) enum SubjectCipher {
    Live(Arc<Aes256Gcm>),
    Forgotten,
}

/// A cache whose entries for a forgotten subject's streams are dropped.
#[derive(Clone)]
pub(super) struct CachePurge {
    cache: Arc<dyn EventCache>,
    key: Arc<dyn Fn(&StreamId) -> CacheKey + Send + Sync>,
}

/// What [`PiiEventStore::forget`] did.
///
/// ```
/// use annals::pii::{MasterKey, PiiEventStore};
/// use annals::prelude::*;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let backend = Arc::new(InMemoryEventStore::new());
/// let store = PiiEventStore::new(backend.clone(), backend, MasterKey::generate());
/// // A subject that never had data: nothing to delete, but its tombstone
/// // still keeps it from ever getting a key.
/// let forgotten = store.forget("nobody").await?;
/// assert_eq!((forgotten.subject.as_str(), forgotten.streams.len(), forgotten.snapshots_deleted), ("nobody", 0, 0));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forgotten {
    /// The tenant whose subject was forgotten (`None`: events without one).
    pub tenant: Option<String>,
    /// The forgotten subject.
    pub subject: String,
    /// The streams that held the subject's encrypted fields.
    pub streams: Vec<StreamId>,
    /// How many snapshots of those streams were deleted.
    pub snapshots_deleted: u64,
    /// How many registered caches were purged of those streams (every one
    /// registered, or the forget failed).
    pub caches_purged: usize,
    /// What this call could not reach itself.
    pub not_reached: Vec<NotReached>,
}

/// What a [`PiiEventStore::forget`] leaves to others, as its report says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReached {
    /// Other processes' key caches and registered caches: each drops the
    /// subject within its [`forget_watch`](PiiEventStore::forget_watch)
    /// interval (`within`), or, with the watch off, trusts its cached key
    /// until the key cache's time to live and keeps cached state until it
    /// is evicted.
    OtherProcesses {
        /// The interval of this process's forget watch (`None`: off here),
        /// which other processes are assumed to share.
        within: Option<Duration>,
    },
    /// SQL read models and published messages (Redis Streams, brokers)
    /// written before the forget keep what they were given: rebuild or
    /// update the ones that hold personal data.
    ReadModelsAndPublications,
}

/// An [`EventStore`] that crypto-shreds personal data: fields marked
/// `#[pii(subject = ...)]` are encrypted on append under a key of their data
/// subject, and [`forget`](Self::forget) destroys that key.
///
/// - **Append**: each `#[pii]` field of an event is replaced by an
///   AES-256-GCM envelope under its subject's key (created on first use,
///   stored wrapped by the [`MasterKey`], bound to the event id, field and
///   subject). The stream is recorded as holding the subject's data.
///   Appending personal data of a forgotten subject fails with
///   [`Error::SubjectForgotten`].
/// - **Reads** (`read_stream`, `read_stream_backward`, `read_all`, `query`):
///   envelopes are opened; a forgotten subject's fields read as their
///   [`Redact`](super::Redact) value, never as an error. An envelope that
///   does not open under a live key is [`Error::PiiField`].
/// - **Forget**: the key is destroyed (a tombstone stays), and the
///   snapshots and cache entries of the subject's streams, which may hold
///   its data in plaintext, are deleted.
///
/// Stored events are never changed, so a hash chain over them still
/// verifies after a forget.
///
/// **Layering**: put it outermost, directly under the repositories and
/// projection runners: `Repository` → `PiiEventStore` →
/// [`CachingEventStore`](crate::cache::CachingEventStore) → backend. The
/// event cache below it then holds only ciphertext; the repositories' state
/// caches above it hold plaintext and are purged on forget when registered
/// with [`purge_state_cache`](Self::purge_state_cache). Writes that bypass
/// it (a SQL store's `append_inline`, `postgres_copy`) store what they are
/// given: send personal data through the `PiiEventStore`.
///
/// ```
/// use annals::pii::{MasterKey, PiiEventStore};
/// use annals::prelude::*;
/// use std::sync::Arc;
///
/// #[annals::event(name = "doc.pii.user_registered")]
/// struct UserRegistered {
///     user_id: String,
///     #[pii(subject = user_id)]
///     email: String,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let backend = Arc::new(InMemoryEventStore::new());
/// let store = PiiEventStore::new(backend.clone(), backend.clone(), MasterKey::generate());
/// let stream = StreamId::new("user-7")?;
/// let event = UserRegistered { user_id: "7".into(), email: "ada@example.test".into() };
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::from_event(&event)?]).await?;
///
/// // The backend holds ciphertext; the decorator reads plaintext.
/// let stored = backend.read_stream(&stream, 1, 10).await?;
/// assert!(!stored[0].payload.as_json().contains("ada@example.test"));
/// let read: UserRegistered = store.read_stream(&stream, 1, 10).await?[0].decode()?;
/// assert_eq!(read.email, "ada@example.test");
///
/// let forgotten = store.forget("7").await?;
/// assert_eq!(forgotten.streams, vec![stream.clone()]);
/// let read: UserRegistered = store.read_stream(&stream, 1, 10).await?[0].decode()?;
/// assert_eq!((read.user_id.as_str(), read.email.as_str()), ("7", "[redacted]"));
///
/// let again = store.append(&stream, ExpectedVersion::Any, vec![NewEvent::from_event(&event)?]).await;
/// assert!(matches!(again, Err(Error::SubjectForgotten { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PiiEventStore {
    inner: Arc<dyn EventStore>,
    keys: Arc<dyn SubjectKeyStore>,
    master: MasterKey,
    ciphers: moka::future::Cache<SubjectId, SubjectCipher>,
    recorded: moka::future::Cache<(SubjectId, StreamId), ()>,
    purges: Vec<CachePurge>,
    /// How often to look for other instances' forgets (`None`: never).
    forget_every: Option<Duration>,
    /// The watch, started with the first use of a subject's key.
    forget_watch: Arc<OnceLock<super::forget_watch::ForgetWatch>>,
}

impl fmt::Debug for PiiEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiEventStore")
            .field("inner", &self.inner.backend())
            .field("master", &self.master)
            .field("cached_subjects", &self.ciphers.entry_count())
            .field("purged_caches", &self.purges.len())
            .finish()
    }
}

/// A data subject's identity: its tenant (`None`: events without one) and
/// its id within the tenant.
pub(super) type SubjectId = (Option<String>, String);

fn subject_id(tenant: Option<&str>, subject: &str) -> SubjectId {
    (tenant.map(str::to_owned), subject.to_owned())
}

/// Drops the entries of `streams` from every registered cache. The entries
/// hold plaintext: a failure must not pass silently.
pub(super) async fn purge_caches(
    purges: &[CachePurge],
    streams: &[StreamId],
    backend: &'static str,
) -> Result<()> {
    for purge in purges {
        let keys: Vec<CacheKey> = streams.iter().map(|stream| (purge.key)(stream)).collect();
        if keys.is_empty() {
            continue;
        }
        purge
            .cache
            .remove(&keys)
            .await
            .map_err(|error| Error::Backend {
                backend,
                operation: "purge the caches of a forgotten subject",
                source: Box::new(error),
            })?;
    }
    Ok(())
}

fn cipher_cache(subjects: u64, ttl: Duration) -> moka::future::Cache<SubjectId, SubjectCipher> {
    moka::future::Cache::builder()
        .max_capacity(subjects)
        .time_to_live(ttl)
        .build()
}

impl PiiEventStore {
    /// Encrypts `#[pii]` fields of events appended to `inner`, with subject
    /// keys kept in `keys` (usually the same backend) and wrapped by
    /// `master`.
    pub fn new(
        inner: Arc<dyn EventStore>,
        keys: Arc<dyn SubjectKeyStore>,
        master: MasterKey,
    ) -> Self {
        PiiEventStore {
            inner,
            keys,
            master,
            ciphers: cipher_cache(DEFAULT_KEY_CACHE_SUBJECTS, DEFAULT_KEY_CACHE_TTL),
            recorded: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            purges: Vec::new(),
            forget_every: Some(DEFAULT_FORGET_WATCH),
            forget_watch: Arc::new(OnceLock::new()),
        }
    }

    /// How often this process looks for subjects forgotten by other
    /// processes (default [`DEFAULT_FORGET_WATCH`], 1 s; `None`: never, and
    /// then another process's forget is seen only when the key cache
    /// expires, and cached state is kept until evicted). Each look is one
    /// indexed query for recent tombstones. The watch starts in the
    /// background with the first use of a subject's key and stops with the
    /// last clone of this store; on each subject forgotten elsewhere it
    /// marks the key forgotten here (fields read as redacted at once) and
    /// purges the registered caches of the subject's streams.
    ///
    /// ```
    /// use annals::pii::{MasterKey, PiiEventStore};
    /// use annals::prelude::*;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// #[annals::event(name = "doc.pii.signed_up")]
    /// struct SignedUp { user_id: String, #[pii(subject = user_id)] email: String }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let backend = Arc::new(InMemoryEventStore::new());
    /// let master = MasterKey::generate();
    /// // Two instances over one database.
    /// let one = PiiEventStore::new(backend.clone(), backend.clone(), master.clone())
    ///     .forget_watch(Some(Duration::from_millis(20)));
    /// let two = PiiEventStore::new(backend.clone(), backend.clone(), master);
    /// let stream = StreamId::new("user-9")?;
    /// let event = SignedUp { user_id: "9".into(), email: "ada@example.test".into() };
    /// one.append(&stream, ExpectedVersion::Any, vec![NewEvent::from_event(&event)?]).await?;
    /// let read: SignedUp = one.read_stream(&stream, 1, 1).await?[0].decode()?;
    /// assert_eq!(read.email, "ada@example.test"); // its key is cached in `one`
    ///
    /// two.forget("9").await?;
    /// tokio::time::sleep(Duration::from_millis(200)).await;
    /// let read: SignedUp = one.read_stream(&stream, 1, 1).await?[0].decode()?;
    /// assert_eq!(read.email, "[redacted]");
    /// # Ok(())
    /// # }
    /// ```
    pub fn forget_watch(mut self, every: Option<Duration>) -> Self {
        self.forget_every = every;
        self
    }

    /// Starts the forget watch, once, if it is on.
    fn ensure_forget_watch(&self) {
        let Some(every) = self.forget_every else {
            return;
        };
        if self.forget_watch.get().is_some() {
            return;
        }
        let _ = self.forget_watch.get_or_init(|| {
            super::forget_watch::ForgetWatch::start(
                super::forget_watch::Watched {
                    keys: Arc::clone(&self.keys),
                    ciphers: self.ciphers.clone(),
                    purges: self.purges.clone(),
                    backend: self.inner.backend(),
                },
                every,
            )
        });
    }

    /// Keeps at most `subjects` unwrapped keys in memory, each for at most
    /// `time_to_live` (defaults: [`DEFAULT_KEY_CACHE_SUBJECTS`],
    /// [`DEFAULT_KEY_CACHE_TTL`]). A `forget` in another process is seen here
    /// by the [`forget_watch`](Self::forget_watch), or, with the watch off,
    /// once the entry expires.
    pub fn key_cache(mut self, subjects: u64, time_to_live: Duration) -> Self {
        self.ciphers = cipher_cache(subjects, time_to_live);
        self
    }

    /// On [`forget`](Self::forget), drops the cached events of the
    /// subject's streams from `cache`: the cache of a
    /// [`CachingEventStore`](crate::cache::CachingEventStore).
    pub fn purge_stream_cache(mut self, cache: Arc<dyn EventCache>) -> Self {
        let tenant = self.inner.tenant().map(str::to_owned);
        self.purges.push(CachePurge {
            cache,
            key: Arc::new(move |stream| {
                crate::cache::caching_store::stream_key(tenant.as_deref(), stream)
            }),
        });
        self
    }

    /// On [`forget`](Self::forget), drops the cached state of aggregate `A`
    /// for the subject's streams from `cache`: the cache of a
    /// [`Repository`](crate::Repository) built
    /// `.with_cache(cache)` (and `.with_tenant(tenant)` when `tenant` is
    /// set; over a tenant-scoped store the store's tenant is used, as the
    /// repository does). Register each (aggregate, tenant) pair whose state
    /// may hold personal data.
    ///
    /// The documented layering, both caches purged on forget:
    ///
    /// ```
    /// use annals::cache::{CachingEventStore, InProcessCache};
    /// use annals::pii::{MasterKey, PiiEventStore};
    /// use annals::prelude::*;
    /// use std::sync::Arc;
    ///
    /// #[annals::event(name = "doc.pii.joined")]
    /// struct Joined { member_id: String, #[pii(subject = member_id)] email: String }
    ///
    /// #[annals::aggregate(name = "member", events(Joined))]
    /// #[derive(Default)]
    /// struct Member { email: String }
    /// impl Apply<Joined> for Member {
    ///     fn apply(&mut self, event: &Joined) { self.email = event.email.clone(); }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let backend = Arc::new(InMemoryEventStore::new());
    /// let events = Arc::new(InProcessCache::new()); // holds ciphertext only
    /// let states = Arc::new(InProcessCache::new()); // holds plaintext state
    /// let store = Arc::new(
    ///     PiiEventStore::new(Arc::new(CachingEventStore::new(backend.clone(), events.clone())), backend, MasterKey::generate())
    ///         .purge_stream_cache(events)
    ///         .purge_state_cache::<Member>(states.clone(), None),
    /// );
    /// let members = Repository::<Member>::new(store.clone()).with_cache(states);
    /// let joined = Joined { member_id: "7".into(), email: "ada@example.test".into() };
    /// members.save("7", ExpectedVersion::NoStream, &[joined], &Metadata::new()).await?;
    /// assert_eq!(members.load_cached("7").await?.state.email, "ada@example.test");
    ///
    /// store.forget("7").await?;
    /// assert_eq!(members.load_cached("7").await?.state.email, "[redacted]");
    /// # Ok(())
    /// # }
    /// ```
    pub fn purge_state_cache<A: Aggregate>(
        mut self,
        cache: Arc<dyn EventCache>,
        tenant: Option<&str>,
    ) -> Self {
        // A repository over a tenant-scoped store keys by the store's tenant.
        let tenant = self.inner.tenant().or(tenant).map(str::to_owned);
        self.purges.push(CachePurge {
            cache,
            key: Arc::new(move |stream| {
                crate::aggregate::repository::state_key::<A>(tenant.as_deref(), stream)
            }),
        });
        self
    }

    /// The store underneath (it holds ciphertext).
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// Forgets a data subject of this store's tenant (a tenant handle's, or
    /// the subjects of events without a tenant on an unscoped store):
    /// destroys its key (leaving a tombstone, so it never gets a new one),
    /// then deletes the snapshots and purges the registered cache entries of
    /// every stream that held its fields. Its fields read as redacted from
    /// then on, on every read path. Another tenant's subject of the same id
    /// is untouched. Idempotent: if it fails part way, call it again.
    ///
    /// Other processes learn of it through their
    /// [`forget_watch`](Self::forget_watch) (within 1 s by default): they
    /// mark the key forgotten and purge their own registered caches. The
    /// report lists what the call left to others
    /// ([`Forgotten::not_reached`]). What it cannot reach: a load that was
    /// already running when the subject was forgotten may still cache its
    /// (plaintext) state or save a snapshot after the purge; SQL read models
    /// and published messages written before the forget keep what they were
    /// given. Forget when the subject is quiet, and rebuild or update read
    /// models that hold personal data.
    pub async fn forget(&self, subject: &str) -> Result<Forgotten> {
        self.forget_in_tenant(self.inner.tenant(), subject).await
    }

    /// Forgets `tenant`'s subject, as [`forget`](Self::forget) does: the
    /// administrative path of an unscoped store over every tenant's events.
    /// A tenant-scoped store forgets only its own tenant's subjects and
    /// refuses another tenant (`Error::InvalidInput`, field `tenant id`).
    ///
    /// ```
    /// use annals::pii::{MasterKey, PiiEventStore};
    /// use annals::prelude::*;
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let backend = Arc::new(InMemoryEventStore::new());
    /// let store = PiiEventStore::new(backend.clone(), backend, MasterKey::generate());
    /// let forgotten = store.forget_in_tenant(Some("acme"), "42").await?;
    /// assert_eq!(forgotten.tenant.as_deref(), Some("acme"));
    /// # Ok(())
    /// # }
    /// ```
    #[tracing::instrument(name = "annals.pii.forget", skip_all)]
    pub async fn forget_in_tenant(&self, tenant: Option<&str>, subject: &str) -> Result<Forgotten> {
        if let Some(scope) = self.inner.tenant()
            && tenant != Some(scope)
        {
            return Err(Error::invalid(
                "tenant id",
                format!("a store scoped to tenant {scope:?} cannot forget subjects of {tenant:?}"),
            ));
        }
        self.keys.forget_subject_key(tenant, subject).await?;
        self.ciphers
            .insert(subject_id(tenant, subject), SubjectCipher::Forgotten)
            .await;
        let streams = self.keys.subject_streams(tenant, subject).await?;
        let mut snapshots_deleted = 0;
        for stream in &streams {
            snapshots_deleted += self.inner.snapshots().delete_stream(stream).await?;
        }
        purge_caches(&self.purges, &streams, self.inner.backend()).await?;
        tracing::info!(
            streams = streams.len(),
            snapshots_deleted,
            "forgot a data subject"
        );
        Ok(Forgotten {
            tenant: tenant.map(str::to_owned),
            subject: subject.to_owned(),
            streams,
            snapshots_deleted,
            caches_purged: self.purges.len(),
            not_reached: vec![
                NotReached::OtherProcesses {
                    within: self.forget_every,
                },
                NotReached::ReadModelsAndPublications,
            ],
        })
    }

    /// The subject's key for an append, created on first use.
    async fn cipher_for_append(
        &self,
        tenant: Option<&str>,
        subject: &str,
        event_type: &str,
    ) -> Result<Arc<Aes256Gcm>> {
        self.ensure_forget_watch();
        let cipher = match self.ciphers.get(&subject_id(tenant, subject)).await {
            Some(cipher) => cipher,
            None => {
                let stored = match self.keys.load_subject_key(tenant, subject).await? {
                    Some(stored) => stored,
                    None => {
                        let data_key = Key::<Aes256Gcm>::generate();
                        let wrapped =
                            self.master
                                .wrap(subject, data_key.as_slice())
                                .ok_or_else(|| Error::SubjectKey {
                                    subject: subject.to_owned(),
                                })?;
                        self.keys
                            .create_subject_key(tenant, subject, wrapped)
                            .await?
                    }
                };
                self.remember(tenant, subject, &stored).await?
            }
        };
        match cipher {
            SubjectCipher::Live(cipher) => Ok(cipher),
            SubjectCipher::Forgotten => Err(Error::SubjectForgotten {
                subject: subject.to_owned(),
                event_type: event_type.to_owned(),
            }),
        }
    }

    async fn remember(
        &self,
        tenant: Option<&str>,
        subject: &str,
        stored: &StoredSubjectKey,
    ) -> Result<SubjectCipher> {
        let cipher = match stored {
            StoredSubjectKey::Wrapped(wrapped) => SubjectCipher::Live(Arc::new(
                self.master
                    .unwrap_key(subject, wrapped)
                    .ok_or_else(|| Error::SubjectKey {
                        subject: subject.to_owned(),
                    })?,
            )),
            StoredSubjectKey::Forgotten { .. } => SubjectCipher::Forgotten,
        };
        self.ciphers
            .insert(subject_id(tenant, subject), cipher.clone())
            .await;
        Ok(cipher)
    }

    /// Records once per process (per cache lifetime) that `stream` holds
    /// the subject's data.
    async fn record(&self, tenant: Option<&str>, subject: &str, stream: &StreamId) -> Result<()> {
        let pair = (subject_id(tenant, subject), stream.clone());
        if self.recorded.get(&pair).await.is_some() {
            return Ok(());
        }
        self.keys
            .record_subject_stream(tenant, subject, stream)
            .await?;
        self.recorded.insert(pair, ()).await;
        Ok(())
    }

    /// Replaces the `#[pii]` fields of an event about to be appended by
    /// their envelopes.
    async fn seal_event(
        &self,
        stream: &StreamId,
        event: &mut NewEvent,
        fields: &[PiiField],
    ) -> Result<()> {
        let mut payload: Map<String, Value> = event.payload.decode().map_err(|error| {
            Error::invalid(
                "payload",
                format!(
                    "event `{}` has `#[pii]` fields but its payload is not a JSON object: {error}",
                    event.event_type
                ),
            )
        })?;
        // The tenant the subject belongs to: the event's, or the tenant a
        // scoped store is about to stamp on it.
        let tenant = match (event.metadata.tenant_id.as_deref(), self.inner.tenant()) {
            (Some(named), Some(scope)) if named != scope => {
                return Err(Error::invalid(
                    "tenant id",
                    format!(
                        "event {} for stream `{stream}` names tenant {named:?}, but the store is scoped to {scope:?}",
                        event.event_id
                    ),
                ));
            }
            (named, scope) => named.or(scope).map(str::to_owned),
        };
        let tenant = tenant.as_deref();
        for field in fields {
            let Some(value) = payload.get(field.field) else {
                continue;
            };
            let subject = subject_of(&payload, field.subject).ok_or_else(|| {
                Error::invalid(
                    "payload",
                    format!(
                        "event `{}` has personal data in `{}` but its subject field `{}` is not a non-empty string or a number",
                        event.event_type, field.field, field.subject
                    ),
                )
            })?;
            let cipher = self
                .cipher_for_append(tenant, &subject, &event.event_type)
                .await?;
            let sealed = sealed_field::seal(&cipher, event.event_id, field.field, &subject, value)
                .ok_or_else(|| {
                    Error::invalid(
                        "payload",
                        format!(
                            "field `{}` of event `{}` could not be encrypted",
                            field.field, event.event_type
                        ),
                    )
                })?;
            self.record(tenant, &subject, stream).await?;
            payload.insert(field.field.to_owned(), sealed);
        }
        event.payload = Payload::from_serialize(&payload)
            .map_err(|error| Error::invalid("payload", error.to_string()))?;
        Ok(())
    }

    /// Opens (or redacts) the sealed fields of stored events. The keys of
    /// their subjects that are not cached are loaded first, in one query
    /// per tenant, not one per subject (a catch-up over more subjects than
    /// the cache holds would otherwise query once per event). A payload
    /// that may hold sealed fields is read as members borrowed from its
    /// text, once to find its subjects and once to open it (no allocation
    /// but the list of members). Parsing and opening a large page is spread
    /// over the machine's cores (the database waits meanwhile: a catch-up
    /// was bound by this process's one core).
    async fn reveal(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        let found = map_on_every_core(events, "parse", |event| {
            let sealed = sealed_subjects(&event);
            Ok((event, sealed))
        })
        .await?;
        let known = Arc::new(
            self.ciphers_for(found.iter().flat_map(|(_, sealed)| sealed.iter().flatten()))
                .await?,
        );
        map_on_every_core(found, "open", move |(event, sealed)| match sealed {
            Some(_) => reveal_event(event, &known),
            None => Ok(event),
        })
        .await
    }

    /// The ciphers of `subjects`: from the cache, and the others from the
    /// key store in one query per tenant. Subjects without a key are left
    /// out (opening their fields reports it).
    async fn ciphers_for<'s>(
        &self,
        subjects: impl Iterator<Item = &'s SubjectId>,
    ) -> Result<HashMap<SubjectId, SubjectCipher>> {
        self.ensure_forget_watch();
        let mut known = HashMap::new();
        let mut missing: HashMap<Option<String>, std::collections::BTreeSet<String>> =
            HashMap::new();
        let mut previous: Option<&SubjectId> = None;
        for id in subjects {
            // A subject's events usually come together.
            if previous == Some(id) {
                continue;
            }
            previous = Some(id);
            if known.contains_key(id)
                || missing
                    .get(&id.0)
                    .is_some_and(|subjects| subjects.contains(&id.1))
            {
                continue;
            }
            match self.ciphers.get(id).await {
                Some(cipher) => {
                    known.insert(id.clone(), cipher);
                }
                None => {
                    missing
                        .entry(id.0.clone())
                        .or_default()
                        .insert(id.1.clone());
                }
            }
        }
        for (tenant, subjects) in missing {
            let subjects: Vec<String> = subjects.into_iter().collect();
            let tenant = tenant.as_deref();
            for (subject, stored) in self.keys.load_subject_keys(tenant, &subjects).await? {
                let cipher = self.remember(tenant, &subject, &stored).await?;
                known.insert(subject_id(tenant, &subject), cipher);
            }
        }
        Ok(known)
    }
}

/// The data subjects whose keys open the sealed fields of an event (each
/// once, in the event's tenant); `None` if it holds no sealed field.
fn sealed_subjects(event: &RecordedEvent) -> Option<Vec<SubjectId>> {
    let (members, fields) = sealed_members(event)?;
    let tenant = event.metadata.tenant_id.as_deref();
    let mut sealed = false;
    let mut subjects: Vec<SubjectId> = Vec::new();
    for field in fields {
        if members.sealed(field.field).is_none() {
            continue;
        }
        sealed = true;
        let Some(subject) = members.subject(field.subject) else {
            continue;
        };
        if !subjects.iter().any(|known| known.1 == subject) {
            subjects.push((tenant.map(str::to_owned), subject));
        }
    }
    sealed.then_some(subjects)
}

/// An event with its sealed fields opened with the subjects' ciphers in
/// `known` (those [`PiiEventStore::ciphers_for`] found), or redacted where
/// the subject is forgotten. The other members of the payload are kept as
/// stored.
fn reveal_event(
    mut event: RecordedEvent,
    known: &HashMap<SubjectId, SubjectCipher>,
) -> Result<RecordedEvent> {
    let corrupt = |field: &str, reason: &str| Error::PiiField {
        stream: event.stream_id.to_string(),
        version: event.version,
        field: field.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((members, fields)) = sealed_members(&event) else {
        return Ok(event);
    };
    let mut opened: Vec<(&str, String)> = Vec::new();
    for field in fields {
        let Some(text) = members.sealed(field.field) else {
            continue;
        };
        let subject = members.subject(field.subject).ok_or_else(|| {
            corrupt(
                field.field,
                "its subject field is missing or not a string or number",
            )
        })?;
        let subject = (event.metadata.tenant_id.clone(), subject);
        let value = match known.get(&subject) {
            Some(SubjectCipher::Live(cipher)) => {
                sealed_field::open(cipher, event.event_id, field.field, &subject.1, &text)
                    .map_err(|reason| corrupt(field.field, reason))?
            }
            Some(SubjectCipher::Forgotten) => (field.redacted)().to_string(),
            None => {
                return Err(corrupt(
                    field.field,
                    "no key is stored for its data subject",
                ));
            }
        };
        opened.push((field.field, value));
    }
    if opened.is_empty() {
        return Ok(event);
    }
    let payload = members.with_replaced(&opened);
    event.payload = Payload::from_checked_json(payload);
    Ok(event)
}

/// The stored members of an event's payload and the `#[pii]` fields its
/// type declares, if its text may hold a sealed field; `None` for every
/// other event (left as is).
fn sealed_members(event: &RecordedEvent) -> Option<(StoredMembers<'_>, &'static [PiiField])> {
    if !may_hold_sealed_fields(event.payload.as_json()) {
        return None;
    }
    let fields = pii_fields(&event.event_type, event.schema_version);
    if fields.is_empty() {
        return None;
    }
    Some((StoredMembers::parse(event.payload.as_json())?, fields))
}

/// The `#[pii]` fields of an event type at a schema version: those its
/// descriptor registered, or those of the type's current version for an
/// older stored version (field names are assumed to be kept).
fn pii_fields(event_type: &str, schema_version: u32) -> &'static [PiiField] {
    type Index = HashMap<(&'static str, u32), &'static [PiiField]>;
    static INDEX: OnceLock<(Index, HashMap<&'static str, &'static [PiiField]>)> = OnceLock::new();
    let (by_version, latest) = INDEX.get_or_init(|| {
        let mut by_version = Index::new();
        let mut latest: HashMap<&'static str, (u32, &'static [PiiField])> = HashMap::new();
        for descriptor in crate::registry::events() {
            if descriptor.pii.is_empty() {
                continue;
            }
            by_version.insert((descriptor.name, descriptor.version), descriptor.pii);
            let entry = latest
                .entry(descriptor.name)
                .or_insert((descriptor.version, descriptor.pii));
            if descriptor.version > entry.0 {
                *entry = (descriptor.version, descriptor.pii);
            }
        }
        let latest = latest
            .into_iter()
            .map(|(name, (_, fields))| (name, fields))
            .collect();
        (by_version, latest)
    });
    by_version
        .get(&(event_type, schema_version))
        .or_else(|| latest.get(event_type))
        .copied()
        .unwrap_or(&[])
}

#[async_trait]
impl EventStore for PiiEventStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn tenant(&self) -> Option<&str> {
        self.inner.tenant()
    }

    #[tracing::instrument(name = "annals.pii.append", skip_all, fields(streams = batch.len()))]
    async fn append_batch(&self, mut batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        for append in &mut batch {
            for event in &mut append.events {
                let fields = pii_fields(&event.event_type, event.schema_version);
                if !fields.is_empty() {
                    self.seal_event(&append.stream_id, event, fields).await?;
                }
            }
        }
        self.inner.append_batch(batch).await
    }

    async fn list_streams(
        &self,
        query: &crate::store::StreamQuery,
    ) -> Result<Vec<crate::store::StreamInfo>> {
        self.inner.list_streams(query).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        self.inner.stream_version(stream).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let events = self
            .inner
            .read_stream(stream, from_version, max_count)
            .await?;
        self.reveal(events).await
    }

    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        before_version: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let events = self
            .inner
            .read_stream_backward(stream, before_version, max_count)
            .await?;
        self.reveal(events).await
    }

    async fn read_all(&self, after: LogPosition, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.read_all(after, max_count).await?;
        self.reveal(events).await
    }

    async fn read_log(
        &self,
        after: LogPosition,
        max_count: usize,
        filter: &crate::store::LogFilter,
    ) -> Result<crate::store::LogPage> {
        // Revealing needs the events' tenants: read the metadata, strip
        // it after.
        let mut page = self
            .inner
            .read_log(after, max_count, &filter.keeping_metadata())
            .await?;
        page.events = self.reveal(std::mem::take(&mut page.events)).await?;
        filter.strip_metadata(&mut page.events);
        Ok(page)
    }

    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        let mut page = self.inner.query(query).await?;
        page.events = self.reveal(std::mem::take(&mut page.events)).await?;
        Ok(page)
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        self.inner.count(query).await
    }

    async fn read_matching(
        &self,
        tenant: Option<&str>,
        criteria: &crate::store::EventCriteria,
        after: Option<LogPosition>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let events = self
            .inner
            .read_matching(tenant, criteria, after, max_count)
            .await?;
        self.reveal(events).await
    }

    /// The chain covers the stored ciphertext, which a forget leaves as it
    /// is: a log with forgotten subjects still verifies.
    async fn verify_stream(&self, stream: &StreamId) -> Result<ChainReport> {
        self.inner.verify_stream(stream).await
    }

    async fn verify_log(&self) -> Result<ChainReport> {
        self.inner.verify_log().await
    }

    fn snapshots(&self) -> std::sync::Arc<dyn crate::aggregate::snapshot::SnapshotStore> {
        self.inner.snapshots()
    }

    fn checkpoints(&self) -> std::sync::Arc<dyn crate::checkpoint::CheckpointStore> {
        self.inner.checkpoints()
    }

    fn dead_letters(
        &self,
    ) -> std::sync::Arc<dyn crate::subscription::dead_letter::DeadLetterStore> {
        self.inner.dead_letters()
    }

    async fn watch_log(&self) -> crate::store::LogWatch {
        self.inner.watch_log().await
    }
}
