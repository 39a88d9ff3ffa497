//! [`RecordingStore`]: a store wrapper that counts what its callers asked
//! for, to test how a reader or a repository uses the store (how many
//! events crossed from it, how many times the log was counted, how many
//! stream reads a load took).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::aggregate::snapshot::SnapshotStore;
use crate::checkpoint::CheckpointStore;
use crate::error::Result;
use crate::event::envelope::RecordedEvent;
use crate::hash_chain::ChainReport;
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;
use crate::store::{
    AppendResult, EventCriteria, EventQuery, EventStore, LogFilter, LogPage, LogWatch, QueryPage,
    StreamAppend,
};
use crate::subscription::dead_letter::DeadLetterStore;

/// Forwards everything to the store it wraps, counting the events its log
/// reads return, its stream reads, its `count` calls and the watches taken
/// over its appends: to assert how much a projection, a subscription or a
/// load asks of the store.
///
/// ```
/// use std::sync::Arc;
/// use annals::prelude::*;
/// use annals::store::LogFilter;
/// use annals::testing::RecordingStore;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let recording = RecordingStore::new(Arc::new(InMemoryEventStore::new()));
/// let stream = StreamId::new("recorded-1")?;
/// recording.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::json("recorded.noted", &json!(1))?]).await?;
/// recording.read_log(LogPosition::START, 10, &LogFilter::event_types(["recorded.other"])).await?;
/// assert_eq!(recording.events_read(), 0, "the filter left the event in the store");
/// recording.read_stream(&stream, 1, 10).await?;
/// assert_eq!(recording.stream_reads(), 1);
/// # Ok(())
/// # }
/// ```
pub struct RecordingStore {
    inner: Arc<dyn EventStore>,
    events_read: AtomicU64,
    counts: AtomicU64,
    stream_reads: AtomicU64,
    watches: AtomicU64,
}

impl RecordingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventStore>) -> Arc<Self> {
        Arc::new(RecordingStore {
            inner,
            events_read: AtomicU64::new(0),
            counts: AtomicU64::new(0),
            stream_reads: AtomicU64::new(0),
            watches: AtomicU64::new(0),
        })
    }

    /// Events returned by `read_all` and `read_log` so far.
    pub fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::SeqCst)
    }

    /// Calls reading one stream so far (`stream_version`, `read_stream`,
    /// `read_stream_backward`).
    pub fn stream_reads(&self) -> u64 {
        self.stream_reads.load(Ordering::SeqCst)
    }

    /// `count` calls so far.
    pub fn counts(&self) -> u64 {
        self.counts.load(Ordering::SeqCst)
    }

    /// `watch_log` calls so far (on PostgreSQL the first opens a `LISTEN`
    /// connection).
    pub fn watches(&self) -> u64 {
        self.watches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventStore for RecordingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn tenant(&self) -> Option<&str> {
        self.inner.tenant()
    }
    async fn append_batch(&self, batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.inner.append_batch(batch).await
    }
    async fn list_streams(
        &self,
        query: &crate::store::StreamQuery,
    ) -> Result<Vec<crate::store::StreamInfo>> {
        self.inner.list_streams(query).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        self.stream_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.stream_version(stream).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.stream_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream, from, max).await
    }
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        before: Option<u64>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.stream_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream_backward(stream, before, max).await
    }
    async fn read_all(&self, after: LogPosition, max: usize) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.read_all(after, max).await?;
        self.events_read
            .fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(events)
    }
    async fn read_log(
        &self,
        after: LogPosition,
        max: usize,
        filter: &LogFilter,
    ) -> Result<LogPage> {
        let page = self.inner.read_log(after, max, filter).await?;
        self.events_read
            .fetch_add(page.events.len() as u64, Ordering::SeqCst);
        Ok(page)
    }
    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        self.inner.query(query).await
    }
    async fn count(&self, query: &EventQuery) -> Result<u64> {
        self.counts.fetch_add(1, Ordering::SeqCst);
        self.inner.count(query).await
    }
    async fn read_matching(
        &self,
        tenant: Option<&str>,
        criteria: &EventCriteria,
        after: Option<LogPosition>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner.read_matching(tenant, criteria, after, max).await
    }
    async fn verify_stream(&self, stream: &StreamId) -> Result<ChainReport> {
        self.inner.verify_stream(stream).await
    }
    async fn verify_log(&self) -> Result<ChainReport> {
        self.inner.verify_log().await
    }
    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.inner.snapshots()
    }
    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        self.inner.checkpoints()
    }
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        self.inner.dead_letters()
    }
    async fn watch_log(&self) -> LogWatch {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch_log().await
    }
}
