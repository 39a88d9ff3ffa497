//! The in-memory event store: a product backend for tests, tools and
//! short-lived processes, held entirely in the process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use super::append::{next_version, validate_batch};
use super::condition::criteria_tenant;
use super::{
    AppendCondition, AppendResult, EventCriteria, EventQuery, EventStore, QueryPage, StreamAppend,
    StreamInfo, StreamQuery,
};
use crate::aggregate::snapshot::{Snapshot, SnapshotStore};
use crate::error::{Error, Result};
use crate::event::envelope::RecordedEvent;
use crate::event::metadata::headers_json;
use crate::hash_chain::{
    ChainReport, ChainSigner, ChainVerifier, EventHash, LinkFormat, StoredEvent,
};
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;
use crate::subscription::dead_letter::{DeadLetter, DeadLetterStore};

mod dead_letters;
mod snapshots;

use dead_letters::MemoryDeadLetters;
use snapshots::MemorySnapshots;

const BACKEND: &str = "memory";

/// An event store held in memory. Cloning it gives another handle to the same
/// events.
///
/// Appends are serialised, so the log is in commit order and every read sees a
/// consistent state.
///
/// [`for_tenant`](Self::for_tenant) gives a handle scoped to one tenant, with
/// the same identities as PostgreSQL's: a stream, snapshot, checkpoint and
/// dead letter belongs to its tenant. The scoping is this process's code;
/// there is no row-level security to fall back on.
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
    /// Readers' checkpoints and leases, this handle's tenant's.
    checkpoints: crate::checkpoint::MemoryCheckpoints,
    /// The tenant this handle is scoped to (`None`: every tenant's events,
    /// and `''`'s snapshots, checkpoints and dead letters).
    tenant: Option<Arc<str>>,
}

/// A stream's identity: its tenant (`""`: none) and its id.
type StreamKey = (String, StreamId);

#[derive(Debug, Default)]
struct MemoryLog {
    /// Every event in log order; `events[i]` has sequence `i + 1`.
    events: Vec<RecordedEvent>,
    /// The hash chain link of each event, `links[i]` for `events[i]`.
    links: Vec<EventHash>,
    /// Indexes into `events` per stream, in version order.
    streams: HashMap<StreamKey, Vec<usize>>,
    /// The tenants holding each stream id.
    holders: HashMap<StreamId, std::collections::BTreeSet<String>>,
    /// Every stored event id: ids are unique, as on the SQL backends.
    event_ids: HashSet<Uuid>,
    /// Indexes into `events` per (tenant, tag), in log order.
    tagged: HashMap<(String, String), Vec<usize>>,
    /// Snapshots per (saving handle's tenant, stream), by version.
    snapshots: HashMap<StreamKey, BTreeMap<u64, Snapshot>>,
    /// Dead letters with the saving handle's tenant, oldest first.
    dead_letters: Vec<(String, DeadLetter)>,
}

impl MemoryLog {
    /// Indexes into `events` of `tenant`'s events after `after` that match
    /// `criterion`, in log order (from the tag index of its first tag).
    fn matching<'a>(
        &'a self,
        tenant: &str,
        criterion: &'a crate::store::Criterion,
        after: LogPosition,
    ) -> impl Iterator<Item = usize> + 'a {
        let indexes = self
            .tagged
            .get(&(tenant.to_owned(), criterion.lock_tag().to_owned()))
            .map_or(&[][..], Vec::as_slice);
        // Sequences are dense and in commit order here: `events[i]` has
        // sequence `i + 1`.
        let start = indexes.partition_point(|&index| (index as u64) < after.sequence);
        indexes[start..].iter().copied().filter(move |&index| {
            let event = &self.events[index];
            criterion.matches(&event.event_type, &event.tags)
        })
    }

    /// The first event in `tenant` after the condition's position that
    /// breaks it, with the criterion it matches.
    fn breaking_event<'c>(
        &self,
        tenant: &str,
        condition: &'c AppendCondition,
    ) -> Option<(&'c crate::store::Criterion, LogPosition)> {
        let after = condition.after_or_start();
        condition
            .fail_if_events_match
            .criteria
            .iter()
            .filter_map(|criterion| {
                let first = self.matching(tenant, criterion, after).next()?;
                Some((criterion, self.events[first].position))
            })
            .min_by_key(|(_, position)| *position)
    }

    fn version_of(&self, stream: &StreamKey) -> u64 {
        self.streams
            .get(stream)
            .map_or(0, |indexes| indexes.len() as u64)
    }

    fn stream_events(&self, stream: &StreamKey) -> impl DoubleEndedIterator<Item = &RecordedEvent> {
        self.streams
            .get(stream)
            .into_iter()
            .flatten()
            .map(|&index| &self.events[index])
    }

    /// The stream a handle scoped to `scope` means by `stream`: its
    /// tenant's, or for an unscoped handle the one tenant holding the id
    /// (refused when several do).
    fn resolve(&self, scope: Option<&str>, stream: &StreamId) -> Result<StreamKey> {
        if let Some(tenant) = scope {
            return Ok((tenant.to_owned(), stream.clone()));
        }
        let holders = self.holders.get(stream);
        super::tenancy::check_one_holder(stream, holders.map_or(0, |h| h.len()))?;
        let tenant = holders
            .and_then(|holders| holders.iter().next())
            .cloned()
            .unwrap_or_default();
        Ok((tenant, stream.clone()))
    }
}

/// Whether `event` is visible to a handle scoped to `scope`.
fn visible(scope: Option<&str>, event: &RecordedEvent) -> bool {
    scope.is_none_or(|tenant| event.metadata.tenant_id.as_deref() == Some(tenant))
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryEventStore::default()
    }

    /// A handle on the same events scoped to `tenant`: it reads, queries and
    /// replays only the tenant's events, snapshots, checkpoints and dead
    /// letters, and stamps the tenant on the events it appends (refusing
    /// events that name another tenant). Stream ids belong to their tenant,
    /// as on PostgreSQL: `acme`'s `user-1` and `globex`'s `user-1` are two
    /// streams. The unscoped store addresses a stream by its id alone, and
    /// refuses an id several tenants hold ([`Error::InvalidInput`], field
    /// `stream id`). The scoping is this code's, not a database's.
    ///
    /// ```
    /// use annals::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let store = InMemoryEventStore::new();
    /// let acme = store.for_tenant("acme")?;
    /// let globex = store.for_tenant("globex")?;
    /// let user = StreamId::new("user-1")?;
    /// let registered = || NewEvent::json("iam.user.registered", &serde_json::json!({}));
    /// acme.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// assert!(globex.read_stream(&user, 1, 100).await?.is_empty());
    /// globex.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// assert!(matches!(store.read_stream(&user, 1, 100).await, Err(Error::InvalidInput { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn for_tenant(&self, tenant: impl Into<String>) -> Result<InMemoryEventStore> {
        let tenant = tenant.into();
        super::tenancy::validate_tenant_id(&tenant)?;
        Ok(InMemoryEventStore {
            log: Arc::clone(&self.log),
            appended: Arc::clone(&self.appended),
            subject_keys: Arc::clone(&self.subject_keys),
            checkpoints: self.checkpoints.for_tenant(&tenant),
            tenant: Some(Arc::from(tenant)),
        })
    }

    fn scope(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The tenant this handle keeps its own rows under (`""` unscoped).
    fn own_tenant(&self) -> String {
        self.tenant.as_deref().unwrap_or("").to_owned()
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
    async fn write_batch(&self, mut batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        validate_batch(&batch)?;
        // Each stream's tenant: the handle's (stamped on its events), or
        // the one its events name.
        let mut keys = Vec::with_capacity(batch.len());
        for append in &mut batch {
            let tenant = match self.scope() {
                Some(tenant) => {
                    super::tenancy::stamp_tenant(tenant, &mut append.events)?;
                    tenant.to_owned()
                }
                None => super::tenancy::stream_tenant(&append.stream_id, &append.events)?,
            };
            keys.push((tenant, append.stream_id.clone()));
        }
        let mut log = self.write()?;

        // Check every expectation before touching anything: all or nothing.
        let mut currents = Vec::with_capacity(batch.len());
        for (append, key) in batch.iter().zip(&keys) {
            let current = log.version_of(key);
            if !append.expected.accepts(current) {
                return Err(Error::VersionConflict {
                    stream: append.stream_id.to_string(),
                    expected: append.expected,
                    actual: current,
                });
            }
            let head = log
                .streams
                .get(key)
                .and_then(|indexes| indexes.last())
                .map(|&last| log.events[last].event_id);
            append.check_head(current, head)?;
            next_version(&append.stream_id, current, append.events.len())?;
            if let Some(condition) = &append.condition
                && let Some((criterion, found)) = log.breaking_event(&key.0, condition)
            {
                return Err(condition.failed(append.stream_id.as_str(), criterion, found));
            }
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
        for ((append, current), key) in batch.into_iter().zip(currents).zip(keys) {
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
                    tags: event.tags,
                };
                let previous = log
                    .streams
                    .get(&key)
                    .and_then(|indexes| indexes.last())
                    .map_or(EventHash::GENESIS, |&last| log.links[last]);
                let headers = headers_json(&recorded.metadata.headers);
                log.links
                    .push(ChainSigner::new(None).link(&previous, &stored(&recorded, &headers)));
                for tag in &recorded.tags {
                    log.tagged
                        .entry((key.0.clone(), tag.clone()))
                        .or_default()
                        .push(index);
                }
                log.events.push(recorded);
                log.streams.entry(key.clone()).or_default().push(index);
                log.holders
                    .entry(key.1.clone())
                    .or_default()
                    .insert(key.0.clone());
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
        crate::observability::telemetry::measured_append(BACKEND, batch, |batch| {
            self.write_batch(batch)
        })
        .await
    }

    async fn watch_log(&self) -> super::LogWatch {
        self.appended.watch()
    }

    #[tracing::instrument(name = "annals.store.stream_version", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let log = self.read()?;
        let key = log.resolve(self.scope(), stream)?;
        Ok(log.version_of(&key))
    }

    fn tenant(&self) -> Option<&str> {
        self.scope()
    }

    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamInfo>> {
        let log = self.read()?;
        let mut keys: Vec<&StreamKey> = log
            .streams
            .keys()
            .filter(|(tenant, stream)| {
                self.scope().is_none_or(|scope| scope == tenant)
                    && query.wants(stream.as_str(), tenant)
            })
            .collect();
        keys.sort_by(|a, b| (a.1.as_str(), &a.0).cmp(&(b.1.as_str(), &b.0)));
        Ok(keys
            .into_iter()
            .take(query.limit)
            .filter_map(|key| {
                let mut events = log.stream_events(key);
                let first = events.next()?;
                let last = events.next_back().unwrap_or(first);
                Some(StreamInfo {
                    stream_id: key.1.clone(),
                    tenant_id: Some(key.0.clone()).filter(|tenant| !tenant.is_empty()),
                    version: last.version,
                    created_at: first.recorded_at,
                    updated_at: last.recorded_at,
                })
            })
            .collect())
    }

    #[tracing::instrument(name = "annals.store.read_stream", skip_all, fields(backend = BACKEND, stream = %stream, from_version))]
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let log = self.read()?;
        let key = log.resolve(self.scope(), stream)?;
        Ok(log
            .stream_events(&key)
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
        let key = log.resolve(self.scope(), stream)?;
        Ok(log
            .stream_events(&key)
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
            .filter(|event| visible(self.scope(), event))
            .take(max_count)
            .cloned()
            .collect())
    }

    #[tracing::instrument(name = "annals.store.read_log", skip_all, fields(backend = BACKEND, after = %after))]
    async fn read_log(
        &self,
        after: LogPosition,
        max_count: usize,
        filter: &super::LogFilter,
    ) -> Result<super::LogPage> {
        let log = self.read()?;
        let start = usize::try_from(after.sequence)
            .unwrap_or(usize::MAX)
            .min(log.events.len());
        let visible_events = || {
            log.events[start..]
                .iter()
                .filter(|event| visible(self.scope(), event))
        };
        let head = visible_events()
            .next_back()
            .map_or(after, |event| event.position);
        let mut events: Vec<RecordedEvent> = visible_events()
            .filter(|event| filter.wants(&event.event_type))
            .take(max_count)
            .cloned()
            .collect();
        filter.strip_metadata(&mut events);
        Ok(super::LogPage::new(events, after, max_count, head))
    }

    #[tracing::instrument(name = "annals.store.query", skip_all, fields(backend = BACKEND))]
    async fn query(&self, query: &EventQuery) -> Result<QueryPage> {
        let log = self.read()?;
        let matching = |event: &&RecordedEvent| {
            visible(self.scope(), event) && query.is_after_cursor(event) && query.matches(event)
        };
        let wanted = query.limit.saturating_add(1);
        let events = if query.in_recorded_order() {
            let mut events: Vec<&RecordedEvent> = log.events.iter().filter(matching).collect();
            events.sort_by_key(|event| (event.recorded_at, event.position.sequence));
            events.into_iter().take(wanted).cloned().collect()
        } else {
            // In log order, events before the cursor's sequence are skipped
            // by index.
            let start = usize::try_from(query.after.sequence)
                .unwrap_or(usize::MAX)
                .min(log.events.len());
            log.events[start..]
                .iter()
                .filter(matching)
                .take(wanted)
                .cloned()
                .collect()
        };
        Ok(QueryPage::from_overfetch(events, query))
    }

    async fn read_matching(
        &self,
        tenant: Option<&str>,
        criteria: &EventCriteria,
        after: Option<LogPosition>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        criteria.validate()?;
        let tenant = criteria_tenant(self.scope(), tenant)?;
        let after = after.unwrap_or(LogPosition::START);
        let log = self.read()?;
        let mut indexes: Vec<usize> = criteria
            .criteria
            .iter()
            .flat_map(|criterion| log.matching(&tenant, criterion, after))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        Ok(indexes
            .into_iter()
            .take(max_count)
            .map(|index| log.events[index].clone())
            .collect())
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let log = self.read()?;
        Ok(log
            .events
            .iter()
            .filter(|event| {
                visible(self.scope(), event) && query.is_after_cursor(event) && query.matches(event)
            })
            .count() as u64)
    }

    #[tracing::instrument(name = "annals.store.verify_stream", skip_all, fields(backend = BACKEND, stream = %stream))]
    async fn verify_stream(&self, stream: &StreamId) -> Result<ChainReport> {
        let log = self.read()?;
        let key = log.resolve(self.scope(), stream)?;
        let indexes = log.streams.get(&key).into_iter().flatten().copied();
        Ok(log.verify(indexes))
    }

    #[tracing::instrument(name = "annals.store.verify_log", skip_all, fields(backend = BACKEND))]
    async fn verify_log(&self) -> Result<ChainReport> {
        let log = self.read()?;
        let scope = self.scope();
        Ok(log.verify((0..log.events.len()).filter(|&index| visible(scope, &log.events[index]))))
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(MemorySnapshots(self.clone()))
    }

    fn checkpoints(&self) -> Arc<dyn crate::checkpoint::CheckpointStore> {
        Arc::new(self.checkpoints.clone())
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::new(MemoryDeadLetters(self.clone()))
    }
}
