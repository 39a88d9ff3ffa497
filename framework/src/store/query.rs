//! Queries over stored events by type, time, tenant, correlation id, header
//! and tag.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::envelope::RecordedEvent;

/// Default page size of an [`EventQuery`].
pub const DEFAULT_QUERY_LIMIT: usize = 100;

/// A filter over stored events. Every condition set must hold; results come
/// a page at a time, in log order (global sequence), except that a query
/// with a time bound comes in the order events were recorded
/// (`recorded_at`, then sequence): the order its index serves, so a page
/// of a busy hour costs the page, not the hour. Page on with the page's
/// [`QueryPage::next`] cursor, which carries the sort key.
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
    /// Where the page starts: after this cursor (from [`QueryPage::next`]).
    pub after: QueryCursor,
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
            after: QueryCursor::START,
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

    /// Starts after this cursor: [`QueryPage::next`], or a global sequence
    /// (only events after it).
    pub fn after(mut self, cursor: impl Into<QueryCursor>) -> Self {
        self.after = cursor.into();
        self
    }

    /// Whether results come in recorded order (the query has a time bound)
    /// rather than log order.
    pub fn in_recorded_order(&self) -> bool {
        self.recorded_from.is_some() || self.recorded_until.is_some()
    }

    /// The SQL `ORDER BY` of this query's order, on the event table's
    /// columns (both SQL backends).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn order_by_sql(&self) -> &'static str {
        if self.in_recorded_order() {
            " ORDER BY recorded_at, position"
        } else {
            " ORDER BY position"
        }
    }

    /// Whether `event` comes after the cursor in this query's order.
    pub fn is_after_cursor(&self, event: &RecordedEvent) -> bool {
        match (self.in_recorded_order(), self.after.recorded_at) {
            (true, Some(at)) => {
                (event.recorded_at, event.position.sequence) > (at, self.after.sequence)
            }
            _ => event.position.sequence > self.after.sequence,
        }
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

/// Where a query's page starts: after the sort key of the previous page's
/// last event. A plain global sequence converts into one (`5.into()`).
///
/// ```
/// use annals::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = InMemoryEventStore::new();
/// let since = chrono::Utc::now() - chrono::Duration::minutes(1);
/// for n in 0..5 {
///     let event = NewEvent::json("iam.user.registered", &serde_json::json!({ "n": n }))?;
///     store.append(&StreamId::new(format!("user-{n}"))?, ExpectedVersion::NoStream, vec![event]).await?;
/// }
/// // A time range: pages in recorded order, each cursor carrying the time.
/// let mut query = EventQuery::new().recorded_from(since).limit(2);
/// let mut seen = 0;
/// loop {
///     let page = store.query(&query).await?;
///     seen += page.events.len();
///     match page.next {
///         Some(cursor) => query = query.after(cursor),
///         None => break,
///     }
/// }
/// assert_eq!(seen, 5);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryCursor {
    /// For a query in recorded order: the last event's recording instant
    /// (`None`: only the sequence counts).
    pub recorded_at: Option<DateTime<Utc>>,
    /// The last event's global sequence.
    pub sequence: u64,
}

impl QueryCursor {
    /// Before every event.
    pub const START: QueryCursor = QueryCursor {
        recorded_at: None,
        sequence: 0,
    };
}

impl From<u64> for QueryCursor {
    fn from(sequence: u64) -> Self {
        QueryCursor {
            recorded_at: None,
            sequence,
        }
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The matching events, in the query's order.
    pub events: Vec<RecordedEvent>,
    /// Pass to [`EventQuery::after`] for the next page; `None` on the last page.
    pub next: Option<QueryCursor>,
}

impl QueryPage {
    /// Builds a page of `query` from up to `limit + 1` fetched events: the
    /// extra one only tells whether another page exists.
    pub(crate) fn from_overfetch(mut events: Vec<RecordedEvent>, query: &EventQuery) -> Self {
        let more = events.len() > query.limit;
        events.truncate(query.limit);
        let next = events.last().filter(|_| more).map(|event| QueryCursor {
            recorded_at: query.in_recorded_order().then_some(event.recorded_at),
            sequence: event.position.sequence,
        });
        QueryPage { events, next }
    }
}
