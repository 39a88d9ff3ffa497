//! Positions in the global log, and how a reader resumes from one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Where an event sits in the global log; the checkpoint a reader keeps.
///
/// The log is ordered by `(commit, sequence)`:
///
/// - `commit` identifies the transaction that wrote the event. On PostgreSQL it
///   is the writing transaction's id (`xid8`); on SQLite and in memory, where
///   writers are serialised, it is the sequence of the first event of the
///   append. Events of one append share it.
/// - `sequence` is the event's global sequence number: unique and increasing
///   within a commit, the number to show a person. On PostgreSQL it may have
///   holes (rolled-back appends) and is not in commit order by itself, which
///   is why the pair is the position.
///
/// Reading the log "after" a position returns every event ordered after it,
/// so saving the position of the last event handled and reading after it
/// resumes exactly: nothing skipped, nothing repeated.
///
/// ```
/// use annals::LogPosition;
///
/// let saved = LogPosition::new(7, 42);
/// let text = saved.to_string();
/// assert_eq!(text, "7/42");
/// assert_eq!(text.parse::<LogPosition>()?, saved);
/// assert!(LogPosition::START < saved);
/// # Ok::<(), annals::Error>(())
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The writing transaction (see the type docs).
    pub commit: u64,
    /// The global sequence number of the event.
    pub sequence: u64,
}

impl LogPosition {
    /// Refuses, as the checkpoint `name`, a position the SQL backends cannot
    /// store (their columns are signed 64-bit), on every backend alike,
    /// rather than saving a clamped one.
    pub(crate) fn check_storable_checkpoint(self, name: &str) -> Result<(), Error> {
        if i64::try_from(self.commit).is_ok() && i64::try_from(self.sequence).is_ok() {
            return Ok(());
        }
        Err(Error::invalid(
            "checkpoint position",
            format!(
                "checkpoint `{name}` at {self:?} is beyond the largest storable position (each part at most {})",
                i64::MAX
            ),
        ))
    }

    /// Before the first event: read after it to read the whole log.
    pub const START: LogPosition = LogPosition {
        commit: 0,
        sequence: 0,
    };

    /// A position from its two parts.
    pub const fn new(commit: u64, sequence: u64) -> Self {
        LogPosition { commit, sequence }
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.sequence)
    }
}

impl FromStr for LogPosition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid(
                "log position",
                format!("{s:?} is not of the form `commit/sequence`"),
            )
        };
        let (commit, sequence) = s.split_once('/').ok_or_else(bad)?;
        Ok(LogPosition {
            commit: commit.parse().map_err(|_| bad())?,
            sequence: sequence.parse().map_err(|_| bad())?,
        })
    }
}
