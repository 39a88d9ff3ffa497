//! The one error type of the runtime, with distinct variants for a version
//! conflict, bad stored data, bad input and infrastructure failure.

use crate::store::stream::ExpectedVersion;

/// A boxed error from a lower layer (a database driver, an I/O call).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Annals.
///
/// Callers match on the variant to decide what to do: retry a
/// [`VersionConflict`](Error::VersionConflict) on fresh state, report
/// [`InvalidInput`](Error::InvalidInput) to whoever sent it, alert on
/// [`CorruptEvent`](Error::CorruptEvent), and back off on
/// [`Backend`](Error::Backend).
///
/// ```
/// use annals::{Error, ExpectedVersion};
///
/// fn describe(error: &Error) -> &'static str {
///     match error {
///         Error::VersionConflict { .. } => "someone else wrote first: reload and retry",
///         Error::InvalidInput { .. } => "the request was malformed",
///         Error::Backend { .. } => "the database is unwell",
///         _ => "something else",
///     }
/// }
/// let conflict = Error::VersionConflict {
///     stream: "user-1".into(),
///     expected: ExpectedVersion::Exact(3),
///     actual: 4,
/// };
/// assert_eq!(describe(&conflict), "someone else wrote first: reload and retry");
/// assert_eq!(
///     conflict.to_string(),
///     "version conflict on stream `user-1`: expected version 3, found version 4"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream was not at the version the append expected. Nothing of the
    /// append (or of the batch it belonged to) was written.
    #[error(
        "version conflict on stream `{stream}`: expected {expected}, found {}",
        describe_version(*actual)
    )]
    VersionConflict {
        /// The stream whose expectation failed.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked (0: no stream).
        actual: u64,
    },

    /// The stream's newest event is not the one the append expected
    /// ([`StreamAppend::with_expected_head`](crate::store::StreamAppend::with_expected_head)):
    /// its history is another one than the caller decided on, even if its
    /// version matches. Nothing of the append was written.
    #[error(
        "stream `{stream}` at version {version} ends with event {}, not {expected_event}: its history is not the one expected",
        found_event.map_or_else(|| "none".to_owned(), |id| id.to_string())
    )]
    HistoryMismatch {
        /// The stream.
        stream: String,
        /// Its version when the append was checked.
        version: u64,
        /// The newest event the caller expected.
        expected_event: uuid::Uuid,
        /// Its actual newest event (`None`: no stream).
        found_event: Option<uuid::Uuid>,
    },

    /// An append's condition did not hold: an event matching one of its
    /// criteria was recorded after the position the caller decided at.
    /// Nothing of the append was written; read again and decide again.
    #[error(
        "the append to stream `{stream}` was refused: an event {criterion} was recorded at {found}, after {}",
        after.map_or_else(|| "the start of the log".to_owned(), |position| position.to_string())
    )]
    AppendConditionFailed {
        /// The stream whose append carried the condition.
        stream: String,
        /// The criterion the event matched.
        criterion: String,
        /// The position the condition counted from.
        after: Option<crate::store::position::LogPosition>,
        /// The matching event's position (in the stream's tenant).
        found: crate::store::position::LogPosition,
    },

    /// A stored event could not be read back: its payload or metadata is not
    /// valid JSON, or a column holds a value out of range.
    #[error(
        "stored event {version} of stream `{stream}` (type `{event_type}`) is corrupt: {reason}"
    )]
    CorruptEvent {
        /// Stream of the corrupt event.
        stream: String,
        /// Version of the corrupt event in its stream.
        version: u64,
        /// Stored event type name.
        event_type: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A stored event has a type name the Rust event type being decoded does
    /// not know.
    #[error(
        "event {version} of stream `{stream}` has type `{event_type}`, which `{target}` does not know"
    )]
    UnknownEventType {
        /// Stream of the event.
        stream: String,
        /// Version of the event in its stream.
        version: u64,
        /// Stored event type name.
        event_type: String,
        /// The Rust type it was decoded into.
        target: &'static str,
    },

    /// A stored event has a known type but its payload does not fit the Rust
    /// type (or its schema version cannot be upcast).
    #[error(
        "cannot decode event {version} of stream `{stream}` (type `{event_type}`, schema version {schema_version}) as `{target}`: {reason}"
    )]
    Decode {
        /// Stream of the event.
        stream: String,
        /// Version of the event in its stream.
        version: u64,
        /// Stored event type name.
        event_type: String,
        /// Stored schema version.
        schema_version: u32,
        /// The Rust type it was decoded into.
        target: &'static str,
        /// Why decoding failed.
        reason: String,
    },

    /// The caller passed something Annals cannot accept. Nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which input was wrong (`stream id`, `event type`, `batch`, ...).
        field: &'static str,
        /// What is wrong with it, naming the offending value.
        reason: String,
    },

    /// The database schema is newer than this build of Annals understands.
    #[error(
        "the {backend} database is at schema version {found}, but this build of Annals only knows up to version {supported}; upgrade Annals"
    )]
    SchemaTooNew {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// The newest migration recorded in the database.
        found: i64,
        /// The newest migration this build embeds.
        supported: i64,
    },

    /// A projection's handler failed on an event.
    #[error(
        "projection `{projection}` failed on event {version} of stream `{stream}` (type `{event_type}`)"
    )]
    Projection {
        /// The projection's name.
        projection: &'static str,
        /// Stream of the event.
        stream: String,
        /// Version of the event in its stream.
        version: u64,
        /// The event's type name.
        event_type: String,
        /// What the handler returned.
        #[source]
        source: BoxError,
    },

    /// Two registered items claim the same identity (an event name and
    /// version, an aggregate, projection or handler name).
    #[error("{kind} `{name}` is registered twice: by `{first}` and by `{second}`")]
    DuplicateRegistration {
        /// `event`, `aggregate`, `projection` or `handler`.
        kind: &'static str,
        /// The contested name (with the version, for events).
        name: String,
        /// One claimant's Rust path.
        first: &'static str,
        /// The other claimant's Rust path.
        second: &'static str,
    },

    /// An append carried personal data (`#[pii]` fields) of a data subject
    /// that was forgotten: the subject's key is destroyed and is never
    /// recreated. Nothing of the append was written.
    #[error(
        "cannot append `{event_type}`: it carries personal data of data subject `{subject}`, who was forgotten"
    )]
    SubjectForgotten {
        /// The forgotten subject.
        subject: String,
        /// The event type that carried the data.
        event_type: String,
    },

    /// An encrypted personal-data field of a stored event does not decrypt
    /// under its subject's live key: the ciphertext, its event id, field or
    /// subject was altered (or the envelope is malformed).
    #[error(
        "personal data field `{field}` of event {version} of stream `{stream}` does not decrypt: {reason}"
    )]
    PiiField {
        /// Stream of the event.
        stream: String,
        /// Version of the event in its stream.
        version: u64,
        /// The field's JSON key.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A data subject's stored key does not unwrap with the configured master
    /// key: the master key is not the one the key was created under, or the
    /// stored key was altered.
    #[error(
        "the key of data subject `{subject}` does not unwrap with the configured master key (another master key, or an altered key row)"
    )]
    SubjectKey {
        /// The subject whose key failed.
        subject: String,
    },

    /// The hash chain does not verify, so an operation that would vouch for
    /// it (re-signing it with a key) refused and changed nothing.
    #[error("the hash chain is broken ({first_break}); nothing was re-signed")]
    ChainBroken {
        /// The first broken link in log order.
        first_break: Box<crate::hash_chain::ChainBreak>,
    },

    /// A reader's worker lost its lease: another worker took the reader over
    /// (the lease expired while this one was stalled, cut off or paused), so
    /// its checkpoint write, and the read-model batch or side effects
    /// committed with it, were refused. Nothing of it was stored; the worker
    /// stands by.
    #[error(
        "reader `{reader}` lost its lease: generation {generation} was taken over{}; nothing was written",
        current_generation.map(|g| format!(" (now generation {g})")).unwrap_or_default()
    )]
    LeaseLost {
        /// The reader (its checkpoint name).
        reader: String,
        /// The generation the refused write was made under.
        generation: u64,
        /// The row's generation now (`None`: the row is gone).
        current_generation: Option<u64>,
    },

    /// A reader's checkpoint is not where its worker left it: an operator
    /// reset or rewound it. The write was refused; the worker resumes from
    /// `found`.
    #[error(
        "the checkpoint of reader `{reader}` is at {found}, not {expected}: it was moved; nothing was written"
    )]
    CheckpointMoved {
        /// The reader (its checkpoint name).
        reader: String,
        /// Where the worker thought it was.
        expected: crate::store::position::LogPosition,
        /// Where it is.
        found: crate::store::position::LogPosition,
    },

    /// An operator paused the reader
    /// ([`CheckpointStore::set_paused`](crate::checkpoint::CheckpointStore::set_paused)):
    /// its checkpoint write was refused and nothing of the batch stored;
    /// its worker waits until it is resumed.
    #[error("reader `{reader}` is paused; nothing was written")]
    ReaderPaused {
        /// The reader (its checkpoint name).
        reader: String,
    },

    /// The read replica had not replayed what the primary had committed
    /// when [`wait_for_replica`](crate::store::PostgresEventStore::wait_for_replica)
    /// gave up: a read from it now could miss the caller's own writes.
    #[error(
        "the read replica is still {lag_bytes} bytes of WAL behind the primary after {waited:?}"
    )]
    ReplicaBehind {
        /// How long it waited.
        waited: std::time::Duration,
        /// How far the replica's replay was behind the primary's WAL at
        /// the last look.
        lag_bytes: u64,
    },

    /// The PostgreSQL log holds transaction ids this cluster has not handed
    /// out yet: it was restored from another cluster (`pg_dump` and
    /// `pg_restore`, or moved by logical replication). Readers would not
    /// see it, and new events would sort before it and before the saved
    /// checkpoints. Nothing was read or written. Re-stamp it once, as the
    /// tables' owner: `annals restamp`, or
    /// [`PostgresStoreBuilder::restamp_restored_log`](crate::store::PostgresStoreBuilder::restamp_restored_log).
    #[error(
        "the event log was restored from another PostgreSQL cluster: its newest transaction id is {stored}, \
         but this cluster's next is {next}, so readers would not see it and new events would sort before it; \
         re-stamp it once as the tables' owner with `annals restamp` (PostgresStoreBuilder::restamp_restored_log)"
    )]
    ForeignHistory {
        /// The newest transaction id stored in the log.
        stored: u64,
        /// The cluster's next transaction id.
        next: u64,
    },

    /// A background task (a subscription, a projection, a replay) ended
    /// while its handle was waiting for a status it never reached
    /// ([`TaskHandle::wait_until`](crate::task::TaskHandle::wait_until)).
    /// Its own error, if any, is in its last status and in what
    /// [`stop`](crate::task::TaskHandle::stop) returns.
    #[error("the {task} `{name}` has stopped")]
    TaskStopped {
        /// `subscription`, `projection` or `replay`.
        task: &'static str,
        /// Its name (a replay's id).
        name: String,
    },

    /// A background runner was started outside a Tokio runtime, so it never
    /// ran: start it from within one (`#[tokio::main]`, a runtime's
    /// `block_on`, or a task).
    #[error(
        "the {task} `{name}` was started outside a Tokio runtime and does not run; start it from within one"
    )]
    NoRuntime {
        /// `subscription`, `projection` or `replay`.
        task: &'static str,
        /// Its name (a replay's id).
        name: String,
    },

    /// A wait for a background task's status ran out of time; the task
    /// runs on.
    #[error("the {task} `{name}` did not reach the awaited status within {waited:?}")]
    WaitTimedOut {
        /// `subscription`, `projection` or `replay`.
        task: &'static str,
        /// Its name (a replay's id).
        name: String,
        /// How long the caller waited.
        waited: std::time::Duration,
    },

    /// A background task did not end normally: it panicked, or its runtime
    /// shut down under it.
    #[error("the {task} `{name}` failed")]
    TaskFailed {
        /// `subscription`, `projection`, `replay` (or `projection prefetch`,
        /// the read-ahead of a projection, or `personal-data reveal`, the
        /// threads that open a large page's sealed fields).
        task: &'static str,
        /// Its name (a replay's id).
        name: String,
        /// The join error (the panic's message).
        #[source]
        source: BoxError,
    },

    /// Configuration is missing or malformed (a bad URL, an unknown scheme).
    #[error("configuration: {0}")]
    Config(String),

    /// A read-model query's row did not read as the Rust types asked of
    /// `fetch_rows` or `fetch_values` of a
    /// [`SqlConnection`](crate::projection::sql_read_model::SqlConnection)
    /// (a NULL for a type that is not an `Option`, text for an integer, ...).
    #[error("column {column} of the rows of `{query}` holds {found}, not {expected:?}")]
    ReadModelRow {
        /// The query.
        query: String,
        /// The column's index, from 0.
        column: usize,
        /// The column type asked for.
        expected: crate::registry::ColumnType,
        /// What the column held: `NULL`, `text`, `integer`, ...
        found: &'static str,
    },

    /// The storage backend failed (connection lost, disk full, timeout). The
    /// operation may or may not be safe to retry; appends never leave a partial
    /// batch behind.
    #[error("{backend} store: {operation} failed")]
    Backend {
        /// `memory`, `sqlite`, `postgres` or `redis`: the engine that failed.
        backend: &'static str,
        /// What Annals was doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// `true` for [`Error::VersionConflict`], [`Error::HistoryMismatch`]
    /// and [`Error::AppendConditionFailed`]: the store is not where the
    /// caller thought; reload and decide again.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::VersionConflict { .. }
                | Error::HistoryMismatch { .. }
                | Error::AppendConditionFailed { .. }
        )
    }

    /// Shorthand for an [`Error::InvalidInput`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

fn describe_version(version: u64) -> String {
    if version == 0 {
        "no stream".to_owned()
    } else {
        format!("version {version}")
    }
}
