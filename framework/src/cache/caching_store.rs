//! A store decorator that keeps whole streams' events in a cache: reads of a
//! stream come from the cache plus whatever the store has beyond it, and
//! appends are written through.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::{CacheKey, CacheValue, EventCache};
use crate::error::Result;
use crate::event::envelope::RecordedEvent;
use crate::hash_chain::ChainReport;
use crate::store::append::recorded_events;
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;
use crate::store::{AppendResult, EventQuery, EventStore, QueryPage, StreamAppend};

/// Streams longer than this are not cached whole by default.
pub const DEFAULT_MAX_CACHED_EVENTS: usize = 10_000;

/// An [`EventStore`] that caches each stream's events.
///
/// A read of a stream from its start takes the cached events and asks the
/// store only for events after the last cached version, so the answer is
/// as fresh as the store's; appends extend the cached stream with the new
/// events (write-through). The cache failing only costs store reads.
/// Everything else (the global log, queries, snapshots) goes to the store.
///
/// ```
/// use annals::cache::{CachingEventStore, EventCache, InProcessCache};
/// use annals::prelude::*;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let cache = Arc::new(InProcessCache::new());
/// let store = CachingEventStore::new(Arc::new(InMemoryEventStore::new()), cache.clone());
/// let stream = StreamId::new("user-1")?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::json("registered", &1)?]).await?;
/// assert_eq!(store.read_stream(&stream, 1, 10).await?.len(), 1);
/// assert_eq!(cache.stats().hits, 1, "written through on append, read from the cache");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CachingEventStore {
    inner: Arc<dyn EventStore>,
    cache: Arc<dyn EventCache>,
    max_cached_events: usize,
}

/// The cache key of a stream's events (also purged by
/// [`PiiEventStore::forget`](crate::pii::PiiEventStore::forget)).
/// The key holds the tenant of a tenant-scoped store, so that two tenants'
/// handles never share an entry.
pub(crate) fn stream_key(tenant: Option<&str>, stream: &StreamId) -> CacheKey {
    CacheKey::new(tenant, "stream", stream.as_str())
}

impl CachingEventStore {
    /// Caches `inner`'s streams in `cache`.
    pub fn new(inner: Arc<dyn EventStore>, cache: Arc<dyn EventCache>) -> Self {
        CachingEventStore {
            inner,
            cache,
            max_cached_events: DEFAULT_MAX_CACHED_EVENTS,
        }
    }

    /// Streams longer than this are read from the store and not cached.
    pub fn max_cached_events(mut self, events: usize) -> Self {
        self.max_cached_events = events;
        self
    }

    /// Drops the cached events of a stream.
    pub async fn invalidate_stream(&self, stream: &StreamId) {
        if let Err(error) = self
            .cache
            .remove(&[stream_key(self.inner.tenant(), stream)])
            .await
        {
            tracing::warn!(stream = %stream, %error, "could not invalidate a cached stream");
        }
    }

    /// Drops the cached stream that holds the event `event_id`, if any.
    pub async fn invalidate_event(&self, event_id: Uuid) -> Result<()> {
        let page = self
            .inner
            .query(&EventQuery::new().event_id(event_id).limit(1))
            .await?;
        if let Some(event) = page.events.first() {
            self.invalidate_stream(&event.stream_id).await;
        }
        Ok(())
    }

    async fn cached(&self, stream: &StreamId) -> Option<Vec<RecordedEvent>> {
        match self
            .cache
            .get(&stream_key(self.inner.tenant(), stream))
            .await
        {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(events) => Some(events),
                Err(error) => {
                    tracing::warn!(stream = %stream, %error, "dropping cached events that do not decode");
                    self.invalidate_stream(stream).await;
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(stream = %stream, %error, "cache unavailable; reading the store");
                None
            }
        }
    }

    async fn store_in_cache(&self, stream: &StreamId, events: &[RecordedEvent]) {
        if events.len() > self.max_cached_events {
            self.invalidate_stream(stream).await;
            return;
        }
        match serde_json::to_vec(events) {
            Ok(bytes) => {
                if let Err(error) = self
                    .cache
                    .put(
                        &stream_key(self.inner.tenant(), stream),
                        CacheValue::from(bytes),
                    )
                    .await
                {
                    tracing::warn!(stream = %stream, %error, "could not cache a stream");
                }
            }
            Err(error) => {
                tracing::warn!(stream = %stream, %error, "events do not serialise for the cache")
            }
        }
    }

    /// The whole stream: cached events plus newer ones from the store.
    /// The store read starts at the last cached event, to check it is still
    /// there (a restored database may have lost it): if not, the cached
    /// events are dropped and the stream is read from the store.
    async fn whole_stream(&self, stream: &StreamId) -> Result<Option<Vec<RecordedEvent>>> {
        let mut events = self.cached(stream).await.unwrap_or_default();
        let last = events.last().map(|event| (event.version, event.event_id));
        let from = last.map_or(1, |(version, _)| version);
        let mut newer = self
            .inner
            .read_stream(stream, from, self.max_cached_events + 2)
            .await?;
        if let Some((version, event_id)) = last {
            if newer
                .first()
                .is_none_or(|first| first.version != version || first.event_id != event_id)
            {
                tracing::warn!(stream = %stream, version, "cached events are not in the store; dropping them");
                self.invalidate_stream(stream).await;
                events.clear();
                newer = self
                    .inner
                    .read_stream(stream, 1, self.max_cached_events + 1)
                    .await?;
            } else {
                newer.remove(0);
            }
        }
        if events.len() + newer.len() > self.max_cached_events {
            return Ok(None);
        }
        if !newer.is_empty() {
            events.extend(newer);
            self.store_in_cache(stream, &events).await;
        }
        Ok(Some(events))
    }
}

#[async_trait]
impl EventStore for CachingEventStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn tenant(&self) -> Option<&str> {
        self.inner.tenant()
    }

    async fn append_batch(&self, batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let written = batch.clone();
        let results = self.inner.append_batch(batch).await?;
        for (append, result) in written.into_iter().zip(&results) {
            // A new stream is all here; otherwise extend what is cached.
            let cached = if result.first_version == 1 {
                Some(Vec::new())
            } else {
                self.cached(&append.stream_id).await
            };
            let Some(mut events) = cached else {
                continue;
            };
            let contiguous =
                events.last().map_or(0, |event| event.version) + 1 == result.first_version;
            if !contiguous {
                self.invalidate_stream(&append.stream_id).await;
                continue;
            }
            events.extend(recorded_events(
                std::slice::from_ref(&append),
                std::slice::from_ref(result),
            ));
            self.store_in_cache(&append.stream_id, &events).await;
        }
        Ok(results)
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
        match self.whole_stream(stream).await? {
            Some(events) => Ok(events
                .into_iter()
                .filter(|event| event.version >= from_version)
                .take(max_count)
                .collect()),
            None => {
                self.inner
                    .read_stream(stream, from_version, max_count)
                    .await
            }
        }
    }

    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        before_version: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner
            .read_stream_backward(stream, before_version, max_count)
            .await
    }

    async fn read_all(&self, after: LogPosition, max_count: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, max_count).await
    }

    async fn read_log(
        &self,
        after: LogPosition,
        max_count: usize,
        filter: &crate::store::LogFilter,
    ) -> Result<crate::store::LogPage> {
        self.inner.read_log(after, max_count, filter).await
    }

    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        self.inner.query(query).await
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
        self.inner
            .read_matching(tenant, criteria, after, max_count)
            .await
    }

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
