//! What an append takes per stream and what it returns, and the checks every
//! backend runs before writing anything.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::event::envelope::NewEvent;
use crate::store::condition::AppendCondition;
use crate::store::position::LogPosition;
use crate::store::stream::{ExpectedVersion, StreamId};

/// The events for one stream within an [`EventStore::append_batch`](super::EventStore::append_batch).
#[derive(Debug, Clone)]
pub struct StreamAppend {
    /// The stream to append to.
    pub stream_id: StreamId,
    /// What the stream's version must be.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// The id the stream's newest event must have, if set: the history the
    /// caller decided on, not only its length (see
    /// [`with_expected_head`](Self::with_expected_head)).
    pub expected_head: Option<uuid::Uuid>,
    /// What must not have been recorded since the caller decided, checked
    /// in the stream's tenant atomically with the append (see
    /// [`with_condition`](Self::with_condition)).
    pub condition: Option<AppendCondition>,
}

impl StreamAppend {
    /// Bundles a stream, an expectation and events.
    pub fn new(stream_id: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        StreamAppend {
            stream_id,
            expected,
            events,
            expected_head: None,
            condition: None,
        }
    }

    /// Also requires that no event matching `condition`'s criteria was
    /// recorded after its position, in this stream's tenant: checked
    /// atomically with the append, which otherwise writes nothing and fails
    /// with [`Error::AppendConditionFailed`]. See
    /// [`condition`](crate::store::condition) for an example.
    pub fn with_condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Also requires the stream's newest event to be `event_id`: a caller
    /// that decided on state it holds (a cache, say) learns that the
    /// stream's history is another one, even at the same version (another
    /// database behind the same cache, a restored backup), and nothing is
    /// written ([`Error::HistoryMismatch`]).
    ///
    /// ```
    /// use annals::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let store = InMemoryEventStore::new();
    /// let stream = StreamId::new("account-1")?;
    /// let opened = NewEvent::json("bank.opened", &serde_json::json!({}))?;
    /// let opened_id = opened.event_id;
    /// store.append(&stream, ExpectedVersion::NoStream, vec![opened]).await?;
    ///
    /// let next = || NewEvent::json("bank.deposited", &serde_json::json!({ "amount": 5 }));
    /// let elsewhere = uuid::Uuid::now_v7(); // the head some other history had
    /// let stale = StreamAppend::new(stream.clone(), ExpectedVersion::Exact(1), vec![next()?])
    ///     .with_expected_head(elsewhere);
    /// let refused = store.append_batch(vec![stale]).await;
    /// assert!(matches!(refused, Err(annals::Error::HistoryMismatch { .. })));
    ///
    /// let current = StreamAppend::new(stream, ExpectedVersion::Exact(1), vec![next()?])
    ///     .with_expected_head(opened_id);
    /// assert_eq!(store.append_batch(vec![current]).await?[0].last_version, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_expected_head(mut self, event_id: uuid::Uuid) -> Self {
        self.expected_head = Some(event_id);
        self
    }

    /// The error for a head that is not the expected one (`found`: the
    /// stream's newest event, `None` for no stream), or `Ok` when it is or
    /// no head is expected.
    pub(crate) fn check_head(&self, version: u64, found: Option<uuid::Uuid>) -> Result<()> {
        match self.expected_head {
            Some(expected) if found != Some(expected) => Err(Error::HistoryMismatch {
                stream: self.stream_id.to_string(),
                version,
                expected_event: expected,
                found_event: found,
            }),
            _ => Ok(()),
        }
    }
}

/// The outcome of appending to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// Version of the first event written.
    pub first_version: u64,
    /// Version of the last event written: the stream's new version, and the
    /// expected version of the next append.
    pub last_version: u64,
    /// Log position of the last event written.
    pub position: LogPosition,
    /// Log position of each event written, in order.
    pub positions: Vec<LogPosition>,
    /// When the events were recorded.
    pub recorded_at: DateTime<Utc>,
}

/// The events of a successful batch as the store recorded them, built from
/// the batch and its results without reading them back.
pub(crate) fn recorded_events(
    batch: &[StreamAppend],
    results: &[AppendResult],
) -> Vec<crate::event::envelope::RecordedEvent> {
    let mut recorded = Vec::new();
    for (append, result) in batch.iter().zip(results) {
        for ((offset, event), position) in append.events.iter().enumerate().zip(&result.positions) {
            recorded.push(crate::event::envelope::RecordedEvent {
                event_id: event.event_id,
                stream_id: append.stream_id.clone(),
                version: result.first_version + offset as u64,
                position: *position,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
                recorded_at: result.recorded_at,
                tags: event.tags.clone(),
            });
        }
    }
    recorded
}

/// Applies an inline `projection` to the events a batch just wrote, inside
/// the append's transaction (`context` is over it), then flushes it. On a
/// failed event, what the projection buffered is drained into the
/// transaction before the error is returned: the caller drops the
/// transaction, so nothing of it is written twice.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) async fn apply_inline<P: crate::projection::Projection>(
    projection: &mut P,
    batch: &[StreamAppend],
    results: &[AppendResult],
    context: &mut P::Context,
) -> Result<()> {
    let handled = P::event_types();
    for event in recorded_events(batch, results) {
        if handled.contains(&event.event_type.as_str())
            && let Err(error) = projection.apply(&event, context).await
        {
            let _ = projection.flush(context).await;
            return Err(error);
        }
    }
    projection.flush(context).await
}

/// Rejects batches no backend should write: empty ones, a stream named twice,
/// bad event type names.
pub(crate) fn validate_batch(batch: &[StreamAppend]) -> Result<()> {
    let total: usize = batch.iter().map(|append| append.events.len()).sum();
    if total > MAX_EVENTS_PER_APPEND {
        return Err(Error::invalid(
            "batch",
            format!(
                "the append holds {total} events; the limit is {MAX_EVENTS_PER_APPEND} per append"
            ),
        ));
    }
    if batch.is_empty() {
        return Err(Error::invalid(
            "batch",
            "an append needs at least one stream",
        ));
    }
    let mut seen = HashSet::with_capacity(batch.len());
    for append in batch {
        if !seen.insert(append.stream_id.as_str()) {
            return Err(Error::invalid(
                "batch",
                format!(
                    "stream `{}` appears twice in one batch; put all its events in one entry",
                    append.stream_id
                ),
            ));
        }
        if let Some(condition) = &append.condition {
            condition.validate()?;
        }
        if append.events.is_empty() {
            return Err(Error::invalid(
                "batch",
                format!("the append to stream `{}` has no events", append.stream_id),
            ));
        }
        for event in &append.events {
            event.validate()?;
            check_sizes(&append.stream_id, event)?;
            check_no_nul(&append.stream_id, event)?;
        }
    }
    Ok(())
}

/// Largest accepted payload, in bytes of JSON.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;
/// Largest accepted metadata (actor, tenant, trace context and headers), in bytes.
pub const MAX_METADATA_BYTES: usize = 64 << 10;
/// Most events in one append (across all its streams).
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;

fn check_sizes(stream: &StreamId, event: &NewEvent) -> Result<()> {
    let payload = event.payload.as_json().len();
    if payload > MAX_PAYLOAD_BYTES {
        return Err(Error::invalid(
            "payload",
            format!(
                "the `{}` event for stream `{stream}` has a {payload}-byte payload; the limit is {MAX_PAYLOAD_BYTES} bytes",
                event.event_type
            ),
        ));
    }
    let metadata = &event.metadata;
    let text_fields = [
        &metadata.actor,
        &metadata.tenant_id,
        &metadata.trace_context,
    ];
    let size = text_fields
        .iter()
        .filter_map(|field| field.as_ref())
        .map(String::len)
        .sum::<usize>()
        + metadata
            .headers
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>();
    if size > MAX_METADATA_BYTES {
        return Err(Error::invalid(
            "metadata",
            format!(
                "the `{}` event for stream `{stream}` has {size} bytes of metadata; the limit is {MAX_METADATA_BYTES} bytes",
                event.event_type
            ),
        ));
    }
    Ok(())
}

/// PostgreSQL stores no NUL character in `text` or `jsonb`; so that every
/// backend answers alike, every backend refuses one, naming the field.
fn check_no_nul(stream: &StreamId, event: &NewEvent) -> Result<()> {
    let refuse = |field: &'static str| {
        Err(Error::invalid(
            field,
            format!(
                "the `{}` event for stream `{stream}` has a NUL character in its {field}; no backend stores one",
                event.event_type
            ),
        ))
    };
    if payload_holds_nul(event.payload.as_json()) {
        return refuse("payload");
    }
    let metadata = &event.metadata;
    for (field, value) in [
        ("actor", &metadata.actor),
        ("tenant id", &metadata.tenant_id),
        ("trace context", &metadata.trace_context),
    ] {
        if value.as_deref().is_some_and(|text| text.contains('\0')) {
            return refuse(field);
        }
    }
    if metadata
        .headers
        .iter()
        .any(|(key, value)| key.contains('\0') || value.contains('\0'))
    {
        return refuse("headers");
    }
    Ok(())
}

/// Whether a JSON text holds a NUL character in a string or key. JSON
/// writes one as `\u0000` (a raw NUL is not valid JSON); a hit is confirmed
/// by parsing, as `\\u0000` is a backslash and plain text.
fn payload_holds_nul(json: &str) -> bool {
    fn holds(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(holds),
            serde_json::Value::Object(fields) => fields
                .iter()
                .any(|(key, value)| key.contains('\0') || holds(value)),
            _ => false,
        }
    }
    json.contains("\\u0000")
        && serde_json::from_str::<serde_json::Value>(json).is_ok_and(|value| holds(&value))
}

/// The version after appending `count` events to a stream at `current`,
/// refusing to overflow the signed 64-bit column every backend stores.
pub(crate) fn next_version(stream: &StreamId, current: u64, count: usize) -> Result<u64> {
    u64::try_from(count)
        .ok()
        .and_then(|count| current.checked_add(count))
        .filter(|version| i64::try_from(*version).is_ok())
        .ok_or_else(|| {
            Error::invalid(
                "batch",
                format!("appending {count} events to stream `{stream}` at version {current} overflows the version counter"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::payload::Payload;

    fn event(name: &str) -> NewEvent {
        NewEvent::new(
            name,
            Payload::from_serialize(&1).expect("a number serialises"),
        )
    }

    fn stream(id: &str) -> StreamId {
        StreamId::new(id).expect("valid test stream id")
    }

    #[test]
    fn a_stream_named_twice_is_rejected_with_its_name() {
        let batch = vec![
            StreamAppend::new(stream("a-1"), ExpectedVersion::Any, vec![event("x")]),
            StreamAppend::new(stream("a-1"), ExpectedVersion::Any, vec![event("y")]),
        ];
        let error = validate_batch(&batch).expect_err("duplicate stream");
        assert!(error.to_string().contains("`a-1` appears twice"), "{error}");
    }

    #[test]
    fn empty_batches_and_empty_appends_are_rejected() {
        assert!(validate_batch(&[]).is_err());
        let batch = vec![StreamAppend::new(
            stream("a-1"),
            ExpectedVersion::Any,
            vec![],
        )];
        let error = validate_batch(&batch).expect_err("no events");
        assert!(error.to_string().contains("`a-1` has no events"), "{error}");
    }

    #[test]
    fn bad_event_type_names_are_rejected() {
        for name in ["", "has space", "tab\there", &"x".repeat(129)] {
            let batch = vec![StreamAppend::new(
                stream("a-1"),
                ExpectedVersion::Any,
                vec![event(name)],
            )];
            let error = validate_batch(&batch).expect_err(name);
            assert!(
                matches!(
                    error,
                    Error::InvalidInput {
                        field: "event type",
                        ..
                    }
                ),
                "{error}"
            );
        }
    }

    #[test]
    fn versions_never_overflow_the_stored_column() {
        let id = stream("a-1");
        assert_eq!(next_version(&id, 3, 2).expect("fits"), 5);
        assert!(next_version(&id, i64::MAX as u64, 1).is_err());
    }
}
