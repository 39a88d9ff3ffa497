//! Listing the streams a store holds, a page at a time, for operators and
//! tools (`annals streams`).

use chrono::{DateTime, Utc};

use crate::store::stream::StreamId;

/// Default page size of a [`StreamQuery`].
pub const DEFAULT_STREAM_PAGE: usize = 100;

/// Which streams to list: optionally those whose id starts with a prefix,
/// after a cursor, a page at a time, ordered by stream id (then tenant).
///
/// ```
/// use annals::prelude::*;
/// use annals::store::StreamQuery;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = InMemoryEventStore::new();
/// for id in ["user-2", "user-1", "role-1"] {
///     let event = NewEvent::json("listed.created", &json!({}))?;
///     store.append(&StreamId::new(id)?, ExpectedVersion::NoStream, vec![event]).await?;
/// }
/// let users = store.list_streams(&StreamQuery::new().prefix("user-").limit(1)).await?;
/// assert_eq!(users[0].stream_id.as_str(), "user-1");
/// assert_eq!(users[0].version, 1);
/// let next = store.list_streams(&StreamQuery::new().prefix("user-").after(&users[0])).await?;
/// assert_eq!(next.len(), 1);
/// assert_eq!(next[0].stream_id.as_str(), "user-2");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamQuery {
    /// Only streams whose id starts with this (compared literally and
    /// case-sensitively: no wildcards).
    pub prefix: Option<String>,
    /// Only streams ordered after this (stream id, tenant; `""` for none).
    pub after: Option<(String, String)>,
    /// Page size.
    pub limit: usize,
}

impl Default for StreamQuery {
    fn default() -> Self {
        StreamQuery {
            prefix: None,
            after: None,
            limit: DEFAULT_STREAM_PAGE,
        }
    }
}

impl StreamQuery {
    /// Every stream, first page.
    pub fn new() -> Self {
        StreamQuery::default()
    }

    /// Only streams whose id starts with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into()).filter(|prefix| !prefix.is_empty());
        self
    }

    /// The page after `last`, the last stream of the previous page.
    pub fn after(mut self, last: &StreamInfo) -> Self {
        self.after = Some((
            last.stream_id.as_str().to_owned(),
            last.tenant_id.clone().unwrap_or_default(),
        ));
        self
    }

    /// At most `limit` streams.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `stream` of `tenant` (`""`: none) belongs on this page,
    /// for backends that filter in memory.
    pub(crate) fn wants(&self, stream: &str, tenant: &str) -> bool {
        self.prefix
            .as_deref()
            .is_none_or(|prefix| stream.starts_with(prefix))
            && self
                .after
                .as_ref()
                .is_none_or(|(after_stream, after_tenant)| {
                    (stream, tenant) > (after_stream.as_str(), after_tenant.as_str())
                })
    }
}

/// One stream as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's id.
    pub stream_id: StreamId,
    /// The tenant the stream belongs to, if any.
    pub tenant_id: Option<String>,
    /// Its current version: how many events it holds.
    pub version: u64,
    /// When its first event was recorded.
    pub created_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub updated_at: DateTime<Utc>,
}
