//! [`RecordingStore`]: a store wrapper that counts what its readers asked
//! for, to test how they read (how many events crossed from the store, how
//! many times the log was counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annals::aggregate::snapshot::SnapshotStore;
use annals::checkpoint::CheckpointStore;
use annals::hash_chain::ChainReport;
use annals::prelude::*;
use annals::store::{
    AppendResult, EventCriteria, EventQuery, LogFilter, LogPage, LogWatch, QueryPage,
};
use annals::subscription::dead_letter::DeadLetterStore;

/// Forwards everything to `inner`, counting the events its log reads return
/// and its `count` calls.
pub struct RecordingStore {
    inner: Arc<dyn EventStore>,
    events_read: AtomicU64,
    counts: AtomicU64,
}

impl RecordingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventStore>) -> Arc<Self> {
        Arc::new(RecordingStore {
            inner,
            events_read: AtomicU64::new(0),
            counts: AtomicU64::new(0),
        })
    }

    /// Events returned by `read_all` and `read_log` so far.
    pub fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::SeqCst)
    }

    /// `count` calls so far.
    pub fn counts(&self) -> u64 {
        self.counts.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl EventStore for RecordingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn tenant(&self) -> Option<&str> {
        self.inner.tenant()
    }
    async fn append_batch(&self, batch: Vec<StreamAppend>) -> annals::Result<Vec<AppendResult>> {
        self.inner.append_batch(batch).await
    }
    async fn stream_version(&self, stream: &StreamId) -> annals::Result<u64> {
        self.inner.stream_version(stream).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from, max).await
    }
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        before: Option<u64>,
        max: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.inner.read_stream_backward(stream, before, max).await
    }
    async fn read_all(&self, after: LogPosition, max: usize) -> annals::Result<Vec<RecordedEvent>> {
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
    ) -> annals::Result<LogPage> {
        let page = self.inner.read_log(after, max, filter).await?;
        self.events_read
            .fetch_add(page.events.len() as u64, Ordering::SeqCst);
        Ok(page)
    }
    async fn query(&self, query: &EventQuery) -> annals::Result<QueryPage> {
        self.inner.query(query).await
    }
    async fn count(&self, query: &EventQuery) -> annals::Result<u64> {
        self.counts.fetch_add(1, Ordering::SeqCst);
        self.inner.count(query).await
    }
    async fn read_matching(
        &self,
        tenant: Option<&str>,
        criteria: &EventCriteria,
        after: Option<LogPosition>,
        max: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.inner.read_matching(tenant, criteria, after, max).await
    }
    async fn verify_stream(&self, stream: &StreamId) -> annals::Result<ChainReport> {
        self.inner.verify_stream(stream).await
    }
    async fn verify_log(&self) -> annals::Result<ChainReport> {
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
        self.inner.watch_log().await
    }
}
