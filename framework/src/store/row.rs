//! Turning a raw row of `annals_events` into a [`RecordedEvent`], shared by
//! the SQL backends. Anything that does not fit becomes
//! [`Error::CorruptEvent`] naming the stream, version and type; nothing panics.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::envelope::RecordedEvent;
use crate::event::metadata::Metadata;
use crate::event::payload::Payload;
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;

/// The identifying columns of a row, read first so every later error can
/// name the event.
#[derive(Debug, Clone)]
pub(crate) struct RowIdentity {
    pub(crate) stream_id: String,
    pub(crate) version: i64,
    pub(crate) event_type: String,
}

impl RowIdentity {
    /// The identity to report before a row's own identity columns are read.
    pub(crate) fn unreadable() -> Self {
        RowIdentity {
            stream_id: "<unreadable>".to_owned(),
            version: 0,
            event_type: "<unreadable>".to_owned(),
        }
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::CorruptEvent {
            stream: self.stream_id.clone(),
            version: u64::try_from(self.version).unwrap_or(0),
            event_type: self.event_type.clone(),
            reason: reason.into(),
        }
    }
}

/// Every column of a row, as the database returned it.
#[derive(Debug)]
pub(crate) struct StoredRow {
    pub(crate) identity: RowIdentity,
    pub(crate) commit: i64,
    pub(crate) position: i64,
    pub(crate) event_id: Uuid,
    pub(crate) schema_version: i64,
    pub(crate) payload: String,
    /// Whether the database guarantees `payload` is JSON (PostgreSQL's
    /// `jsonb`), so it is not parsed again; SQLite's text is checked.
    pub(crate) payload_checked: bool,
    pub(crate) tenant_id: Option<String>,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) actor: Option<String>,
    pub(crate) trace_context: Option<String>,
    /// The headers' JSON object, `None` when the read left them out.
    pub(crate) headers: Option<String>,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) tags: Vec<String>,
}

impl StoredRow {
    pub(crate) fn into_recorded(self) -> Result<RecordedEvent> {
        let id = &self.identity;
        let unsigned = |value: i64, column: &str| {
            u64::try_from(value).map_err(|_| id.corrupt(format!("{column} {value} is negative")))
        };
        let version = unsigned(id.version, "version")?;
        let position = LogPosition::new(
            unsigned(self.commit, "transaction id")?,
            unsigned(self.position, "position")?,
        );
        let schema_version = u32::try_from(self.schema_version).map_err(|_| {
            id.corrupt(format!(
                "schema version {} is out of range",
                self.schema_version
            ))
        })?;
        let payload = if self.payload_checked {
            Payload::from_checked_json(self.payload)
        } else {
            Payload::from_json(self.payload)
                .map_err(|error| id.corrupt(format!("payload is not valid JSON: {error}")))?
        };
        let headers: BTreeMap<String, String> = match self.headers.as_deref() {
            // Most events have none: no parse.
            None | Some("{}") => BTreeMap::new(),
            Some(headers) => serde_json::from_str(headers).map_err(|error| {
                id.corrupt(format!("headers are not a JSON object of strings: {error}"))
            })?,
        };
        let mut metadata = Metadata::new();
        metadata.tenant_id = self.tenant_id;
        metadata.correlation_id = self.correlation_id;
        metadata.causation_id = self.causation_id;
        metadata.actor = self.actor;
        metadata.trace_context = self.trace_context;
        metadata.headers = headers;
        Ok(RecordedEvent {
            event_id: self.event_id,
            stream_id: StreamId::from_stored(self.identity.stream_id),
            version,
            position,
            event_type: self.identity.event_type,
            schema_version,
            payload,
            metadata,
            recorded_at: self.recorded_at,
            tags: self.tags,
        })
    }
}

/// Tags stored as a JSON array of strings (SQLite), `None` for none.
pub(crate) fn tags_from_json(identity: &RowIdentity, json: Option<&str>) -> Result<Vec<String>> {
    json.map_or(Ok(Vec::new()), |json| {
        serde_json::from_str(json).map_err(|error| {
            identity.corrupt(format!("tags are not a JSON array of strings: {error}"))
        })
    })
}

/// Tags as the SQL backends store them: a JSON array, `None` for none.
pub(crate) fn tags_json(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::Value::from(tags.to_vec()).to_string())
}

/// The error for a failed database call: `backend` and `operation` named,
/// the driver's error as the source.
pub(crate) fn failed(
    backend: &'static str,
    operation: &'static str,
) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| Error::Backend {
        backend,
        operation,
        source: Box::new(error),
    }
}

/// A version or sequence for a signed 64-bit column (saturating: no stored
/// value is that large).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A page size for a SQL `LIMIT`.
pub(crate) fn limit(max_count: usize) -> i64 {
    i64::try_from(max_count).unwrap_or(i64::MAX)
}

/// A log position from its two stored columns (negative values, which no
/// writer produces, read as 0).
pub(crate) fn position_from_columns(commit: i64, sequence: i64) -> LogPosition {
    LogPosition::new(
        u64::try_from(commit).unwrap_or(0),
        u64::try_from(sequence).unwrap_or(0),
    )
}
