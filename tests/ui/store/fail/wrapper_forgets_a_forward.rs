// A wrapper around a store that forwards everything but the log watch: the
// compiler names what it missed, instead of the wrapper silently polling.
use std::sync::Arc;

// A second `Future` in scope makes rustc print the full path in its advice,
// the same whichever crates the build happened to load.
#[allow(dead_code)]
trait Future {}

use annals::checkpoint::CheckpointStore;
use annals::subscription::dead_letter::DeadLetterStore;
use annals::hash_chain::ChainReport;
use annals::aggregate::snapshot::SnapshotStore;
use annals::store::{AppendResult, EventCriteria, EventQuery, QueryPage};
use annals::prelude::*;

struct Audited(Arc<dyn EventStore>);

#[async_trait::async_trait]
impl EventStore for Audited {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn tenant(&self) -> Option<&str> {
        self.0.tenant()
    }
    async fn append_batch(&self, batch: Vec<StreamAppend>) -> annals::Result<Vec<AppendResult>> {
        self.0.append_batch(batch).await
    }
    async fn stream_version(&self, stream: &StreamId) -> annals::Result<u64> {
        self.0.stream_version(stream).await
    }
    async fn list_streams(&self, query: &annals::store::StreamQuery) -> annals::Result<Vec<annals::store::StreamInfo>> {
        self.0.list_streams(query).await
    }
    async fn read_stream(&self, stream: &StreamId, from: u64, max: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.0.read_stream(stream, from, max).await
    }
    async fn read_stream_backward(&self, stream: &StreamId, before: Option<u64>, max: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.0.read_stream_backward(stream, before, max).await
    }
    async fn read_all(&self, after: LogPosition, max: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.0.read_all(after, max).await
    }
    async fn read_log(&self, after: LogPosition, max: usize, filter: &annals::store::LogFilter) -> annals::Result<annals::store::LogPage> {
        self.0.read_log(after, max, filter).await
    }
    async fn query(&self, query: &EventQuery) -> annals::Result<QueryPage> {
        self.0.query(query).await
    }
    async fn count(&self, query: &EventQuery) -> annals::Result<u64> {
        self.0.count(query).await
    }
    async fn read_matching(
        &self,
        tenant: Option<&str>,
        criteria: &EventCriteria,
        after: Option<LogPosition>,
        max: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.0.read_matching(tenant, criteria, after, max).await
    }
    async fn verify_stream(&self, stream: &StreamId) -> annals::Result<ChainReport> {
        self.0.verify_stream(stream).await
    }
    async fn verify_log(&self) -> annals::Result<ChainReport> {
        self.0.verify_log().await
    }
    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.0.snapshots()
    }
    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        self.0.checkpoints()
    }
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        self.0.dead_letters()
    }
}

fn main() {}
