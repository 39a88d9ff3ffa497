//! Tamper evidence: every stored event carries a link chained to the
//! previous event of its stream, and [`EventStore::verify_stream`] /
//! [`EventStore::verify_log`] report the first broken link.
//!
//! The chain is computed over the bytes the backend stores:
//!
//! ```text
//! link(stream, 0) = 32 zero bytes
//! link(stream, v) = SHA-256(link(stream, v - 1) || digest(event v))             unkeyed
//!                 | HMAC-SHA-256(key, link(stream, v - 1) || digest(event v))   keyed
//! digest(event)   = SHA-256(event_id || text(stream_id) || int8(version)
//!                   || text(event_type) || int4(schema_version) || text(payload)
//!                   || text(tenant_id) || uuid?(correlation_id) || uuid?(causation_id)
//!                   || text(actor) || text(trace_context) || text(headers)
//!                   || int8(recorded_at in microseconds since the Unix epoch)
//!                   || int8(position) || int8(commit))
//! ```
//!
//! where `int8`/`int4` are big-endian, `event_id` is its 16 bytes,
//! `text(s)` is the UTF-8 length as `int8` followed by the bytes (eight
//! `0xff` bytes for NULL) and `uuid?(u)` is `0x00` for NULL or `0x01`
//! followed by the 16 bytes. `commit` is PostgreSQL's `transaction_id` or
//! SQLite's `commit_id`: with `position`, what orders the log, so moving an
//! event in the log breaks its link. `payload` and `headers` are the JSON
//! text as stored: verbatim on SQLite and in memory, PostgreSQL's `jsonb`
//! text on PostgreSQL (which computes the links itself, in the append
//! statement, so the hash covers exactly what it keeps). Each row stores
//! how its link was made in `chain_key`: the key's id, `0` for unkeyed, and
//! `NULL` for links written before the digest covered position and commit
//! (the same format without the last two fields).
//!
//! # What it detects, and what it cannot
//!
//! Without keys the chain is a checksum anyone can recompute: it detects
//! rows written past Annals (they have no link), and accidental or careless
//! edits, deletions and reorderings. Someone who can write the tables (the
//! application's own database role, say) can append a fabricated event with
//! a correct unkeyed link.
//!
//! With [`ChainKeys`] (given to the store builder; the secret stays in the
//! application, never in the database) links are HMAC-SHA-256, and
//! verification, done in the application with the keys, reports:
//!
//! - an event appended by anyone without the key: its link is unkeyed
//!   ([`BreakReason::Unkeyed`]), missing, or does not match;
//! - any stored column of an event changed, including its position or its
//!   commit (transaction id): [`BreakReason::LinkMismatch`];
//! - an event removed from the middle of a stream: the next link no longer
//!   matches;
//! - a link made with a key the store does not hold, or a changed key id
//!   ([`BreakReason::UnknownKey`]).
//!
//! It cannot detect:
//!
//! - a stream's newest events removed, or a whole stream removed: the
//!   rest of the chain is intact. Keep [`ChainReport::heads`] elsewhere (an
//!   audit system, a signed report) and compare;
//! - anything done by whoever holds the key, which includes the
//!   application process itself: the key proves which writes came through
//!   Annals, not that they were right;
//! - the database rolled back to an earlier state as a whole (a restored
//!   backup), for the same reason as a truncation.
//!
//! The key's HMAC pads travel to PostgreSQL as parameters of the append
//! statement (PostgreSQL computes the link, over the bytes it stores). The
//! application role cannot read another session's parameters, but a server
//! that logs statements with their parameters writes them to its log: keep
//! `log_parameter_max_length = 0` (or statement logging off) for the
//! application role.
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
//! assert!(whole_log.head("user-1").is_some());
//! # Ok(())
//! # }
//! ```
//!
//! [`EventStore::verify_stream`]: crate::store::EventStore::verify_stream
//! [`EventStore::verify_log`]: crate::store::EventStore::verify_log

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};

/// How many events a verification checks between progress reports.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const VERIFY_PROGRESS_EVERY: u64 = 1000;

/// The link of one event in its stream's chain: SHA-256, or HMAC-SHA-256
/// when the store signs with a [`ChainKey`].
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

    /// The unkeyed link that follows `self` for an event with this digest.
    pub(crate) fn next(&self, digest: &[u8; 32]) -> EventHash {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(digest);
        EventHash(hasher.finalize().into())
    }

    /// The link that follows `self` in `format`: unkeyed, or keyed with
    /// `key` (which the caller looked up for a keyed format).
    pub(crate) fn next_in(&self, digest: &[u8; 32], key: Option<&ChainKey>) -> EventHash {
        match key {
            None => self.next(digest),
            Some(key) => {
                let mut mac = key.mac();
                mac.update(&self.0);
                mac.update(digest);
                EventHash(mac.finalize().into_bytes().into())
            }
        }
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

/// A secret that keys the links of a store's hash chain (HMAC-SHA-256), so
/// that whoever can write to the database but does not hold the key cannot
/// make a link that verifies.
///
/// Each key has an id (1 to 32767), stored with every link it made, so that
/// keys can be rotated: sign with the new key, keep the old one in the
/// [`ChainKeys`] to verify what it signed. Keep the secret out of the
/// database (an environment variable, a secret manager); `Debug` does not
/// print it.
///
/// ```
/// use annals::hash_chain::{ChainKey, ChainKeys};
///
/// let key = ChainKey::from_hex(1, &"2a".repeat(32))?;
/// assert_eq!(key.id(), 1);
/// assert!(!format!("{key:?}").contains("2a2a"));
/// let keys = ChainKeys::new(key).with_retired(ChainKey::new(2, [7; 32])?)?;
/// assert_eq!(keys.signing().id(), 1);
/// assert!(ChainKey::new(0, [7; 32]).is_err());
/// # Ok::<(), annals::Error>(())
/// ```
#[derive(Clone)]
pub struct ChainKey {
    id: u16,
    secret: [u8; 32],
}

impl ChainKey {
    /// The largest key id: ids are stored as PostgreSQL `smallint`.
    pub const MAX_ID: u16 = i16::MAX as u16;

    /// A key from its id (1 to [`MAX_ID`](Self::MAX_ID); 0 marks unkeyed
    /// links) and 32 secret bytes.
    pub fn new(id: u16, secret: [u8; 32]) -> Result<Self> {
        if id == 0 || id > Self::MAX_ID {
            return Err(Error::Config(format!(
                "hash chain key id {id} is out of range: use 1 to {}",
                Self::MAX_ID
            )));
        }
        Ok(ChainKey { id, secret })
    }

    /// A key from its id and 64 hexadecimal digits (32 bytes), as kept in
    /// an environment variable or a secret manager.
    pub fn from_hex(id: u16, secret: &str) -> Result<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(secret.trim(), &mut bytes).map_err(|error| {
            Error::Config(format!(
                "hash chain key {id} must be 64 hexadecimal digits (32 bytes): {error}"
            ))
        })?;
        ChainKey::new(id, bytes)
    }

    /// The id stored with every link this key made.
    pub fn id(&self) -> u16 {
        self.id
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; 32 bytes cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts a 32-byte key"))
    }

    /// HMAC's inner and outer padded keys: the PostgreSQL append computes
    /// `SHA-256(outer || SHA-256(inner || message))` with them, which is
    /// HMAC-SHA-256 (RFC 2104) for a key no longer than SHA-256's 64-byte
    /// block.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn pads(&self) -> ([u8; 64], [u8; 64]) {
        let mut inner = [0x36u8; 64];
        let mut outer = [0x5cu8; 64];
        for (index, byte) in self.secret.iter().enumerate() {
            inner[index] ^= byte;
            outer[index] ^= byte;
        }
        (inner, outer)
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The keys of a store's hash chain: the one new links are signed with,
/// and retired ones that only verify the links they made.
///
/// A store given keys verifies strictly: an unkeyed link (made before the
/// store had keys, or by anyone who can write rows) and a link made with a
/// key it does not hold are breaks. To bring an existing log under a key,
/// or to stop relying on a retired key, re-sign it once as the owner:
/// [`PostgresEventStore::resign_chain`](crate::store::PostgresEventStore::resign_chain),
/// [`SqliteEventStore::resign_chain`](crate::store::SqliteEventStore::resign_chain).
#[derive(Clone, Debug)]
pub struct ChainKeys {
    signing: ChainKey,
    retired: Vec<ChainKey>,
}

impl ChainKeys {
    /// Keys that sign with `signing`.
    pub fn new(signing: ChainKey) -> Self {
        ChainKeys {
            signing,
            retired: Vec::new(),
        }
    }

    /// Also verifies the links `key` made. Two keys may not share an id.
    pub fn with_retired(mut self, key: ChainKey) -> Result<Self> {
        if self.get(key.id).is_some() {
            return Err(Error::Config(format!(
                "two hash chain keys have id {}: give each key its own id",
                key.id
            )));
        }
        self.retired.push(key);
        Ok(self)
    }

    /// The key new links are signed with.
    pub fn signing(&self) -> &ChainKey {
        &self.signing
    }

    /// The key with this id, signing or retired.
    pub(crate) fn get(&self, id: u16) -> Option<&ChainKey> {
        std::iter::once(&self.signing)
            .chain(&self.retired)
            .find(|key| key.id == id)
    }
}

/// How a stored link was made: the event table's `chain_key` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkFormat {
    /// `NULL`: written before links covered the log position (SHA-256 over
    /// the digest without position and commit).
    Legacy,
    /// `0`: SHA-256 over the whole digest.
    Unkeyed,
    /// `n`: HMAC-SHA-256 with key `n` over the whole digest (a stored
    /// negative number reads as an id above [`ChainKey::MAX_ID`], which no
    /// key has).
    Keyed(u16),
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl LinkFormat {
    /// The format a `chain_key` column value says.
    pub(crate) fn from_column(value: Option<i64>) -> Self {
        match value {
            None => LinkFormat::Legacy,
            Some(0) => LinkFormat::Unkeyed,
            Some(id) => LinkFormat::Keyed(u16::try_from(id).unwrap_or(u16::MAX)),
        }
    }

    /// The format new links get from a store with these keys.
    pub(crate) fn signing(keys: Option<&ChainKeys>) -> Self {
        keys.map_or(LinkFormat::Unkeyed, |keys| {
            LinkFormat::Keyed(keys.signing.id)
        })
    }

    /// The `chain_key` column value for this format.
    pub(crate) fn column(self) -> Option<i16> {
        match self {
            LinkFormat::Legacy => None,
            LinkFormat::Unkeyed => Some(0),
            LinkFormat::Keyed(id) => Some(i16::try_from(id).unwrap_or(-1)),
        }
    }
}

/// Why a link did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakReason {
    /// The stored link differs from the one the stored columns give: the
    /// event, its position or a predecessor was changed, or a predecessor
    /// was removed.
    LinkMismatch,
    /// The row has no link: it was not written by Annals.
    MissingLink,
    /// The store verifies with keys and this link is unkeyed: anyone able to
    /// write rows could have made it.
    Unkeyed,
    /// The link was made with a key this store was not given (or the key id
    /// column was changed).
    UnknownKey {
        /// The key id stored with the link.
        key_id: u16,
    },
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakReason::LinkMismatch => f.write_str("the stored link does not match"),
            BreakReason::MissingLink => f.write_str("the row has no link"),
            BreakReason::Unkeyed => f.write_str("the link is not keyed"),
            BreakReason::UnknownKey { key_id } => {
                write!(
                    f,
                    "the link was made with key {key_id}, which this store does not hold"
                )
            }
        }
    }
}

/// A stream as a chain report names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainStream {
    /// Its tenant (stream ids belong to their tenant on every backend);
    /// `None` for a stream without a tenant.
    pub tenant_id: Option<String>,
    /// Its id.
    pub stream_id: String,
}

impl ChainStream {
    /// The key of `event`'s stream: its tenant and id.
    fn of(event: &StoredEvent<'_>) -> Self {
        ChainStream {
            tenant_id: event
                .tenant_id
                .filter(|tenant| !tenant.is_empty())
                .map(str::to_owned),
            stream_id: event.stream_id.to_owned(),
        }
    }
}

impl fmt::Display for ChainStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.stream_id)?;
        match &self.tenant_id {
            Some(tenant) => write!(f, " of tenant {tenant:?}"),
            None => Ok(()),
        }
    }
}

/// The first link of a chain that does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The tenant of the stream, where stream ids belong to their tenant
    /// (see [`ChainStream::tenant_id`]).
    pub tenant_id: Option<String>,
    /// The stream of the event whose link is wrong.
    pub stream_id: String,
    /// Its version.
    pub version: u64,
    /// Why it does not verify.
    pub reason: BreakReason,
    /// The link its stored bytes and its predecessor's stored link give
    /// ([`EventHash::GENESIS`] when the key it names is unknown).
    pub expected: EventHash,
    /// The link stored with it (`None`: the row has no hash, so it was not
    /// written by Annals).
    pub found: Option<EventHash>,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = ChainStream {
            tenant_id: self.tenant_id.clone(),
            stream_id: self.stream_id.clone(),
        };
        write!(
            f,
            "{stream} version {}: {}: expected hash {}, found ",
            self.version, self.reason, self.expected
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
    pub heads: BTreeMap<ChainStream, EventHash>,
    /// The first broken link in log order, if any.
    pub first_break: Option<ChainBreak>,
}

impl ChainReport {
    /// Whether every link verified.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// The head of the stream with this id, when exactly one checked stream
    /// has it (on a tenant handle: its tenant's stream).
    pub fn head(&self, stream_id: &str) -> Option<&EventHash> {
        let mut heads = self
            .heads
            .iter()
            .filter(|(stream, _)| stream.stream_id == stream_id)
            .map(|(_, head)| head);
        let head = heads.next()?;
        heads.next().is_none().then_some(head)
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
    /// Its position in the log (PostgreSQL's `position`, SQLite's).
    pub(crate) position: u64,
    /// Its commit: PostgreSQL's `transaction_id`, SQLite's `commit_id`.
    pub(crate) commit_id: u64,
}

impl StoredEvent<'_> {
    /// SHA-256 over the encoded columns (see the module documentation);
    /// position and commit are left out of the legacy format.
    pub(crate) fn digest(&self, format: LinkFormat) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.event_id.as_bytes());
        text(&mut hasher, Some(self.stream_id));
        hasher.update(int8(self.version));
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
        if format != LinkFormat::Legacy {
            hasher.update(int8(self.position));
            hasher.update(int8(self.commit_id));
        }
        hasher.finalize().into()
    }
}

/// A number as PostgreSQL's `int8send` writes it.
fn int8(value: u64) -> [u8; 8] {
    i64::try_from(value).unwrap_or(i64::MAX).to_be_bytes()
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

/// Links new events in the format a store signs with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChainSigner<'a> {
    keys: Option<&'a ChainKeys>,
}

impl<'a> ChainSigner<'a> {
    pub(crate) fn new(keys: Option<&'a ChainKeys>) -> Self {
        ChainSigner { keys }
    }

    /// The format of the links this signer makes.
    pub(crate) fn format(&self) -> LinkFormat {
        LinkFormat::signing(self.keys)
    }

    /// The link after `previous` for `event`.
    pub(crate) fn link(&self, previous: &EventHash, event: &StoredEvent<'_>) -> EventHash {
        previous.next_in(
            &event.digest(self.format()),
            self.keys.map(ChainKeys::signing),
        )
    }
}

/// New links for a whole log, signed with one key: fed every event, each
/// stream in version order, as [`ChainVerifier`] is.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct ChainResigner<'a> {
    signer: ChainSigner<'a>,
    heads: BTreeMap<ChainStream, EventHash>,
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl<'a> ChainResigner<'a> {
    /// Links signed with `keys`'s signing key, or unkeyed without keys.
    pub(crate) fn new(keys: Option<&'a ChainKeys>) -> Self {
        ChainResigner {
            signer: ChainSigner::new(keys),
            heads: BTreeMap::new(),
        }
    }

    /// The `chain_key` column of the new links.
    pub(crate) fn key_column(&self) -> Option<i16> {
        self.signer.format().column()
    }

    /// `event`'s new link, chained to its stream's previous new link.
    pub(crate) fn link(&mut self, event: &StoredEvent<'_>) -> EventHash {
        let stream = ChainStream::of(event);
        let previous = self
            .heads
            .get(&stream)
            .copied()
            .unwrap_or(EventHash::GENESIS);
        let link = self.signer.link(&previous, event);
        self.heads.insert(stream, link);
        link
    }
}

/// Verifies links row by row. Feed it every event of the streams being
/// checked, each stream in version order (streams may interleave).
#[derive(Debug, Default)]
pub(crate) struct ChainVerifier {
    /// The keys links must be made with; `None` accepts unkeyed links.
    keys: Option<ChainKeys>,
    /// Whether unkeyed links that match are accepted even with keys (when
    /// re-signing a log that predates them).
    accept_unkeyed: bool,
    /// Per stream: the last version seen and its stored link.
    last: BTreeMap<ChainStream, (u64, Option<EventHash>)>,
    events_checked: u64,
    /// The first break so far and its log position, to report the earliest.
    first_break: Option<(u64, ChainBreak)>,
}

impl ChainVerifier {
    /// A verifier that requires links keyed with `keys`, or, without keys,
    /// accepts unkeyed links (and reports keyed ones as unverifiable).
    pub(crate) fn new(keys: Option<&ChainKeys>) -> Self {
        ChainVerifier {
            keys: keys.cloned(),
            ..ChainVerifier::default()
        }
    }

    /// A verifier that checks keyed links with `keys` and unkeyed links as
    /// they are: the check before re-signing a log.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn accepting_unkeyed(keys: &ChainKeys) -> Self {
        ChainVerifier {
            accept_unkeyed: true,
            ..ChainVerifier::new(Some(keys))
        }
    }

    /// Checks one event's stored link, made in `format`, against its
    /// predecessor's. `position` orders breaks (the earliest is reported).
    pub(crate) fn check(
        &mut self,
        position: u64,
        event: &StoredEvent<'_>,
        found: Option<EventHash>,
        format: LinkFormat,
    ) {
        self.events_checked += 1;
        let stream = ChainStream::of(event);
        let previous = match self.last.get(&stream) {
            Some((_, Some(link))) => *link,
            // A predecessor without a hash was reported itself; chain on
            // from the start so that one bad row is not reported twice.
            Some((_, None)) | None => EventHash::GENESIS,
        };
        let digest = event.digest(format);
        let (expected, mut reason) = match (format, &self.keys) {
            (LinkFormat::Legacy | LinkFormat::Unkeyed, keys) => (
                previous.next(&digest),
                keys.as_ref()
                    .filter(|_| !self.accept_unkeyed)
                    .map(|_| BreakReason::Unkeyed),
            ),
            (LinkFormat::Keyed(key_id), keys) => {
                match keys.as_ref().and_then(|keys| keys.get(key_id)) {
                    Some(key) => (previous.next_in(&digest, Some(key)), None),
                    None => (EventHash::GENESIS, Some(BreakReason::UnknownKey { key_id })),
                }
            }
        };
        if reason.is_none() && found != Some(expected) {
            reason = Some(if found.is_some() {
                BreakReason::LinkMismatch
            } else {
                BreakReason::MissingLink
            });
        }
        if found.is_none() {
            reason = Some(BreakReason::MissingLink);
        }
        if let Some(reason) = reason
            && self
                .first_break
                .as_ref()
                .is_none_or(|(earliest, _)| position < *earliest)
        {
            self.first_break = Some((
                position,
                ChainBreak {
                    tenant_id: stream.tenant_id.clone(),
                    stream_id: event.stream_id.to_owned(),
                    version: event.version,
                    reason,
                    expected,
                    found,
                },
            ));
        }
        self.last.insert(stream, (event.version, found));
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
            position: version,
            commit_id: version,
        }
    }

    fn key(id: u16, byte: u8) -> ChainKey {
        ChainKey::new(id, [byte; 32]).expect("a valid key")
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
        let mut moved = base;
        moved.position = 2;
        let mut recommitted = base;
        recommitted.commit_id = 2;
        let digests = [
            base,
            empty_actor,
            no_actor,
            later,
            moved,
            recommitted,
            event("s", 1, "{ }"),
        ]
        .map(|event| event.digest(LinkFormat::Unkeyed));
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The legacy format leaves position and commit out.
        assert_eq!(
            base.digest(LinkFormat::Legacy),
            moved.digest(LinkFormat::Legacy)
        );
    }

    #[test]
    fn keyed_links_are_rfc_2104_hmac_and_the_pads_give_the_same() {
        // RFC 4231 test case 2 has a short key; this checks the pads the
        // PostgreSQL append uses against the `hmac` crate instead.
        let key = key(1, 0x0b);
        let digest = [9u8; 32];
        let keyed = EventHash::GENESIS.next_in(&digest, Some(&key));
        let (inner, outer) = key.pads();
        let inner_hash: [u8; 32] = Sha256::new()
            .chain_update(inner)
            .chain_update(EventHash::GENESIS.as_bytes())
            .chain_update(digest)
            .finalize()
            .into();
        let by_pads: [u8; 32] = Sha256::new()
            .chain_update(outer)
            .chain_update(inner_hash)
            .finalize()
            .into();
        assert_eq!(keyed.as_bytes(), &by_pads);
        assert_ne!(keyed, EventHash::GENESIS.next(&digest));
        assert_ne!(
            keyed,
            EventHash::GENESIS.next_in(&digest, Some(&self::key(1, 0x0c)))
        );
    }

    #[test]
    fn keys_refuse_id_zero_and_duplicates_and_bad_hex() {
        assert!(ChainKey::new(0, [1; 32]).is_err());
        assert!(ChainKey::new(ChainKey::MAX_ID + 1, [1; 32]).is_err());
        assert!(ChainKey::from_hex(1, "abc").is_err());
        assert!(ChainKeys::new(key(1, 1)).with_retired(key(1, 2)).is_err());
        let keys = ChainKeys::new(key(1, 1))
            .with_retired(key(2, 2))
            .expect("distinct ids");
        assert_eq!(keys.get(2).map(ChainKey::id), Some(2));
        assert!(keys.get(3).is_none());
    }

    #[test]
    fn the_verifier_names_the_first_break_in_log_order() {
        let format = LinkFormat::Unkeyed;
        let one = event("s", 1, "{}");
        let two = event("s", 2, "{}");
        let h1 = EventHash::GENESIS.next(&one.digest(format));
        let h2 = h1.next(&two.digest(format));
        let mut intact = ChainVerifier::default();
        intact.check(1, &one, Some(h1), format);
        intact.check(2, &two, Some(h2), format);
        let report = intact.finish();
        assert!(report.is_intact());
        assert_eq!(report.head("s"), Some(&h2));

        let tampered = event("s", 2, "{\"x\":1}");
        let mut broken = ChainVerifier::default();
        broken.check(5, &event("t", 1, "{}"), None, format);
        broken.check(1, &one, Some(h1), format);
        broken.check(2, &tampered, Some(h2), format);
        let report = broken.finish();
        let first = report.first_break.expect("a break");
        assert_eq!((first.stream_id.as_str(), first.version), ("s", 2));
        assert_eq!(first.reason, BreakReason::LinkMismatch);
        assert_eq!(first.found, Some(h2));
        assert_eq!(first.expected, h1.next(&tampered.digest(format)));
        assert!(
            first
                .to_string()
                .starts_with("stream s version 2: the stored link does not match: expected hash ")
        );
    }

    #[test]
    fn a_keyed_verifier_refuses_unkeyed_and_unknown_keyed_links() {
        let keys = ChainKeys::new(key(1, 1));
        let one = event("s", 1, "{}");
        let signed = ChainSigner::new(Some(&keys)).link(&EventHash::GENESIS, &one);
        let mut verifier = ChainVerifier::new(Some(&keys));
        verifier.check(1, &one, Some(signed), LinkFormat::Keyed(1));
        assert!(verifier.finish().is_intact());

        let unkeyed = ChainSigner::new(None).link(&EventHash::GENESIS, &one);
        let mut verifier = ChainVerifier::new(Some(&keys));
        verifier.check(1, &one, Some(unkeyed), LinkFormat::Unkeyed);
        let report = verifier.finish();
        assert_eq!(
            report.first_break.map(|broken| broken.reason),
            Some(BreakReason::Unkeyed)
        );

        // Without the key, a keyed link cannot be checked, so it is not
        // reported as intact; a forged key id is just as unknown.
        for (verifier_keys, format) in [
            (None, LinkFormat::Keyed(1)),
            (Some(&keys), LinkFormat::Keyed(9)),
        ] {
            let mut verifier = ChainVerifier::new(verifier_keys);
            verifier.check(1, &one, Some(signed), format);
            let LinkFormat::Keyed(key_id) = format else {
                unreachable!()
            };
            assert_eq!(
                verifier.finish().first_break.map(|broken| broken.reason),
                Some(BreakReason::UnknownKey { key_id })
            );
        }
        assert_eq!(
            LinkFormat::from_column(Some(-3)),
            LinkFormat::Keyed(u16::MAX)
        );
    }
}
