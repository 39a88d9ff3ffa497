//! The in-memory event store: a product backend for tests, tools and
//! short-lived processes, held entirely in the process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use super::append::{next_version, validate_batch};
use super::{AppendResult, EventQuery, EventStore, QueryPage, StreamAppend};
use crate::dead_letter::DeadLetter;
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::hash_chain::{
    ChainReport, ChainSigner, ChainVerifier, EventHash, LinkFormat, StoredEvent,
};
use crate::metadata::headers_json;
use crate::position::LogPosition;
use crate::snapshot::{RetentionPolicy, Snapshot};
use crate::stream::StreamId;

const BACKEND: &str = "memory";

/// An event store held in memory. Cloning it gives another handle to the same
/// events.
///
/// Appends are serialised, so the log is in commit order and every read sees a
/// consistent state.
///
/// ```
/// use annals::store::{EventStore, InMemoryEventStore};
///
/// let store = InMemoryEventStore::new();
/// assert_eq!(store.backend(), "memory");
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryEventStore {
    log: Arc<RwLock<MemoryLog>>,
    appended: Arc<super::AppendSignal>,
    /// The data subjects' keys ([`crate::pii::SubjectKeyStore`]).
    subject_keys: Arc<std::sync::Mutex<crate::pii::MemorySubjectKeys>>,
    /// Readers' checkpoints and leases.
    checkpoints: crate::checkpoint::MemoryCheckpoints,
}

#[derive(Debug, Default)]
struct MemoryLog {
    /// Every event in log order; `events[i]` has sequence `i + 1`.
    events: Vec<RecordedEvent>,
    /// The hash chain link of each event, `links[i]` for `events[i]`.
    links: Vec<EventHash>,
    /// Indexes into `events` per stream, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Every stored event id: ids are unique, as on the SQL backends.
    event_ids: HashSet<Uuid>,
    /// Snapshots per stream, by version.
    snapshots: HashMap<StreamId, BTreeMap<u64, Snapshot>>,
    /// Dead letters, oldest first.
    dead_letters: Vec<DeadLetter>,
}

impl MemoryLog {
    fn version_of(&self, stream: &StreamId) -> u64 {
        self.streams
            .get(stream)
            .map_or(0, |indexes| indexes.len() as u64)
    }

    fn stream_events(&self, stream: &StreamId) -> impl DoubleEndedIterator<Item = &RecordedEvent> {
        self.streams
            .get(stream)
            .into_iter()
            .flatten()
            .map(|&index| &self.events[index])
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryEventStore::default()
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, MemoryLog>> {
        self.log.read().map_err(|_| poisoned("read"))
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, MemoryLog>> {
        self.log.write().map_err(|_| poisoned("append"))
    }

    /// The data subjects' keys, for [`crate::pii::SubjectKeyStore`].
    pub(crate) fn subject_keys(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, crate::pii::MemorySubjectKeys>> {
        self.subject_keys
            .lock()
            .map_err(|_| poisoned("subject keys"))
    }
}

/// The columns of a held event that its hash covers.
fn stored<'a>(event: &'a RecordedEvent, headers: &'a str) -> StoredEvent<'a> {
    let metadata = &event.metadata;
    StoredEvent {
        event_id: event.event_id,
        stream_id: event.stream_id.as_str(),
        version: event.version,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        payload: event.payload.as_json(),
        tenant_id: metadata.tenant_id.as_deref(),
        correlation_id: metadata.correlation_id,
        causation_id: metadata.causation_id,
        actor: metadata.actor.as_deref(),
        trace_context: metadata.trace_context.as_deref(),
        headers,
        recorded_at_micros: event.recorded_at.timestamp_micros(),
        position: event.position.sequence,
        commit_id: event.position.commit,
    }
}

impl MemoryLog {
    /// Recomputes the links of the given events (indexes into `events`, each
    /// stream in version order).
    fn verify(&self, indexes: impl Iterator<Item = usize>) -> ChainReport {
        let mut verifier = ChainVerifier::new(None);
        for index in indexes {
            let event = &self.events[index];
            let headers = headers_json(&event.metadata.headers);
            verifier.check(
                event.position.sequence,
                &stored(event, &headers),
                Some(self.links[index]),
                LinkFormat::Unkeyed,
            );
        }
        verifier.finish()
    }
}

fn poisoned(operation: &'static str) -> Error {
    Error::Backend {
        backend: BACKEND,
        operation,
        source: "a thread panicked while holding the store's lock".into(),
    }
}

impl InMemoryEventStore {
    /// The append itself (`append_batch` adds its metrics).
    async fn write_batch(&self, batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        validate_batch(&batch)?;
        let mut log = self.write()?;

        // Check every expectation before touching anything: all or nothing.
        let mut currents = Vec::with_capacity(batch.len());
        for append in &batch {
            let current = log.version_of(&append.stream_id);
            if !append.expected.accepts(current) {
                return Err(Error::VersionConflict {
                    stream: append.stream_id.to_string(),
                    expected: append.expected,
                    actual: current,
                });
            }
            let head = log
                .streams
                .get(&append.stream_id)
                .and_then(|indexes| indexes.last())
                .map(|&last| log.events[last].event_id);
            append.check_head(current, head)?;
            next_version(&append.stream_id, current, append.events.len())?;
            currents.push(current);
        }
        let mut new_ids = HashSet::new();
        for event in batch.iter().flat_map(|append| &append.events) {
            if log.event_ids.contains(&event.event_id) || !new_ids.insert(event.event_id) {
                return Err(Error::invalid(
                    "event id",
                    format!(
                        "an event with id {} is already stored; event ids must be unique",
                        event.event_id
                    ),
                ));
            }
        }
        log.event_ids.extend(new_ids);

        let recorded_at = Utc::now().trunc_subsecs(6);
        let commit = log.events.len() as u64 + 1;
        let mut results = Vec::with_capacity(batch.len());
        for (append, current) in batch.into_iter().zip(currents) {
            let mut version = current;
            let mut positions = Vec::with_capacity(append.events.len());
            for event in append.events {
                version += 1;
                let index = log.events.len();
                let recorded = RecordedEvent {
                    event_id: event.event_id,
                    stream_id: append.stream_id.clone(),
                    version,
                    position: LogPosition::new(commit, index as u64 + 1),
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    payload: event.payload,
                    metadata: event.metadata,
                    recorded_at,
                };
                let previous = log
                    .streams
                    .get(&append.stream_id)
                    .and_then(|indexes| indexes.last())
                    .map_or(EventHash::GENESIS, |&last| log.links[last]);
                let headers = headers_json(&recorded.metadata.headers);
                log.links
                    .push(ChainSigner::new(None).link(&previous, &stored(&recorded, &headers)));
                log.events.push(recorded);
                log.streams
                    .entry(append.stream_id.clone())
                    .or_default()
                    .push(index);
                positions.push(LogPosition::new(commit, index as u64 + 1));
            }
            results.push(AppendResult {
                first_version: current + 1,
                last_version: version,
                position: LogPosition::new(commit, log.events.len() as u64),
                positions,
                recorded_at,
            });
        }
        drop(log);
        self.appended.signal();
        Ok(results)
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(name = "annals.store.append", skip_all, fields(backend = BACKEND, streams = batch.len()))]
    async fn append_batch(&self, batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        crate::telemetry::measured_append(BACKEND, batch, |batch| self.write_batch(batch)).await
    }

    async fn watch_log(&self) -> super::LogWatch {
        self.appended.watch()
    }

    #[tracing::instrument(name = "annals.store.stream_version", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        Ok(self.read()?.version_of(stream))
    }

    #[tracing::instrument(name = "annals.store.read_stream", skip_all, fields(backend = BACKEND, stream = %stream, from_version))]
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let log = self.read()?;
        Ok(log
            .stream_events(stream)
            .filter(|event| event.version >= from_version)
            .take(max_count)
            .cloned()
            .collect())
    }

    #[tracing::instrument(name = "annals.store.read_stream_backward", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        before_version: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let log = self.read()?;
        Ok(log
            .stream_events(stream)
            .rev()
            .filter(|event| before_version.is_none_or(|before| event.version < before))
            .take(max_count)
            .cloned()
            .collect())
    }

    #[tracing::instrument(name = "annals.store.read_all", skip_all, fields(backend = BACKEND, after = %after))]
    async fn read_all(&self, after: LogPosition, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let log = self.read()?;
        // Sequences are dense and in commit order here, so the sequence alone
        // locates the position.
        let start = usize::try_from(after.sequence)
            .unwrap_or(usize::MAX)
            .min(log.events.len());
        Ok(log.events[start..]
            .iter()
            .take(max_count)
            .cloned()
            .collect())
    }

    #[tracing::instrument(name = "annals.store.query", skip_all, fields(backend = BACKEND))]
    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        let log = self.read()?;
        let start = usize::try_from(query.after_sequence)
            .unwrap_or(usize::MAX)
            .min(log.events.len());
        let events = log.events[start..]
            .iter()
            .filter(|event| query.matches(event))
            .take(query.limit.saturating_add(1))
            .cloned()
            .collect();
        Ok(QueryPage::from_overfetch(events, query.limit))
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let log = self.read()?;
        Ok(log
            .events
            .iter()
            .filter(|event| query.matches(event))
            .count() as u64)
    }

    #[tracing::instrument(name = "annals.store.verify_stream", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn verify_stream(&self, stream: &StreamId) -> Result<ChainReport> {
        let log = self.read()?;
        let indexes = log.streams.get(stream).into_iter().flatten().copied();
        Ok(log.verify(indexes))
    }

    #[tracing::instrument(name = "annals.store.verify_log", skip_all, fields(backend = BACKEND))]
    async fn verify_log(&self) -> Result<ChainReport> {
        let log = self.read()?;
        Ok(log.verify(0..log.events.len()))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let mut log = self.write()?;
        log.snapshots
            .entry(snapshot.stream_id.clone())
            .or_default()
            .insert(snapshot.version, snapshot);
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>> {
        let log = self.read()?;
        Ok(log.snapshots.get(stream).and_then(|by_version| {
            by_version
                .range(..=max_version.unwrap_or(u64::MAX))
                .next_back()
                .map(|(_, snapshot)| snapshot.clone())
        }))
    }

    async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64> {
        let mut log = self.write()?;
        Ok(log
            .snapshots
            .remove(stream)
            .map_or(0, |by_version| by_version.len() as u64))
    }

    async fn prune_snapshots(&self, policy: &RetentionPolicy) -> Result<u64> {
        let cutoff = policy.cutoff();
        let mut log = self.write()?;
        let mut deleted = 0;
        for by_version in log.snapshots.values_mut() {
            let keep_from = policy
                .keep_last
                .map_or(0, |keep| by_version.len().saturating_sub(keep));
            let doomed: Vec<u64> = by_version
                .values()
                .enumerate()
                .filter(|(rank, snapshot)| {
                    *rank < keep_from || cutoff.is_some_and(|at| snapshot.taken_at < at)
                })
                .map(|(_, snapshot)| snapshot.version)
                .collect();
            for version in doomed {
                by_version.remove(&version);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn checkpoints(&self) -> Arc<dyn crate::checkpoint::CheckpointStore> {
        Arc::new(self.checkpoints.clone())
    }

    async fn save_dead_letter(&self, letter: DeadLetter) -> Result<()> {
        self.write()?.dead_letters.push(letter);
        Ok(())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .read()?
            .dead_letters
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn delete_dead_letter(&self, id: Uuid) -> Result<bool> {
        let mut log = self.write()?;
        let before = log.dead_letters.len();
        log.dead_letters.retain(|letter| letter.id != id);
        Ok(log.dead_letters.len() < before)
    }
}
