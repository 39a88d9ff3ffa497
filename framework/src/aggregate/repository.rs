//! The repository: load an aggregate from its events, execute commands with
//! optimistic concurrency and automatic retry, save events with metadata,
//! and append to several aggregates in one transaction.

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use crate::aggregate::snapshot::{Snapshot, SnapshotSettings};
use crate::aggregate::{Aggregate, Handle};
use crate::cache::{CacheKey, CacheValue, EventCache};
use crate::error::{Error, Result};
use crate::event::envelope::{NewEvent, RecordedEvent};
use crate::event::metadata::Metadata;
use crate::store::position::LogPosition;
use crate::store::stream::{ExpectedVersion, StreamId};
use crate::store::{AppendResult, EventQuery, EventStore, MAX_EVENTS_PER_APPEND, StreamAppend};

/// How often [`Repository::execute`] tries a command by default before
/// giving up on version conflicts.
pub const DEFAULT_MAX_ATTEMPTS: usize = 5;

/// An aggregate's state at a version.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The state after applying every event up to `version`.
    pub state: A,
    /// The stream's version (0: no events yet).
    pub version: u64,
}

/// The outcome of a successful command.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The state after the new events.
    pub state: A,
    /// The stream's version after the append.
    pub version: u64,
    /// The events the command produced (empty: nothing was appended).
    pub events: Vec<A::Event>,
    /// How many times the command was decided (1 unless it hit conflicts).
    pub attempts: usize,
    /// The log position of the last event appended (`None`: the command
    /// appended nothing), for waiting until a projection or subscription
    /// has seen it (read-your-writes).
    pub position: Option<LogPosition>,
    /// `true` when the command id in the metadata had been executed before
    /// (a retry): `events`, `version` and `position` are that first
    /// execution's, nothing was appended now, and `state` is the current one.
    pub repeated: bool,
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command (the domain said no).
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Storage failed, or version conflicts outlasted every retry
    /// ([`Error::VersionConflict`]).
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> CommandError<E> {
    /// The domain error, if the aggregate refused the command.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            CommandError::Rejected(error) => Some(error),
            CommandError::Store(_) => None,
        }
    }
}

/// Loads and saves aggregates of type `A` in an [`EventStore`].
///
/// ```
/// # use annals::prelude::*;
/// # use annals::{Aggregate, Apply, Handle};
/// #[annals::event(name = "counter.incremented")]
/// struct Incremented { by: u32 }
///
/// #[annals::aggregate(name = "counter", events(Incremented))]
/// #[derive(Default, Debug)]
/// struct Counter { total: u32 }
///
/// impl Apply<Incremented> for Counter {
///     fn apply(&mut self, event: &Incremented) { self.total += event.by; }
/// }
///
/// struct Increment(u32);
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("counters only go up by 1 to 10")]
/// struct OutOfRange;
///
/// impl Handle<Increment> for Counter {
///     type Error = OutOfRange;
///     fn handle(&self, Increment(by): &Increment) -> Result<Vec<Incremented>, OutOfRange> {
///         if !(1..=10).contains(by) { return Err(OutOfRange); }
///         Ok(vec![Incremented { by: *by }])
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = std::sync::Arc::new(InMemoryEventStore::new());
/// let counters = Repository::<Counter>::new(store.clone());
/// counters.execute("a", &Increment(3), Metadata::new()).await?;
/// let executed = counters.execute("a", &Increment(4), Metadata::new()).await?;
/// assert!(counters.execute("a", &Increment(40), Metadata::new()).await.is_err());
/// let loaded = counters.load("a").await?;
/// assert_eq!((loaded.state.total, loaded.version), (7, 2));
/// // Where the last event went in the log, to wait for readers to see it.
/// let last = store.read_all(LogPosition::START, 10).await?.pop().map(|event| event.position);
/// assert_eq!(executed.position, last);
/// # Ok(())
/// # }
/// ```
pub struct Repository<A> {
    store: Arc<dyn EventStore>,
    max_attempts: usize,
    snapshots: Option<SnapshotSettings>,
    cache: Option<Arc<dyn EventCache>>,
    tenant: Option<String>,
    aggregate: PhantomData<fn() -> A>,
}

/// Events read per round trip while loading a stream.
const LOAD_PAGE: usize = 1024;

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            max_attempts: self.max_attempts,
            snapshots: self.snapshots.clone(),
            cache: self.cache.clone(),
            tenant: self.tenant.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &std::any::type_name::<A>())
            .field("store", &self.store.backend())
            .field("max_attempts", &self.max_attempts)
            .field("snapshots", &self.snapshots)
            .field("cache", &self.cache.as_ref().map(|cache| cache.name()))
            .finish()
    }
}

/// A state as the repository caches it: the state, its version, and the
/// id of the event at that version, so that an entry is only used for the
/// history it summarises (another database behind the same cache, or a
/// restored one, has other event ids at the same versions).
struct CachedState<A> {
    state: A,
    version: u64,
    head: Uuid,
}

impl<A: Aggregate> CachedState<A> {
    /// The first byte of every entry: the layout below. Entries of another
    /// layout (an older Annals) do not decode and are dropped.
    const FORMAT: u8 = 2;
    /// Format byte, version, head event id.
    const HEADER: usize = 1 + 8 + 16;

    /// `FORMAT || version (big-endian) || head event id || state as JSON`.
    fn encode(version: u64, head: Uuid, state: &A) -> Option<Vec<u8>> {
        let mut value = Vec::with_capacity(Self::HEADER + 64);
        value.push(Self::FORMAT);
        value.extend_from_slice(&version.to_be_bytes());
        value.extend_from_slice(head.as_bytes());
        serde_json::to_writer(&mut value, state).ok()?;
        Some(value)
    }

    /// The entry, or `None` for another layout, a version 0 (no history to
    /// summarise) or a state that does not decode.
    fn decode(value: &[u8]) -> Option<Self> {
        let (&format, rest) = value.split_first()?;
        if format != Self::FORMAT || rest.len() < Self::HEADER - 1 {
            return None;
        }
        let (version, rest) = rest.split_at(8);
        let (head, body) = rest.split_at(16);
        let version = u64::from_be_bytes(version.try_into().ok()?);
        if version == 0 {
            return None;
        }
        Some(CachedState {
            state: serde_json::from_slice(body).ok()?,
            version,
            head: Uuid::from_slice(head).ok()?,
        })
    }
}

/// The cache key of an aggregate's state in `tenant`'s entries (also purged
/// by [`PiiEventStore::forget`](crate::pii::PiiEventStore::forget)).
pub(crate) fn state_key<A: Aggregate>(tenant: Option<&str>, stream_id: &StreamId) -> CacheKey {
    CacheKey::new(
        tenant,
        "state",
        format!("{stream_id}@{}", A::SNAPSHOT_VERSION),
    )
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`, retrying conflicting commands up to
    /// [`DEFAULT_MAX_ATTEMPTS`] times.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Repository {
            store,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            snapshots: None,
            cache: None,
            tenant: None,
            aggregate: PhantomData,
        }
    }

    /// Scopes the cache entries of this repository to `tenant`: their keys
    /// carry it, so tenants never share an entry.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Keeps loaded state in `cache` (written through after every command).
    /// A load then starts from the cached state and still reads any newer
    /// events from the store, so a stale entry costs a few more events, never
    /// a wrong answer; a failing cache is logged and bypassed.
    ///
    /// Each entry names the history it summarises (its version and the id
    /// of the event at that version): a load checks that event, and a
    /// command decided on a cached state appends only if the stream still
    /// ends with it. An entry of another history (another database behind
    /// the same cache, a restored one) is dropped and counted
    /// (`annals_cached_states_dropped_total`), never used.
    pub fn with_cache(mut self, cache: Arc<dyn EventCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Drops the cached state of the aggregate `id`.
    pub async fn invalidate(&self, id: impl Display) -> Result<()> {
        let stream_id = A::stream_id(&id)?;
        if let Some(cache) = &self.cache
            && let Err(error) = cache.remove(&[self.state_key(&stream_id)]).await
        {
            tracing::warn!(stream = %stream_id, %error, "could not invalidate the cached state");
        }
        Ok(())
    }

    /// The cache key of an aggregate's state: the tenant (the store's, for
    /// a tenant-scoped store, else the one given to
    /// [`with_tenant`](Self::with_tenant)), and the shape version so a new
    /// shape never reads an old entry.
    fn state_key(&self, stream_id: &StreamId) -> CacheKey {
        let tenant = self.store.tenant().or(self.tenant.as_deref());
        state_key::<A>(tenant, stream_id)
    }

    /// The cached state of a stream, if a cache is set, holds it and it
    /// decodes: the state, its version and the id of the event at that
    /// version (the history it summarises).
    async fn cached_state(&self, stream_id: &StreamId) -> Option<CachedState<A>> {
        let cache = self.cache.as_ref()?;
        let value = match cache.get(&self.state_key(stream_id)).await {
            Ok(value) => value?,
            Err(error) => {
                tracing::warn!(stream = %stream_id, %error, "cache unavailable; loading from the store");
                return None;
            }
        };
        let decoded = CachedState::decode(&value);
        if decoded.is_none() {
            tracing::warn!(stream = %stream_id, "dropping a cached state that does not decode");
            self.drop_cached(stream_id, "undecodable").await;
        }
        decoded
    }

    /// Removes a stream's cached state, counting why.
    async fn drop_cached(&self, stream_id: &StreamId, reason: &'static str) {
        crate::observability::telemetry::cached_state_dropped(A::NAME, reason);
        if let Some(cache) = &self.cache {
            let _ = cache.remove(&[self.state_key(stream_id)]).await;
        }
    }

    /// Writes a state through to the cache, with the version and the id of
    /// the event at that version; failures are logged.
    async fn cache_state(&self, stream_id: &StreamId, version: u64, head: Uuid, state: &A) {
        let Some(cache) = &self.cache else { return };
        let Some(value) = CachedState::encode(version, head, state) else {
            tracing::warn!(stream = %stream_id, "state does not serialise for the cache");
            return;
        };
        if let Err(error) = cache
            .put(&self.state_key(stream_id), CacheValue::from(value))
            .await
        {
            tracing::warn!(stream = %stream_id, %error, "could not cache the state");
        }
    }

    /// Loads through snapshots and takes them: every
    /// [`Aggregate::SNAPSHOT_EVERY`] events (or the settings' override), and
    /// on demand with [`snapshot`](Self::snapshot).
    pub fn with_snapshots(mut self, settings: SnapshotSettings) -> Self {
        self.snapshots = Some(settings);
        self
    }

    /// Sets how many times a command is decided before a version conflict is
    /// returned to the caller (at least 1).
    pub fn with_max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Loads the aggregate `id`: every event of its stream applied in order
    /// to the default state. An aggregate with no events loads as the
    /// default state at version 0.
    #[tracing::instrument(name = "annals.repository.load", skip_all, fields(aggregate = A::NAME, id = %id))]
    pub async fn load(&self, id: impl Display) -> Result<Loaded<A>> {
        crate::registry::validate_once()?;
        let stream_id = A::stream_id(&id)?;
        self.load_stream(stream_id).await
    }

    /// The cached state of `id` as it is, without asking the store whether
    /// it is current; loads (and caches) from the store when nothing is
    /// cached. For reads that may lag this process's cache (other
    /// processes' writes, until they invalidate or the entry expires);
    /// commands never need it: [`execute`](Self::execute) already decides
    /// on the cached state and lets the append's version check catch a
    /// stale one.
    ///
    /// ```
    /// # use annals::prelude::*;
    /// # #[annals::event(name = "doc.visit")] struct Visited;
    /// # #[annals::aggregate(name = "page", events(Visited))]
    /// # #[derive(Default)] struct Page { visits: u64 }
    /// # impl Apply<Visited> for Page { fn apply(&mut self, _: &Visited) { self.visits += 1 } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let store = std::sync::Arc::new(InMemoryEventStore::new());
    /// let pages = Repository::<Page>::new(store)
    ///     .with_cache(std::sync::Arc::new(annals::cache::InProcessCache::new()));
    /// pages.save("home", ExpectedVersion::Any, &[Visited, Visited], &Metadata::new()).await?;
    /// assert_eq!(pages.load_cached("home").await?.state.visits, 2); // from the store, now cached
    /// assert_eq!(pages.load_cached("home").await?.version, 2);      // from the cache alone
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load_cached(&self, id: impl Display) -> Result<Loaded<A>> {
        crate::registry::validate_once()?;
        let stream_id = A::stream_id(&id)?;
        if let Some(cached) = self.cached_state(&stream_id).await {
            return Ok(Loaded {
                stream_id,
                state: cached.state,
                version: cached.version,
            });
        }
        self.load_stream(stream_id).await
    }

    async fn load_stream(&self, stream_id: StreamId) -> Result<Loaded<A>> {
        self.load_up_to(stream_id, None).await
    }

    /// The newest usable snapshot at or below `max_version` plus the events
    /// after it, up to `max_version` (the head when `None`).
    async fn load_up_to(&self, stream_id: StreamId, max_version: Option<u64>) -> Result<Loaded<A>> {
        if let Some(loaded) = self.load_once(&stream_id, max_version, true).await? {
            return Ok(loaded);
        }
        // The cache claimed a version the store does not have (a restored
        // database, another environment): it was dropped; read the store.
        self.load_once(&stream_id, max_version, false)
            .await?
            .ok_or_else(|| Error::Backend {
                backend: self.store.backend(),
                operation: "load",
                source: format!("`{stream_id}` could not be loaded without the cache").into(),
            })
    }

    /// One load; `None` when the cached state turned out to be ahead of the
    /// store (the entry is dropped).
    async fn load_once(
        &self,
        stream_id: &StreamId,
        max_version: Option<u64>,
        use_cache: bool,
    ) -> Result<Option<Loaded<A>>> {
        let cached = match max_version {
            None if use_cache => self.cached_state(stream_id).await,
            _ => None,
        };
        let from_cache = cached.as_ref().map(|cached| (cached.version, cached.head));
        let start = match cached {
            Some(found) => Some((found.state, found.version)),
            None => self.restore_snapshot(stream_id, max_version).await,
        };
        let (mut state, mut version) = start.unwrap_or_else(|| (A::default(), 0));
        // A cached state is checked against the store: the event at its
        // version must be the one it summarises (same id), not just exist.
        // Reading from that version (not after it) checks it in the same
        // round trip.
        let mut check_cached = from_cache;
        // The id of the event at `version`, once an event was read.
        let mut head = None;
        let limit = max_version.unwrap_or(u64::MAX);
        // The cached entry is checked even when it claims the last version
        // there is (`u64::MAX`).
        while version < limit || check_cached.is_some() {
            let want = usize::try_from(limit - version)
                .unwrap_or(usize::MAX)
                .min(LOAD_PAGE);
            let (from, extra) = match check_cached {
                Some((cached, _)) => (cached, 1),
                None => (version + 1, 0),
            };
            let page = self
                .store
                .read_stream(stream_id, from, want + extra)
                .await?;
            let mut events = page.iter();
            if let Some((cached, cached_head)) = check_cached.take()
                && events
                    .next()
                    .is_none_or(|first| first.version != cached || first.event_id != cached_head)
            {
                tracing::warn!(stream = %stream_id, cached, "the cached state summarises another history than the store's; dropping it");
                self.drop_cached(stream_id, "history").await;
                return Ok(None);
            }
            let done = page.len() < want + extra;
            for recorded in events {
                let event: A::Event = recorded.decode()?;
                state.apply_event(&event);
                version = recorded.version;
                head = Some(recorded.event_id);
            }
            if done {
                break;
            }
        }
        if max_version.is_none()
            && let Some(head) = head
        {
            self.cache_state(stream_id, version, head, &state).await;
        }
        Ok(Some(Loaded {
            stream_id: stream_id.clone(),
            state,
            version,
        }))
    }

    /// The state from the newest snapshot at or below `max_version`, if
    /// snapshots are on and one decodes; problems are logged and skipped.
    async fn restore_snapshot(
        &self,
        stream_id: &StreamId,
        max_version: Option<u64>,
    ) -> Option<(A, u64)> {
        let settings = self.snapshots.as_ref()?;
        let snapshot = match self.store.snapshots().load(stream_id, max_version).await {
            Ok(found) => found?,
            Err(error) => {
                tracing::warn!(stream = %stream_id, %error, "cannot read snapshots; loading from events");
                return None;
            }
        };
        let decoded = settings.codec.decode(
            stream_id,
            snapshot.version,
            snapshot.snapshot_version,
            snapshot.encoding,
            &snapshot.data,
        );
        let payload = match decoded {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(stream = %stream_id, version = snapshot.version, %error, "skipping an unusable snapshot; rebuilding from events");
                return None;
            }
        };
        match A::restore(snapshot.snapshot_version, &payload) {
            Some(state) => Some((state, snapshot.version)),
            None => {
                tracing::info!(
                    stream = %stream_id,
                    version = snapshot.version,
                    stored_shape = snapshot.snapshot_version,
                    current_shape = A::SNAPSHOT_VERSION,
                    "ignoring a snapshot of another shape; rebuilding from events"
                );
                None
            }
        }
    }

    /// Loads the aggregate `id` as it was at `version` (snapshot-accelerated).
    pub async fn load_at(&self, id: impl Display, version: u64) -> Result<Loaded<A>> {
        crate::registry::validate_once()?;
        self.load_up_to(A::stream_id(&id)?, Some(version)).await
    }

    /// Loads the aggregate `id` as it was at instant `at`: every event
    /// recorded at or before it, from the newest snapshot at or below the
    /// last such version.
    ///
    /// The last version recorded by `at` is found by a binary search over
    /// the stream's versions (event times within a stream do not go back:
    /// each append follows the one before it), so the number of queries
    /// grows with the logarithm of the stream's length: about 25 for an
    /// early instant of a 1,000,000-event stream, where walking the
    /// snapshots down one by one took two queries per snapshot. Failing
    /// reads are errors; an unusable snapshot is skipped, as in
    /// [`load`](Self::load).
    ///
    /// ```
    /// use annals::prelude::*;
    ///
    /// #[event(name = "as_of_doc.ticked")]
    /// struct Ticked;
    ///
    /// #[aggregate(name = "as_of_doc_clock", events(Ticked))]
    /// #[derive(Default, Debug)]
    /// struct Clock { ticks: u32 }
    ///
    /// impl Apply<Ticked> for Clock {
    ///     fn apply(&mut self, _: &Ticked) { self.ticks += 1; }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let store = std::sync::Arc::new(InMemoryEventStore::new());
    /// let clocks: Repository<Clock> = Repository::new(store.clone());
    /// let stream = Clock::stream_id(&"kitchen")?;
    /// store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::from_event(&Ticked)?]).await?;
    /// tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    /// let between = chrono::Utc::now();
    /// tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    /// store.append(&stream, ExpectedVersion::Exact(1), vec![NewEvent::from_event(&Ticked)?]).await?;
    ///
    /// let then = clocks.load_as_of("kitchen", between).await?;
    /// assert_eq!((then.version, then.state.ticks), (1, 1));
    /// assert_eq!(clocks.load("kitchen").await?.state.ticks, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load_as_of(
        &self,
        id: impl Display,
        at: chrono::DateTime<Utc>,
    ) -> Result<Loaded<A>> {
        crate::registry::validate_once()?;
        let stream_id = A::stream_id(&id)?;
        let last = self.last_version_by(&stream_id, at).await?;
        self.load_up_to(stream_id, Some(last)).await
    }

    /// The last version of a stream recorded at or before `at` (0 if
    /// none): the head if it was, else a binary search.
    async fn last_version_by(
        &self,
        stream_id: &StreamId,
        at: chrono::DateTime<Utc>,
    ) -> Result<u64> {
        let recorded_at = |version: u64| async move {
            let event = self.store.read_stream(stream_id, version, 1).await?;
            match event.first() {
                Some(event) if event.version == version => Ok(event.recorded_at),
                _ => Err(Error::Backend {
                    backend: self.store.backend(),
                    operation: "load as of",
                    source: format!("`{stream_id}` has no version {version}").into(),
                }),
            }
        };
        let head = self.store.stream_version(stream_id).await?;
        if head == 0 || recorded_at(head).await? <= at {
            return Ok(head);
        }
        // Version `low` was recorded by `at` (0 stands for "before the
        // first"); version `high + 1` was not.
        let (mut low, mut high) = (0, head - 1);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            if recorded_at(middle).await? <= at {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        Ok(low)
    }

    /// Loads many aggregates, at most `concurrency` at a time. Results come
    /// in the order of `ids`.
    pub async fn load_many<I>(&self, ids: I, concurrency: usize) -> Result<Vec<Loaded<A>>>
    where
        I: IntoIterator,
        I::Item: Display,
    {
        use futures_util::stream::{self, StreamExt, TryStreamExt};
        crate::registry::validate_once()?;
        let streams = ids
            .into_iter()
            .map(|id| A::stream_id(&id))
            .collect::<Result<Vec<_>>>()?;
        stream::iter(streams)
            .map(|stream_id| self.load_stream(stream_id))
            .buffered(concurrency.max(1))
            .try_collect()
            .await
    }

    /// A copy of this repository that does not use the cache (replays
    /// rebuild from the store).
    pub(crate) fn without_cache(&self) -> Self {
        let mut copy = self.clone();
        copy.cache = None;
        copy
    }

    /// Loads by stream id (used by replay).
    pub(crate) async fn load_stream_id(&self, stream_id: StreamId) -> Result<Loaded<A>> {
        self.load_stream(stream_id).await
    }

    /// Takes a snapshot of the aggregate `id` now; returns the version it
    /// reflects (`None` for an aggregate with no events). Uses the default
    /// codec when snapshots are not configured.
    pub async fn snapshot(&self, id: impl Display) -> Result<Option<u64>> {
        let loaded = self.load(id).await?;
        if loaded.version == 0 {
            return Ok(None);
        }
        self.save_snapshot(&loaded.stream_id, loaded.version, &loaded.state)
            .await?;
        Ok(Some(loaded.version))
    }

    async fn save_snapshot(&self, stream_id: &StreamId, version: u64, state: &A) -> Result<()> {
        let default_settings = SnapshotSettings::default();
        let settings = self.snapshots.as_ref().unwrap_or(&default_settings);
        let payload = state.snapshot().map_err(|error| {
            Error::invalid(
                "snapshot",
                format!("the state of `{stream_id}` does not serialise: {error}"),
            )
        })?;
        let (encoding, data) =
            settings
                .codec
                .encode(stream_id, version, A::SNAPSHOT_VERSION, &payload)?;
        self.store
            .snapshots()
            .save(Snapshot {
                stream_id: stream_id.clone(),
                version,
                snapshot_version: A::SNAPSHOT_VERSION,
                encoding,
                data,
                taken_at: Utc::now().trunc_subsecs(6),
            })
            .await
    }

    /// Takes a snapshot if the append from `before` to `after` crossed a
    /// multiple of the snapshot interval. A failure is logged: the command
    /// succeeded, the snapshot is only an optimisation.
    async fn maybe_snapshot(&self, stream_id: &StreamId, before: u64, after: u64, state: &A) {
        let Some(settings) = &self.snapshots else {
            return;
        };
        let Some(every) = settings
            .every
            .or(A::SNAPSHOT_EVERY)
            .filter(|every| *every > 0)
        else {
            return;
        };
        if before / every == after / every {
            return;
        }
        if let Err(error) = self.save_snapshot(stream_id, after, state).await {
            tracing::warn!(stream = %stream_id, version = after, %error, "could not take a snapshot");
        }
    }

    /// The first outcome of the command whose events carry `tag`, if it
    /// was executed before: its events, on this stream, and the state now.
    async fn earlier_outcome<E>(
        &self,
        stream_id: &StreamId,
        tag: &str,
        metadata: &Metadata,
    ) -> std::result::Result<Option<Executed<A>>, CommandError<E>> {
        let recorded =
            command_events(self.store.as_ref(), tag, metadata.tenant_id.as_deref()).await?;
        let Some(last) = recorded.last() else {
            return Ok(None);
        };
        if let Some(other) = recorded.iter().find(|event| event.stream_id != *stream_id) {
            return Err(CommandError::Store(Error::invalid(
                "command id",
                format!(
                    "command id {:?} was used for stream `{}`, not `{stream_id}`",
                    metadata.command_id().unwrap_or_default(),
                    other.stream_id
                ),
            )));
        }
        let events = recorded
            .iter()
            .map(RecordedEvent::decode::<A::Event>)
            .collect::<Result<Vec<_>>>()?;
        let (version, position) = (last.version, last.position);
        let state = self.load_stream(stream_id.clone()).await?.state;
        Ok(Some(Executed {
            state,
            version,
            events,
            attempts: 0,
            position: Some(position),
            repeated: true,
        }))
    }

    /// Decides `command` on the current state of `id` and appends the events
    /// it produces, expecting the version it loaded. When another writer got
    /// there first, it reloads and decides again, up to the configured number
    /// of attempts. Every event gets `metadata`.
    ///
    /// With a cache, the first decision is made on the cached state without
    /// reading the store (one round trip per command): the append's
    /// expected version catches a stale entry, and a refusal or no-op
    /// decided on cached state is decided again on the store's state.
    ///
    /// With a command id in `metadata`
    /// ([`Metadata::with_command_id`]), a command executed before (its
    /// events carry the id) is not decided again: the first outcome comes
    /// back, marked [`Executed::repeated`]. So a client that lost the answer
    /// (the connection dropped after the commit) retries safely. A refusal
    /// or a no-op records nothing, and a retry decides again.
    #[tracing::instrument(name = "annals.repository.execute", skip_all, fields(aggregate = A::NAME, id = %id))]
    pub async fn execute<C>(
        &self,
        id: impl Display,
        command: &C,
        metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<<A as Handle<C>>::Error>>
    where
        A: Handle<C>,
    {
        crate::registry::validate_once()?;
        let stream_id = A::stream_id(&id)?;
        let command_tag = command_tag(&metadata)?;
        let mut attempt = 0;
        // The first decision trusts a cached state without asking the
        // store: the append expects the cached version, so a stale entry
        // costs a version conflict and a fresh load, never a wrong write.
        let mut try_cache = self.cache.is_some();
        loop {
            let cached = if try_cache {
                try_cache = false;
                self.cached_state(&stream_id).await
            } else {
                None
            };
            let trusted_cache = cached.is_some();
            attempt += 1;
            // Checked on every attempt: a first execution whose commit was
            // still landing shows up as a conflict, then here.
            if let Some(tag) = &command_tag
                && let Some(earlier) = self.earlier_outcome(&stream_id, tag, &metadata).await?
            {
                return Ok(earlier);
            }
            let (mut state, version, cached_head) = match cached {
                Some(found) => (found.state, found.version, Some(found.head)),
                None => {
                    let loaded = self.load_stream(stream_id.clone()).await?;
                    (loaded.state, loaded.version, None)
                }
            };
            let decided = state.handle(command);
            // A refusal or a no-op has no append to check the version: if it
            // was decided on a cached state, decide again on the store's.
            if trusted_cache && !decided.as_ref().is_ok_and(|events| !events.is_empty()) {
                attempt -= 1;
                continue;
            }
            let events = decided.map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    events,
                    attempts: attempt,
                    position: None,
                    repeated: false,
                });
            }
            let mut new_events = to_new_events::<A>(&events, &metadata)?;
            if let Some(tag) = &command_tag {
                for event in &mut new_events {
                    event.tags.push(tag.clone());
                }
            }
            let new_head = new_events.last().map(|event| event.event_id);
            // Decided on a cached state: the append also requires the
            // history it summarises, not only its length.
            let mut append = StreamAppend::new(
                stream_id.clone(),
                ExpectedVersion::Exact(version),
                new_events,
            );
            if let Some(head) = cached_head {
                append = append.with_expected_head(head);
            }
            let appended = self
                .store
                .append_batch(vec![append])
                .await
                .and_then(|mut results| {
                    results.pop().ok_or_else(|| Error::Backend {
                        backend: self.store.backend(),
                        operation: "append",
                        source: "the store reported no result for the append".into(),
                    })
                });
            match appended {
                Ok(result) => {
                    for event in &events {
                        state.apply_event(event);
                    }
                    self.maybe_snapshot(&stream_id, version, result.last_version, &state)
                        .await;
                    if let Some(head) = new_head {
                        self.cache_state(&stream_id, result.last_version, head, &state)
                            .await;
                    }
                    return Ok(Executed {
                        state,
                        version: result.last_version,
                        events,
                        attempts: attempt,
                        position: Some(result.position),
                        repeated: false,
                    });
                }
                // A conflict on a cached state is not a real attempt: the
                // cache was behind, or summarised another history; decide
                // again on the store's state.
                Err(error) if trusted_cache && error.is_conflict() => {
                    attempt -= 1;
                    let reason = if matches!(error, Error::HistoryMismatch { .. }) {
                        "history"
                    } else {
                        "behind"
                    };
                    self.drop_cached(&stream_id, reason).await;
                }
                Err(conflict @ Error::VersionConflict { .. }) if attempt >= self.max_attempts => {
                    return Err(CommandError::Store(conflict));
                }
                Err(Error::VersionConflict { actual, .. }) => {
                    tracing::debug!(
                        attempt,
                        actual,
                        "version conflict; deciding again on fresh state"
                    );
                    // The cache may be what misled us (ahead of the store
                    // after a restore, say): the retry must read the store.
                    if let Some(cache) = &self.cache {
                        let _ = cache.remove(&[self.state_key(&stream_id)]).await;
                    }
                }
                Err(other) => return Err(CommandError::Store(other)),
            }
        }
    }

    /// Appends events to the aggregate `id` if it is at `expected`.
    pub async fn save(
        &self,
        id: impl Display,
        expected: ExpectedVersion,
        events: &[A::Event],
        metadata: &Metadata,
    ) -> Result<AppendResult> {
        let stream_id = A::stream_id(&id)?;
        self.store
            .append(&stream_id, expected, to_new_events::<A>(events, metadata)?)
            .await
    }
}

/// The events an earlier execution of a command recorded under its `tag`
/// (see [`command_tag`]): within `tenant` on an unscoped store, a tenant
/// handle's own otherwise.
pub(crate) async fn command_events(
    store: &dyn EventStore,
    tag: &str,
    tenant: Option<&str>,
) -> Result<Vec<RecordedEvent>> {
    let mut query = EventQuery::new().tag(tag).limit(MAX_EVENTS_PER_APPEND);
    if store.tenant().is_none()
        && let Some(tenant) = tenant
    {
        query = query.tenant(tenant);
    }
    Ok(store.query(&query).await?.events)
}

/// The tag marking the events of the command id in `metadata`, if any.
pub(crate) fn command_tag(metadata: &Metadata) -> Result<Option<String>> {
    let Some(id) = metadata.command_id() else {
        return Ok(None);
    };
    let tag = format!("command:{id}");
    crate::store::condition::validate_tag(&tag).map_err(|_| {
        Error::invalid(
            "command id",
            format!(
                "command id {:?} must be 1 to {} bytes without control characters",
                id.chars().take(32).collect::<String>(),
                crate::store::condition::MAX_TAG_LEN - "command:".len()
            ),
        )
    })?;
    if id.is_empty() {
        return Err(Error::invalid(
            "command id",
            "a command id may not be empty",
        ));
    }
    Ok(Some(tag))
}

fn to_new_events<A: Aggregate>(events: &[A::Event], metadata: &Metadata) -> Result<Vec<NewEvent>> {
    events
        .iter()
        .map(|event| Ok(NewEvent::from_event(event)?.with_metadata(metadata.clone())))
        .collect()
}

/// Events for several aggregates, appended in one transaction: all or none.
///
/// ```
/// # use annals::prelude::*;
/// # use annals::{Apply, UnitOfWork};
/// # #[annals::event(name = "account.credited")]
/// # struct Credited { amount: u64 }
/// # #[annals::aggregate(name = "account", events(Credited))]
/// # #[derive(Default)]
/// # struct Account { balance: u64 }
/// # impl Apply<Credited> for Account { fn apply(&mut self, e: &Credited) { self.balance += e.amount } }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = InMemoryEventStore::new();
/// let metadata = Metadata::new().with_actor("ledger");
/// let mut work = UnitOfWork::new();
/// work.append::<Account>("alice", ExpectedVersion::Any, &[Credited { amount: 5 }], &metadata)?
///     .append::<Account>("bob", ExpectedVersion::NoStream, &[Credited { amount: 7 }], &metadata)?;
/// let results = work.commit(&store).await?;
/// assert_eq!(results.len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct UnitOfWork {
    appends: Vec<StreamAppend>,
}

impl UnitOfWork {
    /// An empty unit of work.
    pub fn new() -> Self {
        UnitOfWork::default()
    }

    /// Adds events for the aggregate `id` of type `A`, expecting `expected`.
    pub fn append<A: Aggregate>(
        &mut self,
        id: impl Display,
        expected: ExpectedVersion,
        events: &[A::Event],
        metadata: &Metadata,
    ) -> Result<&mut Self> {
        let stream_id = A::stream_id(&id)?;
        self.appends.push(StreamAppend::new(
            stream_id,
            expected,
            to_new_events::<A>(events, metadata)?,
        ));
        Ok(self)
    }

    /// Appends everything in one transaction. Results come in the order the
    /// appends were added.
    pub async fn commit<S: EventStore + ?Sized>(self, store: &S) -> Result<Vec<AppendResult>> {
        store.append_batch(self.appends).await
    }
}
