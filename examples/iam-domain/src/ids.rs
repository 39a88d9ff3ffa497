//! Aggregate ids from stream ids: `user-t001-u0042` → `t001-u0042`.

use annals::RecordedEvent;

/// The aggregate id of the event's stream (the part after the category).
pub(crate) fn aggregate_id(envelope: &RecordedEvent) -> &str {
    let stream = &envelope.stream_id;
    stream.aggregate_id().unwrap_or(stream.as_str())
}
