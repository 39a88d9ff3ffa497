//! Dead letters: an event a handler still failed on after every retry (or
//! while its circuit was open), kept with the error so it can be inspected
//! and retried.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::stream::StreamId;

/// One event a handler could not process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's own id.
    pub id: Uuid,
    /// The handler's name.
    pub handler: String,
    /// The event.
    pub event_id: Uuid,
    /// The event's stream.
    pub stream_id: StreamId,
    /// The event's version in its stream.
    pub version: u64,
    /// The event's type name.
    pub event_type: String,
    /// The last error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was given up on (microsecond precision, UTC).
    pub failed_at: DateTime<Utc>,
}
