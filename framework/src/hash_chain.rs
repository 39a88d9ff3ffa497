//! Tamper evidence: every stored event carries a SHA-256 hash chained to the
//! previous event of its stream, and [`EventStore::verify_stream`] /
//! [`EventStore::verify_log`] report the first broken link.
//!
//! The chain is computed over the bytes the backend stores:
//!
//! ```text
//! link(stream, 0) = 32 zero bytes
//! link(stream, v) = SHA-256(link(stream, v - 1) || digest(event v))
//! digest(event)   = SHA-256(event_id || text(stream_id) || int8(version)
//!                   || text(event_type) || int4(schema_version) || text(payload)
//!                   || text(tenant_id) || uuid?(correlation_id) || uuid?(causation_id)
//!                   || text(actor) || text(trace_context) || text(headers)
//!                   || int8(recorded_at in microseconds since the Unix epoch))
//! ```
//!
//! where `int8`/`int4` are big-endian, `event_id` is its 16 bytes,
//! `text(s)` is the UTF-8 length as `int8` followed by the bytes (eight
//! `0xff` bytes for NULL) and `uuid?(u)` is `0x00` for NULL or `0x01`
//! followed by the 16 bytes. `payload` and `headers` are the JSON text as
//! stored: verbatim on SQLite and in memory, PostgreSQL's `jsonb` text on
//! PostgreSQL (which computes the links itself, in the append statement, so
//! the hash covers exactly what it keeps).
//!
//! Altering any stored column of an event (with the immutability trigger
//! disabled, say) breaks its link; replacing its hash too breaks the next
//! link; deleting an event breaks the link after it; a row written past
//! Annals has no hash and is reported. Removing a stream's newest events
//! leaves an intact but shorter chain: keep [`ChainReport::heads`] somewhere
//! else (an audit system, a signed report) to detect that too.
//!
//! ```
//! use annals::prelude::*;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let store = InMemoryEventStore::new();
//! let stream = StreamId::new("user-1")?;
//! let event = NewEvent::json("iam.user.registered", &json!({ "email": "ada@example.test" }))?;
//! store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//!
//! let report = store.verify_stream(&stream).await?;
//! assert!(report.is_intact());
//! assert_eq!(report.events_checked, 1);
//! let whole_log = store.verify_log().await?;
//! assert_eq!(whole_log.heads.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! [`EventStore::verify_stream`]: crate::store::EventStore::verify_stream
//! [`EventStore::verify_log`]: crate::store::EventStore::verify_log

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The SHA-256 link of one event in its stream's chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventHash([u8; 32]);

impl EventHash {
    /// The link before a stream's first event: 32 zero bytes.
    pub const GENESIS: EventHash = EventHash([0; 32]);

    /// The hash from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        EventHash(bytes)
    }

    /// The hash from a stored column; `None` unless it is 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(EventHash)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The link that follows `self` for an event with this digest.
    pub(crate) fn next(&self, digest: &[u8; 32]) -> EventHash {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(digest);
        EventHash(hasher.finalize().into())
    }
}

impl fmt::Display for EventHash {
    /// Lowercase hexadecimal, 64 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({self})")
    }
}

/// The first link of a chain that does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The stream of the event whose link is wrong.
    pub stream_id: String,
    /// Its version.
    pub version: u64,
    /// The link its stored bytes and its predecessor's stored link give.
    pub expected: EventHash,
    /// The link stored with it (`None`: the row has no hash, so it was not
    /// written by Annals).
    pub found: Option<EventHash>,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {} version {}: expected hash {}, found ",
            self.stream_id, self.version, self.expected
        )?;
        match &self.found {
            Some(found) => write!(f, "{found}"),
            None => f.write_str("none"),
        }
    }
}

/// What [`verify_stream`](crate::store::EventStore::verify_stream) or
/// [`verify_log`](crate::store::EventStore::verify_log) found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainReport {
    /// Events whose links were recomputed.
    pub events_checked: u64,
    /// The stored link of each checked stream's newest event, by stream:
    /// record them elsewhere to notice a stream cut short later.
    pub heads: BTreeMap<String, EventHash>,
    /// The first broken link in log order, if any.
    pub first_break: Option<ChainBreak>,
}

impl ChainReport {
    /// Whether every link verified.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// The stored columns of one event that its digest covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredEvent<'a> {
    pub(crate) event_id: Uuid,
    pub(crate) stream_id: &'a str,
    pub(crate) version: u64,
    pub(crate) event_type: &'a str,
    pub(crate) schema_version: u32,
    pub(crate) payload: &'a str,
    pub(crate) tenant_id: Option<&'a str>,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) actor: Option<&'a str>,
    pub(crate) trace_context: Option<&'a str>,
    pub(crate) headers: &'a str,
    pub(crate) recorded_at_micros: i64,
}

impl StoredEvent<'_> {
    /// SHA-256 over the encoded columns (see the module documentation).
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.event_id.as_bytes());
        text(&mut hasher, Some(self.stream_id));
        hasher.update(
            i64::try_from(self.version)
                .unwrap_or(i64::MAX)
                .to_be_bytes(),
        );
        text(&mut hasher, Some(self.event_type));
        hasher.update(
            i32::try_from(self.schema_version)
                .unwrap_or(i32::MAX)
                .to_be_bytes(),
        );
        text(&mut hasher, Some(self.payload));
        text(&mut hasher, self.tenant_id);
        optional_uuid(&mut hasher, self.correlation_id);
        optional_uuid(&mut hasher, self.causation_id);
        text(&mut hasher, self.actor);
        text(&mut hasher, self.trace_context);
        text(&mut hasher, Some(self.headers));
        hasher.update(self.recorded_at_micros.to_be_bytes());
        hasher.finalize().into()
    }
}

fn text(hasher: &mut Sha256, value: Option<&str>) {
    match value {
        Some(value) => {
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
        None => hasher.update([0xff; 8]),
    }
}

fn optional_uuid(hasher: &mut Sha256, value: Option<Uuid>) {
    match value {
        Some(value) => {
            hasher.update([1]);
            hasher.update(value.as_bytes());
        }
        None => hasher.update([0]),
    }
}

/// Verifies links row by row for the backends that check in Rust. Feed it
/// every event of the streams being checked, each stream in version order
/// (streams may interleave).
#[derive(Debug, Default)]
pub(crate) struct ChainVerifier {
    /// Per stream: the last version seen and its stored link.
    last: BTreeMap<String, (u64, Option<EventHash>)>,
    events_checked: u64,
    /// The first break so far and its log position, to report the earliest.
    first_break: Option<(u64, ChainBreak)>,
}

impl ChainVerifier {
    /// Checks one event's stored link against its predecessor's.
    pub(crate) fn check(
        &mut self,
        position: u64,
        event: &StoredEvent<'_>,
        found: Option<EventHash>,
    ) {
        self.events_checked += 1;
        let previous = match self.last.get(event.stream_id) {
            Some((_, Some(link))) => *link,
            // A predecessor without a hash was reported itself; chain on
            // from the start so that one bad row is not reported twice.
            Some((_, None)) | None => EventHash::GENESIS,
        };
        let expected = previous.next(&event.digest());
        if found != Some(expected)
            && self
                .first_break
                .as_ref()
                .is_none_or(|(earliest, _)| position < *earliest)
        {
            self.first_break = Some((
                position,
                ChainBreak {
                    stream_id: event.stream_id.to_owned(),
                    version: event.version,
                    expected,
                    found,
                },
            ));
        }
        self.last
            .insert(event.stream_id.to_owned(), (event.version, found));
    }

    /// The report over everything checked.
    pub(crate) fn finish(self) -> ChainReport {
        ChainReport {
            events_checked: self.events_checked,
            heads: self
                .last
                .into_iter()
                .filter_map(|(stream, (_, link))| Some((stream, link?)))
                .collect(),
            first_break: self.first_break.map(|(_, broken)| broken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(stream_id: &'a str, version: u64, payload: &'a str) -> StoredEvent<'a> {
        StoredEvent {
            event_id: Uuid::from_u128(u128::from(version)),
            stream_id,
            version,
            event_type: "t",
            schema_version: 1,
            payload,
            tenant_id: None,
            correlation_id: None,
            causation_id: None,
            actor: Some("ada"),
            trace_context: None,
            headers: "{}",
            recorded_at_micros: 1,
        }
    }

    #[test]
    fn every_column_changes_the_digest_and_null_differs_from_empty() {
        let base = event("s", 1, "{}");
        let mut empty_actor = base;
        empty_actor.actor = Some("");
        let mut no_actor = base;
        no_actor.actor = None;
        let mut later = base;
        later.recorded_at_micros = 2;
        let digests =
            [base, empty_actor, no_actor, later, event("s", 1, "{ }")].map(|event| event.digest());
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn the_verifier_names_the_first_break_in_log_order() {
        let one = event("s", 1, "{}");
        let two = event("s", 2, "{}");
        let h1 = EventHash::GENESIS.next(&one.digest());
        let h2 = h1.next(&two.digest());
        let mut intact = ChainVerifier::default();
        intact.check(1, &one, Some(h1));
        intact.check(2, &two, Some(h2));
        let report = intact.finish();
        assert!(report.is_intact());
        assert_eq!(report.heads.get("s"), Some(&h2));

        let tampered = event("s", 2, "{\"x\":1}");
        let mut broken = ChainVerifier::default();
        broken.check(5, &event("t", 1, "{}"), None);
        broken.check(1, &one, Some(h1));
        broken.check(2, &tampered, Some(h2));
        let report = broken.finish();
        let first = report.first_break.expect("a break");
        assert_eq!((first.stream_id.as_str(), first.version), ("s", 2));
        assert_eq!(first.found, Some(h2));
        assert_eq!(first.expected, h1.next(&tampered.digest()));
        assert!(
            first
                .to_string()
                .starts_with("stream s version 2: expected hash ")
        );
    }
}
