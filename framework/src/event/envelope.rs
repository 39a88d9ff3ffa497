//! The event envelope: what an append takes ([`NewEvent`]) and what a read
//! returns ([`RecordedEvent`]).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::metadata::Metadata;
use crate::event::payload::Payload;
use crate::event::{DecodeError, Event};
use crate::store::condition::{MAX_TAGS_PER_EVENT, validate_tag};
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;

/// Longest accepted event type name, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// An event to append: type name, schema version, payload and metadata.
///
/// ```
/// use annals::{Metadata, NewEvent};
/// use serde_json::json;
///
/// let event = NewEvent::json("iam.user.registered", &json!({ "email": "ada@example.test" }))?
///     .with_metadata(Metadata::new().with_tenant("acme"));
/// assert_eq!(event.event_type, "iam.user.registered");
/// assert_eq!(event.schema_version, 1);
/// # Ok::<(), annals::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event's id: a UUIDv7 by default, so ids sort by creation time.
    pub event_id: Uuid,
    /// The stable wire name of the event type.
    pub event_type: String,
    /// The payload's schema version (1 unless the type has been evolved).
    pub schema_version: u32,
    /// The JSON body.
    pub payload: Payload,
    /// Context: correlation, causation, actor, tenant, trace, headers.
    pub metadata: Metadata,
    /// What the event is about, for queries and append conditions
    /// (`email:ada@example.test`); see [`crate::store::condition`].
    /// `#[event(tags(...))]` fills them from the event's fields.
    pub tags: Vec<String>,
}

impl NewEvent {
    /// A new event with a fresh UUIDv7 id, schema version 1 and no metadata.
    pub fn new(event_type: impl Into<String>, payload: Payload) -> Self {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
            tags: Vec::new(),
        }
    }

    /// A new event whose payload is `value` serialised as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<Self> {
        let event_type = event_type.into();
        let payload = Payload::from_serialize(value).map_err(|error| {
            Error::invalid(
                "payload",
                format!("cannot serialise `{event_type}`: {error}"),
            )
        })?;
        Ok(NewEvent::new(event_type, payload))
    }

    /// A new event from a typed [`Event`].
    pub fn from_event<E: Event>(event: &E) -> Result<Self> {
        let payload = event.to_payload().map_err(|error| {
            Error::invalid(
                "payload",
                format!("cannot serialise `{}`: {error}", event.event_type()),
            )
        })?;
        Ok(NewEvent::new(event.event_type(), payload)
            .with_schema_version(event.schema_version())
            .with_tags(event.tags()))
    }

    /// Adds tags (each kept once, in the order first given).
    ///
    /// ```
    /// use annals::NewEvent;
    ///
    /// let event = NewEvent::json("iam.user.registered", &serde_json::json!({}))?
    ///     .with_tags(["email:ada@example.test", "tenant:acme", "email:ada@example.test"]);
    /// assert_eq!(event.tags, ["email:ada@example.test", "tenant:acme"]);
    /// # Ok::<(), annals::Error>(())
    /// ```
    pub fn with_tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        for tag in tags {
            let tag = tag.into();
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the schema version.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Sets the event id (for idempotent producers that derive their own ids).
    pub fn with_event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Checks the parts a store cannot repair: the type name and the tags.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_event_type(&self.event_type)?;
        if self.tags.len() > MAX_TAGS_PER_EVENT {
            return Err(Error::invalid(
                "tag",
                format!(
                    "the `{}` event has {} tags; the limit is {MAX_TAGS_PER_EVENT}",
                    self.event_type,
                    self.tags.len()
                ),
            ));
        }
        for (index, tag) in self.tags.iter().enumerate() {
            validate_tag(tag)?;
            if self.tags[..index].contains(tag) {
                return Err(Error::invalid(
                    "tag",
                    format!("the `{}` event carries tag `{tag}` twice", self.event_type),
                ));
            }
        }
        Ok(())
    }
}

/// Checks an event type name: not empty, at most [`MAX_EVENT_TYPE_LEN`]
/// bytes, no whitespace or control characters.
pub(crate) fn validate_event_type(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(
            "event type",
            "an event type name may not be empty",
        ));
    }
    if name.len() > MAX_EVENT_TYPE_LEN {
        return Err(Error::invalid(
            "event type",
            format!(
                "event type `{}…` is {} bytes long; the limit is {MAX_EVENT_TYPE_LEN}",
                name.chars().take(32).collect::<String>(),
                name.len()
            ),
        ));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(
            "event type",
            format!("event type {name:?} contains whitespace or a control character"),
        ));
    }
    Ok(())
}

/// An event as stored: the [`NewEvent`] plus where and when it was written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version in that stream (the first event is version 1).
    pub version: u64,
    /// Its place in the global log.
    pub position: LogPosition,
    /// The stable wire name of its type.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The JSON body.
    pub payload: Payload,
    /// Its metadata.
    pub metadata: Metadata,
    /// When the store recorded it (microsecond precision, UTC).
    pub recorded_at: DateTime<Utc>,
    /// Its tags, as appended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl RecordedEvent {
    /// Decodes the payload into the typed event `E`, upcasting older schema
    /// versions. Errors name the stream, version and event type.
    pub fn decode<E: Event>(&self) -> Result<E> {
        E::from_payload(&self.event_type, self.schema_version, &self.payload).map_err(|error| {
            match error {
                DecodeError::UnknownType => Error::UnknownEventType {
                    stream: self.stream_id.to_string(),
                    version: self.version,
                    event_type: self.event_type.clone(),
                    target: std::any::type_name::<E>(),
                },
                other => Error::Decode {
                    stream: self.stream_id.to_string(),
                    version: self.version,
                    event_type: self.event_type.clone(),
                    schema_version: self.schema_version,
                    target: std::any::type_name::<E>(),
                    reason: other.without_values(),
                },
            }
        })
    }

    /// The id of the aggregate instance whose stream holds the event (the
    /// part after the category: `user-t001-u0042` → `t001-u0042`), or the
    /// whole stream id for a stream without a category. Projections key
    /// their rows by it.
    ///
    /// ```
    /// # use annals::{LogPosition, Metadata, Payload, RecordedEvent, StreamId};
    /// # let mut event = RecordedEvent {
    /// #     event_id: uuid::Uuid::now_v7(),
    /// #     stream_id: StreamId::new("user-t001-u0042")?,
    /// #     version: 1,
    /// #     position: LogPosition::new(1, 1),
    /// #     event_type: "iam.user.deactivated".into(),
    /// #     schema_version: 1,
    /// #     payload: Payload::from_json("null")?,
    /// #     metadata: Metadata::new(),
    /// #     recorded_at: chrono::Utc::now(),
    /// #     tags: Vec::new(),
    /// # };
    /// // An event of the stream `user-t001-u0042`:
    /// assert_eq!(event.aggregate_id(), "t001-u0042");
    /// event.stream_id = StreamId::new("ledger")?;
    /// assert_eq!(event.aggregate_id(), "ledger");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn aggregate_id(&self) -> &str {
        self.stream_id
            .aggregate_id()
            .unwrap_or(self.stream_id.as_str())
    }
}
