//! The event store: one trait, three backends.
//!
//! | backend | type | feature | use it for |
//! | --- | --- | --- | --- |
//! | memory | [`InMemoryEventStore`] | always | tests, tools, short-lived processes |
//! | SQLite | [`SqliteEventStore`] | `sqlite` (default) | the embedded default: a file on disk |
//! | PostgreSQL | [`PostgresEventStore`] | `postgres` | production |
//!
//! All three pass the same conformance suite (`tests/` in the repository):
//! atomic appends with optimistic concurrency, multi-stream transactions,
//! stream reads both ways, a gap-free global log, and queries.

pub(crate) mod append;
pub mod condition;
mod connect;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod group_commit;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod import;
mod log_filter;
mod log_watch;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrations;
pub mod position;
#[cfg(feature = "postgres")]
mod postgres;
mod query;
mod read_all;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod row;
#[cfg(feature = "sqlite")]
mod sqlite;
pub mod stream;
mod stream_listing;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod table_names;
pub(crate) mod tenancy;
#[cfg(feature = "postgres")]
mod tenant_roles;
#[cfg(feature = "postgres")]
pub(crate) mod tenant_session;

use async_trait::async_trait;

pub use append::{
    AppendResult, MAX_EVENTS_PER_APPEND, MAX_METADATA_BYTES, MAX_PAYLOAD_BYTES, StreamAppend,
};
pub use condition::{AppendCondition, Criterion, EventCriteria};
pub use connect::{connect, redact_url};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use group_commit::{GroupCommitOptions, GroupCommitStatus};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use import::ImportReport;
pub use log_filter::{LogFilter, LogPage};
pub(crate) use log_watch::AppendSignal;
pub use log_watch::LogWatch;
pub use memory::InMemoryEventStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use migrations::{AppliedMigration, PendingMigration, SchemaStatus};
pub use position::LogPosition;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresEventStore, PostgresStoreBuilder, RestampReport};
pub use query::{DEFAULT_QUERY_LIMIT, EventQuery, QueryCursor, QueryPage};
pub use read_all::EventStoreExt;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteEventStore, SqliteStoreBuilder};
pub use stream::{ExpectedVersion, StreamId};
pub use stream_listing::{DEFAULT_STREAM_PAGE, StreamInfo, StreamQuery};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use table_names::DEFAULT_TABLE_PREFIX;

use std::sync::Arc;

use crate::aggregate::snapshot::SnapshotStore;
use crate::checkpoint::CheckpointStore;
use crate::error::Result;
use crate::event::envelope::{NewEvent, RecordedEvent};
use crate::hash_chain::ChainReport;
use crate::subscription::dead_letter::DeadLetterStore;

/// Storage of event streams and the global log.
///
/// Events are immutable: there is no update or delete. Every method is safe
/// to call concurrently from many tasks and processes.
///
/// The trait holds the events (append, read, query, verify) and hands out
/// the store's other tables through three accessors:
/// [`snapshots`](Self::snapshots), [`checkpoints`](Self::checkpoints) and
/// [`dead_letters`](Self::dead_letters). Every method but
/// [`append`](Self::append) (a one-stream [`append_batch`](Self::append_batch))
/// is required, so a wrapper around a store (a cache, the personal-data
/// store) cannot forget to forward one: it forwards what it does not change,
/// and the compiler lists what it missed. Conveniences built on these
/// methods are in [`EventStoreExt`].
///
/// ```
/// use annals::prelude::*;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::new("user-1")?;
/// let registered = NewEvent::json("iam.user.registered", &json!({ "email": "ada@example.test" }))?;
/// let result = store.append(&stream, ExpectedVersion::NoStream, vec![registered]).await?;
/// assert_eq!(result.last_version, 1);
///
/// // A second writer that also believed the stream was new loses.
/// let late = NewEvent::json("iam.user.registered", &json!({ "email": "bob@example.test" }))?;
/// let conflict = store.append(&stream, ExpectedVersion::NoStream, vec![late]).await;
/// assert!(matches!(conflict, Err(Error::VersionConflict { actual: 1, .. })));
///
/// let events = store.read_stream(&stream, 1, 100).await?;
/// assert_eq!(events[0].payload.to_value()["email"], "ada@example.test");
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Short backend name for logs and errors: `memory`, `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// The tenant this handle is confined to, if any (a tenant-scoped
    /// PostgreSQL handle from
    /// [`PostgresEventStore::for_tenant`](crate::store::PostgresEventStore::for_tenant)).
    /// Caches in front of the store put it in their keys.
    fn tenant(&self) -> Option<&str>;

    /// Appends events to several streams in one transaction, each stream with
    /// its own expected version. Either every stream's events are written or
    /// none are: one failed expectation fails the whole batch with
    /// [`Error::VersionConflict`](crate::Error::VersionConflict) naming that
    /// stream. Results come back in the order of `batch`.
    async fn append_batch(&self, batch: Vec<StreamAppend>) -> Result<Vec<AppendResult>>;

    /// Appends events to one stream atomically if it is at `expected`.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let mut results = self
            .append_batch(vec![StreamAppend::new(stream.clone(), expected, events)])
            .await?;
        results.pop().ok_or_else(|| crate::Error::Backend {
            backend: self.backend(),
            operation: "append",
            source: "the backend returned no result for a one-stream append".into(),
        })
    }

    /// The stream's current version: the version of its last event, 0 if it
    /// has none.
    async fn stream_version(&self, stream: &StreamId) -> Result<u64>;

    /// Up to `query.limit` of the streams this handle sees (a tenant
    /// handle its tenant's, the unscoped store every tenant's), ordered by
    /// stream id, then tenant, with their versions and the times of their
    /// first and last events. Page on with [`StreamQuery::after`].
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamInfo>>;

    /// Up to `max_count` events of a stream with version `>= from_version`,
    /// oldest first.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Up to `max_count` events of a stream with version `< before_version`
    /// (all versions when `None`), newest first: the last N events.
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        before_version: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Up to `max_count` events of the global log ordered after `after`, in
    /// log order. Pass the position of the last event handled to resume.
    ///
    /// Gap-safe: an event is returned only once every event ordered before
    /// it is committed, so a reader never skips an event that a concurrent
    /// transaction commits late.
    async fn read_all(&self, after: LogPosition, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// [`read_all`](Self::read_all) narrowed by `filter`: up to `max_count`
    /// of the events after `after` that the filter wants, in log order,
    /// filtered by the database (a reader of one type in a hundred
    /// transfers and decodes only those), and how far the log was read
    /// ([`LogPage::read_to`], where the next read starts, even when no
    /// event was wanted) and where its head is ([`LogPage::head`]).
    /// Gap-safe like `read_all`.
    async fn read_log(
        &self,
        after: LogPosition,
        max_count: usize,
        filter: &LogFilter,
    ) -> Result<LogPage>;

    /// Events matching a query (type, time range, tenant, correlation id,
    /// header), ordered by global sequence, one page at a time.
    async fn query(&self, query: &EventQuery) -> Result<QueryPage>;

    /// How many events match a query's conditions (its paging is ignored).
    async fn count(&self, query: &EventQuery) -> Result<u64>;

    /// Up to `max_count` events of `tenant` (`None`: events without a
    /// tenant; a tenant handle reads its own) matching any of `criteria`,
    /// ordered after `after` in log order: what a decision reads before it
    /// appends with an [`AppendCondition`] after the last event returned.
    ///
    /// Gap-safe, like [`read_all`](Self::read_all): every event ordered
    /// before the last one returned is committed and was returned if it
    /// matched, so a condition after that position misses nothing. Every
    /// criterion names at least one tag.
    async fn read_matching(
        &self,
        tenant: Option<&str>,
        criteria: &EventCriteria,
        after: Option<LogPosition>,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Recomputes the hash chain of one stream from its stored events and
    /// reports the first broken link (see [`hash_chain`](crate::hash_chain)).
    /// A stream with no events is intact.
    async fn verify_stream(&self, stream: &StreamId) -> Result<ChainReport>;

    /// Recomputes the hash chain of every stream and reports the first
    /// broken link in log order. Reads the whole log: an audit, not a hot
    /// path.
    async fn verify_log(&self) -> Result<ChainReport>;

    /// Where this store keeps its aggregates' snapshots (in its schema,
    /// table prefix and, for a tenant handle, tenant).
    fn snapshots(&self) -> Arc<dyn SnapshotStore>;

    /// Where this store's readers keep their checkpoints and leases.
    fn checkpoints(&self) -> Arc<dyn CheckpointStore>;

    /// Where this store keeps the events its handlers gave up on.
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore>;

    /// A watch over this store's appends, for a reader of the log to wait
    /// on when caught up instead of sleeping, without losing an append that
    /// lands between its last read and its wait (see [`LogWatch`]).
    /// PostgreSQL signals every process's appends (`LISTEN`/`NOTIFY`), the
    /// in-process stores their own; a store that cannot signal returns
    /// [`LogWatch::polling`], and its readers poll.
    async fn watch_log(&self) -> LogWatch;
}

impl std::fmt::Debug for dyn EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("backend", &self.backend())
            .finish()
    }
}
