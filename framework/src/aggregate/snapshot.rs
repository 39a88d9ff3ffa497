//! Aggregate snapshots: the stored form ([`Snapshot`]), how state is encoded
//! (zstd, optionally AES-256-GCM: [`SnapshotCodec`]), when snapshots are
//! taken ([`SnapshotSettings`]) and which are kept ([`RetentionPolicy`]).
//!
//! A snapshot is an optimisation, never the truth: one that fails to
//! decompress, decrypt or decode, or that has another shape version, is
//! reported and skipped, and the state is rebuilt from events.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Nonce};
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::event::payload::Payload;
use crate::store::stream::StreamId;

/// Encoding flag: the data is zstd-compressed.
pub const COMPRESSED: u8 = 1;
/// Encoding flag: the data is AES-256-GCM-encrypted (a 12-byte nonce, then
/// the ciphertext and tag).
pub const ENCRYPTED: u8 = 2;

const NONCE_LEN: usize = 12;

/// A stored snapshot: a stream's encoded state at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The stream version the state reflects.
    pub version: u64,
    /// The aggregate's snapshot (shape) version when it was taken.
    pub snapshot_version: u32,
    /// [`COMPRESSED`] and/or [`ENCRYPTED`].
    pub encoding: u8,
    /// The encoded state.
    pub data: Vec<u8>,
    /// When it was taken (microsecond precision, UTC).
    pub taken_at: DateTime<Utc>,
}

/// Why a stored snapshot could not be turned back into state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotDecodeError {
    /// Encrypted, but the codec has no key.
    #[error("the snapshot is encrypted and no snapshot key is configured")]
    NoKey,
    /// The key is wrong, or the data (or the stream/version it is bound to) was altered.
    #[error("the snapshot does not decrypt: wrong key or altered data")]
    Decrypt,
    /// The zstd frame is damaged.
    #[error("the snapshot does not decompress: {0}")]
    Decompress(std::io::Error),
    /// The state would decompress to more than the codec's limit
    /// ([`SnapshotCodec::with_max_state_bytes`]): a damaged or planted
    /// frame is not expanded into memory.
    #[error("the snapshot decompresses to more than {limit} bytes, the codec's limit")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The decoded bytes are not JSON.
    #[error("the snapshot is not valid JSON: {0}")]
    Json(serde_json::Error),
}

/// Encodes aggregate state for storage: zstd compression, and AES-256-GCM
/// encryption when a key is set. The encryption binds each snapshot to its
/// stream and versions, so a snapshot copied to another stream does not
/// decrypt.
///
/// ```
/// use annals::aggregate::snapshot::SnapshotCodec;
/// use annals::{Payload, StreamId};
///
/// let codec = SnapshotCodec::new().with_key(&[7u8; 32])?;
/// let stream = StreamId::new("user-1")?;
/// let state = Payload::from_json(r#"{"email":"ada@example.test"}"#)?;
/// let (encoding, data) = codec.encode(&stream, 10, 1, &state)?;
/// assert!(!String::from_utf8_lossy(&data).contains("ada@example.test"));
/// assert_eq!(codec.decode(&stream, 10, 1, encoding, &data)?, state);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SnapshotCodec {
    level: i32,
    cipher: Option<Arc<Aes256Gcm>>,
    max_state_bytes: usize,
}

/// The largest state a snapshot decompresses to unless
/// [`SnapshotCodec::with_max_state_bytes`] says otherwise: 64 MiB.
pub const DEFAULT_MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

impl fmt::Debug for SnapshotCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCodec")
            .field("zstd_level", &self.level)
            .field("encrypted", &self.cipher.is_some())
            .field("max_state_bytes", &self.max_state_bytes)
            .finish()
    }
}

impl Default for SnapshotCodec {
    fn default() -> Self {
        SnapshotCodec::new()
    }
}

impl SnapshotCodec {
    /// zstd level 3, no encryption, states of at most
    /// [`DEFAULT_MAX_STATE_BYTES`].
    pub fn new() -> Self {
        SnapshotCodec {
            level: 3,
            cipher: None,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
        }
    }

    /// The most bytes a stored snapshot may decompress to (at least 1).
    /// A snapshot that would expand past it is refused with
    /// [`SnapshotDecodeError::TooLarge`] after decompressing no more than
    /// the limit, and the state is rebuilt from events: a decompression
    /// bomb planted in the snapshots table costs its reader at most the
    /// limit.
    ///
    /// ```
    /// use annals::aggregate::snapshot::{SnapshotCodec, SnapshotDecodeError};
    /// use annals::{Payload, StreamId};
    ///
    /// let stream = StreamId::new("user-1")?;
    /// let big = Payload::from_json(format!("{{\"bio\":\"{}\"}}", "a".repeat(10_000)))?;
    /// let (encoding, data) = SnapshotCodec::new().encode(&stream, 1, 1, &big)?;
    /// let small = SnapshotCodec::new().with_max_state_bytes(1_000);
    /// assert!(matches!(
    ///     small.decode(&stream, 1, 1, encoding, &data),
    ///     Err(SnapshotDecodeError::TooLarge { limit: 1_000 })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_max_state_bytes(mut self, bytes: usize) -> Self {
        self.max_state_bytes = bytes.max(1);
        self
    }

    /// Sets the zstd compression level (1 fastest to 22 smallest).
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level.clamp(1, 22);
        self
    }

    /// Encrypts snapshots with AES-256-GCM under this 32-byte key. The key is
    /// never logged or shown.
    pub fn with_key(mut self, key: &[u8]) -> Result<Self> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| {
            Error::Config(format!(
                "a snapshot key must be 32 bytes (AES-256), not {}",
                key.len()
            ))
        })?;
        self.cipher = Some(Arc::new(cipher));
        Ok(self)
    }

    fn associated_data(stream: &StreamId, version: u64, snapshot_version: u32) -> String {
        format!("annals-snapshot:{stream}:{version}:{snapshot_version}")
    }

    /// Decompresses a zstd frame, reading at most one byte past the limit.
    fn decompress(&self, frame: &[u8]) -> Result<Vec<u8>, SnapshotDecodeError> {
        use std::io::Read as _;
        let limit = self.max_state_bytes;
        let decoder = zstd::stream::Decoder::new(frame).map_err(SnapshotDecodeError::Decompress)?;
        let mut state = Vec::new();
        decoder
            .take(limit as u64 + 1)
            .read_to_end(&mut state)
            .map_err(SnapshotDecodeError::Decompress)?;
        if state.len() > limit {
            return Err(SnapshotDecodeError::TooLarge { limit });
        }
        Ok(state)
    }

    /// Encodes state; returns the encoding flags and the bytes to store.
    pub fn encode(
        &self,
        stream: &StreamId,
        version: u64,
        snapshot_version: u32,
        state: &Payload,
    ) -> Result<(u8, Vec<u8>)> {
        let compressed = zstd::bulk::compress(state.as_json().as_bytes(), self.level)
            .map_err(|error| Error::invalid("snapshot", format!("cannot compress: {error}")))?;
        let Some(cipher) = &self.cipher else {
            return Ok((COMPRESSED, compressed));
        };
        let nonce = Nonce::generate();
        let aad = Self::associated_data(stream, version, snapshot_version);
        let sealed = cipher
            .encrypt(
                &nonce,
                AeadPayload {
                    msg: &compressed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::invalid("snapshot", "encryption failed"))?;
        let mut data = Vec::with_capacity(NONCE_LEN + sealed.len());
        data.extend_from_slice(nonce.as_slice());
        data.extend_from_slice(&sealed);
        Ok((COMPRESSED | ENCRYPTED, data))
    }

    /// Decodes stored bytes back into the state's JSON.
    pub fn decode(
        &self,
        stream: &StreamId,
        version: u64,
        snapshot_version: u32,
        encoding: u8,
        data: &[u8],
    ) -> Result<Payload, SnapshotDecodeError> {
        let mut bytes = std::borrow::Cow::Borrowed(data);
        if encoding & ENCRYPTED != 0 {
            let cipher = self.cipher.as_ref().ok_or(SnapshotDecodeError::NoKey)?;
            if bytes.len() < NONCE_LEN {
                return Err(SnapshotDecodeError::Decrypt);
            }
            let (nonce, sealed) = bytes.split_at(NONCE_LEN);
            let nonce = Nonce::try_from(nonce).map_err(|_| SnapshotDecodeError::Decrypt)?;
            let aad = Self::associated_data(stream, version, snapshot_version);
            let opened = cipher
                .decrypt(
                    &nonce,
                    AeadPayload {
                        msg: sealed,
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| SnapshotDecodeError::Decrypt)?;
            bytes = std::borrow::Cow::Owned(opened);
        }
        if encoding & COMPRESSED != 0 {
            bytes = std::borrow::Cow::Owned(self.decompress(&bytes)?);
        }
        let text = String::from_utf8(bytes.into_owned()).map_err(|error| {
            SnapshotDecodeError::Json(serde::de::Error::custom(format!("not UTF-8: {error}")))
        })?;
        Payload::from_json(text).map_err(SnapshotDecodeError::Json)
    }
}

/// When the repository takes snapshots, and how it encodes them.
///
/// ```
/// use annals::aggregate::snapshot::{SnapshotCodec, SnapshotSettings};
///
/// // Every 200 events whatever the aggregate declares, encrypted.
/// let settings = SnapshotSettings::new()
///     .every(200)
///     .codec(SnapshotCodec::new().with_key(&[1u8; 32])?);
/// # Ok::<(), annals::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SnapshotSettings {
    pub(crate) every: Option<u64>,
    pub(crate) codec: SnapshotCodec,
}

impl SnapshotSettings {
    /// Snapshots every `snapshot_every` events the aggregate declares (if
    /// any), compressed, not encrypted.
    pub fn new() -> Self {
        SnapshotSettings::default()
    }

    /// Overrides the aggregate's `snapshot_every` (at least 1).
    pub fn every(mut self, events: u64) -> Self {
        self.every = Some(events.max(1));
        self
    }

    /// Sets the codec (compression level, encryption key).
    pub fn codec(mut self, codec: SnapshotCodec) -> Self {
        self.codec = codec;
        self
    }
}

/// Which snapshots [`SnapshotStore::prune`]
/// deletes: those beyond the newest `keep_last` of each stream, and those
/// taken longer than `max_age` ago. Unset limits delete nothing.
///
/// ```
/// use annals::aggregate::snapshot::RetentionPolicy;
/// use std::time::Duration;
///
/// // Keep the three newest per stream, and nothing older than a week.
/// let policy = RetentionPolicy {
///     keep_last: Some(3),
///     max_age: Some(Duration::from_secs(7 * 24 * 3600)),
/// };
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many snapshots per stream (the newest).
    pub keep_last: Option<usize>,
    /// Delete snapshots older than this.
    pub max_age: Option<Duration>,
}

impl RetentionPolicy {
    /// The cut-off instant for `max_age`, if set.
    pub(crate) fn cutoff(&self) -> Option<DateTime<Utc>> {
        self.max_age
            .and_then(|age| chrono::Duration::from_std(age).ok())
            .map(|age| Utc::now() - age)
    }
}

/// Where a store keeps its aggregates' snapshots: one per stream and
/// version, in the store's schema, table prefix and (for a tenant handle)
/// tenant. Reach it through [`EventStore::snapshots`](crate::store::EventStore::snapshots);
/// the [`Repository`](crate::aggregate::repository::Repository) takes and loads
/// snapshots itself, so most code never calls it.
///
/// ```
/// use annals::prelude::*;
/// use annals::aggregate::snapshot::{RetentionPolicy, Snapshot};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::new("user-1")?;
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::json("registered", &json!({}))?]).await?;
///
/// let snapshots = store.snapshots();
/// snapshots.save(Snapshot {
///     stream_id: stream.clone(),
///     version: 1,
///     snapshot_version: 1,
///     encoding: 0,
///     data: b"{}".to_vec(),
///     taken_at: chrono::Utc::now(),
/// }).await?;
/// assert_eq!(snapshots.load(&stream, None).await?.map(|s| s.version), Some(1));
/// assert_eq!(snapshots.load(&stream, Some(0)).await?, None);
/// assert_eq!(snapshots.prune(&RetentionPolicy { keep_last: Some(1), max_age: None }).await?, 0);
/// assert_eq!(snapshots.delete_stream(&stream).await?, 1);
/// # Ok(())
/// # }
/// ```
#[async_trait::async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Stores a snapshot, replacing one of the same stream and version.
    async fn save(&self, snapshot: Snapshot) -> Result<()>;

    /// The newest snapshot of a stream with a version `<= max_version` (any
    /// version when `None`).
    async fn load(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<Snapshot>>;

    /// Deletes the snapshots the policy does not keep; returns how many.
    async fn prune(&self, policy: &RetentionPolicy) -> Result<u64>;

    /// Deletes every snapshot of a stream; returns how many. Crypto-shredding
    /// ([`PiiEventStore::forget`](crate::pii::PiiEventStore::forget)) calls it
    /// for the streams of a forgotten subject, whose snapshots may hold the
    /// subject's personal data in plaintext; the next load rebuilds from
    /// events.
    async fn delete_stream(&self, stream: &StreamId) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamId {
        StreamId::new("user-7").expect("valid")
    }

    fn state() -> Payload {
        Payload::from_serialize(
            &serde_json::json!({ "email": "grace@example.test", "roles": vec!["admin"; 50] }),
        )
        .expect("json")
    }

    #[test]
    fn compression_round_trips_and_shrinks_repetitive_state() {
        let codec = SnapshotCodec::new();
        let (encoding, data) = codec.encode(&stream(), 3, 1, &state()).expect("encode");
        assert_eq!(encoding, COMPRESSED);
        assert!(
            data.len() < state().as_json().len() / 3,
            "{} bytes",
            data.len()
        );
        assert_eq!(
            codec
                .decode(&stream(), 3, 1, encoding, &data)
                .expect("decode"),
            state()
        );
    }

    #[test]
    fn encryption_needs_the_right_key_and_binding() {
        let codec = SnapshotCodec::new().with_key(&[9u8; 32]).expect("key");
        let (encoding, data) = codec.encode(&stream(), 3, 1, &state()).expect("encode");
        assert_eq!(encoding, COMPRESSED | ENCRYPTED);
        assert!(codec.decode(&stream(), 3, 1, encoding, &data).is_ok());
        let wrong_key = SnapshotCodec::new().with_key(&[8u8; 32]).expect("key");
        assert!(matches!(
            wrong_key.decode(&stream(), 3, 1, encoding, &data),
            Err(SnapshotDecodeError::Decrypt)
        ));
        assert!(matches!(
            SnapshotCodec::new().decode(&stream(), 3, 1, encoding, &data),
            Err(SnapshotDecodeError::NoKey)
        ));
        let other = StreamId::new("user-8").expect("valid");
        assert!(matches!(
            codec.decode(&other, 3, 1, encoding, &data),
            Err(SnapshotDecodeError::Decrypt)
        ));
        assert!(matches!(
            codec.decode(&stream(), 4, 1, encoding, &data),
            Err(SnapshotDecodeError::Decrypt)
        ));
        let mut tampered = data.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            codec.decode(&stream(), 3, 1, encoding, &tampered),
            Err(SnapshotDecodeError::Decrypt)
        ));
    }

    #[test]
    fn keys_must_be_32_bytes_and_are_not_shown() {
        let error = SnapshotCodec::new()
            .with_key(&[1u8; 16])
            .expect_err("short key");
        assert!(error.to_string().contains("32 bytes"), "{error}");
        let codec = SnapshotCodec::new().with_key(&[42u8; 32]).expect("key");
        assert_eq!(
            format!("{codec:?}"),
            "SnapshotCodec { zstd_level: 3, encrypted: true, max_state_bytes: 67108864 }"
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_at_the_limit() {
        use std::io::Write as _;
        // 256 MiB of zeros in a frame of a few kilobytes.
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 19).expect("encoder");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            encoder.write_all(&zeros).expect("compress");
        }
        let bomb = encoder.finish().expect("frame");
        assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
        assert!(matches!(
            SnapshotCodec::new().decode(&stream(), 1, 1, COMPRESSED, &bomb),
            Err(SnapshotDecodeError::TooLarge {
                limit: DEFAULT_MAX_STATE_BYTES
            })
        ));
        // A state just at the limit still decodes.
        let (encoding, data) = SnapshotCodec::new()
            .encode(&stream(), 1, 1, &state())
            .expect("encode");
        let exact = state().as_json().len();
        let codec = SnapshotCodec::new().with_max_state_bytes(exact);
        assert_eq!(
            codec.decode(&stream(), 1, 1, encoding, &data).ok(),
            Some(state())
        );
        let codec = SnapshotCodec::new().with_max_state_bytes(exact - 1);
        assert!(matches!(
            codec.decode(&stream(), 1, 1, encoding, &data),
            Err(SnapshotDecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn damaged_data_is_an_error_not_a_panic() {
        let codec = SnapshotCodec::new();
        assert!(matches!(
            codec.decode(&stream(), 1, 1, COMPRESSED, b"not zstd"),
            Err(SnapshotDecodeError::Decompress(_))
        ));
        assert!(matches!(
            codec.decode(&stream(), 1, 1, 0, b"{nope"),
            Err(SnapshotDecodeError::Json(_))
        ));
    }
}
