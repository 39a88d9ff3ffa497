//! Queries over stored events by type, time, tenant, correlation id, header
//! and tag.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::envelope::RecordedEvent;

/// Default page size of an [`EventQuery`].
pub const DEFAULT_QUERY_LIMIT: usize = 100;

/// A filter over stored events. Every condition set must hold; results come
/// ordered by global sequence, a page at a time.
///
/// ```
/// use annals::store::EventQuery;
/// use uuid::Uuid;
///
/// let request = Uuid::now_v7();
/// let query = EventQuery::new()
///     .event_type("iam.user.registered")
///     .tenant("acme")
///     .correlation_id(request)
///     .tag("email:ada@example.test")
///     .limit(50);
/// assert_eq!(query.event_types, ["iam.user.registered"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EventQuery {
    /// Event type names to match (any of them); empty matches every type.
    pub event_types: Vec<String>,
    /// Recorded at or after this instant.
    pub recorded_from: Option<DateTime<Utc>>,
    /// Recorded strictly before this instant.
    pub recorded_until: Option<DateTime<Utc>>,
    /// Metadata tenant id.
    pub tenant_id: Option<String>,
    /// Metadata correlation id.
    pub correlation_id: Option<Uuid>,
    /// A metadata header that must have this value.
    pub header: Option<(String, String)>,
    /// One event, by id.
    pub event_id: Option<Uuid>,
    /// Tags the events carry, all of them.
    pub tags: Vec<String>,
    /// Only events with a global sequence greater than this (paging cursor).
    pub after_sequence: u64,
    /// Page size.
    pub limit: usize,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            event_types: Vec::new(),
            recorded_from: None,
            recorded_until: None,
            tenant_id: None,
            correlation_id: None,
            header: None,
            event_id: None,
            tags: Vec::new(),
            after_sequence: 0,
            limit: DEFAULT_QUERY_LIMIT,
        }
    }
}

impl EventQuery {
    /// A query matching every event, first page.
    pub fn new() -> Self {
        EventQuery::default()
    }

    /// Adds an event type to match.
    pub fn event_type(mut self, name: impl Into<String>) -> Self {
        self.event_types.push(name.into());
        self
    }

    /// Recorded in `[from, until)`.
    pub fn recorded_between(mut self, from: DateTime<Utc>, until: DateTime<Utc>) -> Self {
        self.recorded_from = Some(from);
        self.recorded_until = Some(until);
        self
    }

    /// Recorded at or after `from`.
    pub fn recorded_from(mut self, from: DateTime<Utc>) -> Self {
        self.recorded_from = Some(from);
        self
    }

    /// Recorded strictly before `until`.
    pub fn recorded_until(mut self, until: DateTime<Utc>) -> Self {
        self.recorded_until = Some(until);
        self
    }

    /// Of this tenant.
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// With this correlation id.
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// With this correlation key: a request id of any form, as given to
    /// [`Metadata::with_correlation_key`](crate::Metadata::with_correlation_key).
    ///
    /// ```
    /// use annals::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let store = InMemoryEventStore::new();
    /// let event = NewEvent::json("iam.user.registered", &serde_json::json!({}))?
    ///     .with_metadata(Metadata::new().with_correlation_key("req-42"));
    /// store.append(&StreamId::new("user-1")?, ExpectedVersion::NoStream, vec![event]).await?;
    /// let page = store.query(&EventQuery::new().correlation_key("req-42")).await?;
    /// assert_eq!(page.events.len(), 1);
    /// assert_eq!(page.events[0].metadata.headers["correlation-key"], "req-42");
    /// # Ok(())
    /// # }
    /// ```
    pub fn correlation_key(mut self, key: &str) -> Self {
        self.correlation_id = Some(crate::event::metadata::correlation_uuid(key));
        self
    }

    /// With this header value.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.header = Some((key.into(), value.into()));
        self
    }

    /// The event with this id.
    pub fn event_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    /// Carrying this tag (with every other tag added).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Starts after this global sequence (from [`QueryPage::next_after`]).
    pub fn after(mut self, sequence: u64) -> Self {
        self.after_sequence = sequence;
        self
    }

    /// Page size (at least 1).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }

    /// Whether `event` matches every condition except paging. Backends that
    /// filter in Rust (the in-memory store) use this; SQL backends translate
    /// the same conditions.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        let metadata = &event.metadata;
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self
                .recorded_from
                .is_none_or(|from| event.recorded_at >= from)
            && self
                .recorded_until
                .is_none_or(|until| event.recorded_at < until)
            && self
                .tenant_id
                .as_ref()
                .is_none_or(|tenant| metadata.tenant_id.as_ref() == Some(tenant))
            && self
                .correlation_id
                .is_none_or(|id| metadata.correlation_id == Some(id))
            && self
                .header
                .as_ref()
                .is_none_or(|(key, value)| metadata.headers.get(key) == Some(value))
            && self.event_id.is_none_or(|id| event.event_id == id)
            && self.tags.iter().all(|tag| event.tags.contains(tag))
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The matching events, by global sequence.
    pub events: Vec<RecordedEvent>,
    /// Pass to [`EventQuery::after`] for the next page; `None` on the last page.
    pub next_after: Option<u64>,
}

impl QueryPage {
    /// Builds a page from up to `limit + 1` fetched events: the extra one only
    /// tells whether another page exists.
    pub(crate) fn from_overfetch(mut events: Vec<RecordedEvent>, limit: usize) -> Self {
        let more = events.len() > limit;
        events.truncate(limit);
        let next_after = if more {
            events.last().map(|event| event.position.sequence)
        } else {
            None
        };
        QueryPage { events, next_after }
    }
}
