//! A narrowed read of the global log: only some event types, optionally
//! without metadata, filtered by the database ([`EventStore::read_log`]).
//!
//! [`EventStore::read_log`]: crate::store::EventStore::read_log

use crate::event::envelope::RecordedEvent;
use crate::store::position::LogPosition;

/// Which of the log's events a reader wants, and whether it needs their
/// metadata. The default wants everything.
///
/// A projection that handles one event type in a hundred reads only that
/// type's events (the database filters on an index), and a reader that
/// never looks at the envelope's metadata can leave it out of the transfer.
///
/// ```
/// use annals::prelude::*;
/// use annals::store::LogFilter;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = InMemoryEventStore::new();
/// for n in 0..10 {
///     let kind = if n == 7 { "filtered.rare" } else { "filtered.common" };
///     let stream = StreamId::new(format!("filtered-{n}"))?;
///     store.append(&stream, ExpectedVersion::Any, vec![NewEvent::json(kind, &json!(n))?]).await?;
/// }
/// let rare = LogFilter::event_types(["filtered.rare"]).without_metadata();
/// let page = store.read_log(LogPosition::START, 100, &rare).await?;
/// assert_eq!(page.events.len(), 1);
/// // The whole log was read: the next read starts after its last event.
/// assert_eq!(page.read_to, page.head);
/// assert_eq!(page.read_to.sequence, 10);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    event_types: Option<Vec<String>>,
    without_metadata: bool,
}

impl LogFilter {
    /// Every event, with its metadata.
    pub fn all() -> Self {
        LogFilter::default()
    }

    /// Only events of these types (none at all for an empty list).
    pub fn event_types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LogFilter {
            event_types: Some(types.into_iter().map(Into::into).collect()),
            without_metadata: false,
        }
    }

    /// Leaves the metadata out: events come with empty
    /// [`Metadata`](crate::event::metadata::Metadata) (no tenant,
    /// correlation, causation, actor, trace context or headers).
    pub fn without_metadata(mut self) -> Self {
        self.without_metadata = true;
        self
    }

    /// The wanted types, `None` for all.
    pub fn types(&self) -> Option<&[String]> {
        self.event_types.as_deref()
    }

    /// Whether events come with their metadata.
    pub fn with_metadata(&self) -> bool {
        !self.without_metadata
    }

    /// Whether the filter wants an event of this type.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }

    /// The same types, with the metadata (for a wrapper that needs it to
    /// do its own work before it strips it).
    pub(crate) fn keeping_metadata(&self) -> Self {
        LogFilter {
            event_types: self.event_types.clone(),
            without_metadata: false,
        }
    }

    /// Empties the metadata of `events` if the filter leaves it out (for
    /// stores that cannot leave it out of the read itself).
    pub(crate) fn strip_metadata(&self, events: &mut [RecordedEvent]) {
        if self.without_metadata {
            for event in events {
                event.metadata = crate::event::metadata::Metadata::new();
            }
        }
    }
}

/// A page of [`EventStore::read_log`](crate::store::EventStore::read_log).
#[derive(Debug, Clone)]
pub struct LogPage {
    /// The wanted events, in log order.
    pub events: Vec<RecordedEvent>,
    /// How far the log was read: every wanted event up to and including
    /// this position was returned, so the next read starts after it. Past
    /// the last event returned when the filter skipped events after it;
    /// the read's `after` when there is nothing newer.
    pub read_to: LogPosition,
    /// The last event in the log (of this handle's tenant) when the page
    /// was read, whatever its type: how far there is to go. Readers derive
    /// their lag from it instead of counting the events behind them.
    pub head: LogPosition,
}

impl LogPage {
    /// A page of at most `max_count` events read after `after`, up to the
    /// log's `head`: a full page was read to its last event, a shorter one
    /// to the head.
    pub(crate) fn new(
        events: Vec<RecordedEvent>,
        after: LogPosition,
        max_count: usize,
        head: LogPosition,
    ) -> Self {
        let last = events.last().map_or(after, |event| event.position);
        let read_to = if events.len() >= max_count {
            last
        } else {
            head.max(last).max(after)
        };
        LogPage {
            events,
            read_to,
            head: head.max(read_to),
        }
    }

    /// Whether the read reached the head of the log.
    pub fn at_head(&self) -> bool {
        self.read_to >= self.head
    }
}
