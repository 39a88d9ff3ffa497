//! Stream identifiers and the optimistic-concurrency expectation of an append.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 256;

/// The id of an event stream: usually one aggregate instance, such as
/// `user-0190e0b2-...`.
///
/// A stream id is 1 to [`MAX_STREAM_ID_LEN`] bytes of UTF-8 without control
/// characters or surrounding whitespace. By convention it is
/// `{category}-{id}`; [`StreamId::category`] returns the part before the
/// first `-`.
///
/// ```
/// use annals::StreamId;
///
/// let id = StreamId::new("user-42")?;
/// assert_eq!(id.category(), "user");
/// assert_eq!(StreamId::for_aggregate("tenant", 7)?.as_str(), "tenant-7");
/// assert!(StreamId::new("").is_err());
/// assert!(StreamId::new("bad\nid").is_err());
/// # Ok::<(), annals::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// Validates and wraps a stream id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::invalid("stream id", "a stream id may not be empty"));
        }
        if id.len() > MAX_STREAM_ID_LEN {
            return Err(Error::invalid(
                "stream id",
                format!(
                    "stream id `{}…` is {} bytes long; the limit is {MAX_STREAM_ID_LEN}",
                    id.chars().take(32).collect::<String>(),
                    id.len()
                ),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "stream id",
                format!("stream id {id:?} contains a control character"),
            ));
        }
        if id.trim() != id {
            return Err(Error::invalid(
                "stream id",
                format!("stream id {id:?} starts or ends with whitespace"),
            ));
        }
        Ok(StreamId(id))
    }

    /// The conventional stream id of an aggregate instance: `{aggregate_type}-{id}`.
    pub fn for_aggregate(aggregate_type: &str, id: impl fmt::Display) -> Result<Self> {
        StreamId::new(format!("{aggregate_type}-{id}"))
    }

    /// Wraps an id read back from storage, where it was validated on the way in.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_stored(id: String) -> Self {
        StreamId(id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `-` (the whole id if there is none).
    pub fn category(&self) -> &str {
        self.0
            .split_once('-')
            .map_or(self.0.as_str(), |(category, _)| category)
    }

    /// The part after the first `-`: for a stream named by
    /// [`for_aggregate`](Self::for_aggregate), the aggregate's id (`None`
    /// when the id has no `-`).
    ///
    /// ```
    /// use annals::StreamId;
    ///
    /// let stream = StreamId::for_aggregate("user", "t001-u0042")?;
    /// assert_eq!(stream.category(), "user");
    /// assert_eq!(stream.aggregate_id(), Some("t001-u0042"));
    /// assert_eq!(StreamId::new("ledger")?.aggregate_id(), None);
    /// # Ok::<(), annals::Error>(())
    /// ```
    pub fn aggregate_id(&self) -> Option<&str> {
        self.0.split_once('-').map(|(_, id)| id)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        StreamId::new(s)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        StreamId::new(s)
    }
}

impl TryFrom<String> for StreamId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        StreamId::new(s)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        StreamId::new(raw).map_err(serde::de::Error::custom)
    }
}

/// What an append expects of the stream it writes to.
///
/// Versions count events: a stream's first event has version 1, and a stream
/// with no events is at version 0.
///
/// ```
/// use annals::ExpectedVersion;
///
/// assert!(ExpectedVersion::Any.accepts(0));
/// assert!(ExpectedVersion::NoStream.accepts(0));
/// assert!(!ExpectedVersion::NoStream.accepts(3));
/// assert!(ExpectedVersion::StreamExists.accepts(3));
/// assert!(ExpectedVersion::Exact(3).accepts(3));
/// assert!(!ExpectedVersion::Exact(3).accepts(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: append after whatever is there.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be at exactly this version (`Exact(0)` is `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `current` satisfies this expectation.
    pub fn accepts(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(version) => current == version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}
