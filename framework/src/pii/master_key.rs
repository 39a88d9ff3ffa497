//! [`MasterKey`]: the key from configuration that wraps every data subject's
//! key.

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The variable [`MasterKey::from_env`] is usually given.
pub const MASTER_KEY_VAR: &str = "ANNALS_MASTER_KEY";

const NONCE_LEN: usize = 12;

/// The AES-256 key that wraps (encrypts) every data subject's key in the
/// store. It comes from configuration, base64-encoded, and is never shown:
/// its `Debug` prints `MasterKey(..)` and no error contains it.
///
/// ```
/// use annals::pii::{MasterKey, MasterKeyError};
///
/// let key = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
/// assert_eq!(format!("{key:?}"), "MasterKey(..)");
///
/// let short = MasterKey::from_base64("AAECAw==").unwrap_err();
/// assert!(matches!(short, MasterKeyError::WrongLength { length: 4, .. }));
///
/// let missing = MasterKey::from_env("DOC_NO_SUCH_MASTER_KEY").unwrap_err();
/// assert_eq!(
///     missing.to_string(),
///     "DOC_NO_SUCH_MASTER_KEY is not set: set it to a base64-encoded 32-byte key"
/// );
/// # Ok::<(), MasterKeyError>(())
/// ```
#[derive(Clone)]
pub struct MasterKey {
    cipher: Arc<Aes256Gcm>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Why a master key could not be read. Never contains the key.
///
/// ```
/// use annals::pii::{MasterKey, MasterKeyError};
///
/// let error = MasterKey::from_base64("%%%").unwrap_err();
/// assert!(matches!(error, MasterKeyError::NotBase64 { .. }));
/// assert_eq!(error.to_string(), "the master key is not valid base64");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// The environment variable is unset or empty.
    #[error("{variable} is not set: set it to a base64-encoded 32-byte key")]
    Missing {
        /// The variable.
        variable: String,
    },
    /// The text is not standard base64.
    #[error("{origin} is not valid base64")]
    NotBase64 {
        /// Where the key came from (`the master key`, or the variable's name).
        origin: String,
    },
    /// The decoded key is not 32 bytes long.
    #[error("{origin} must decode to 32 bytes (AES-256), not {length}")]
    WrongLength {
        /// Where the key came from (`the master key`, or the variable's name).
        origin: String,
        /// How many bytes it decoded to.
        length: usize,
    },
}

impl MasterKey {
    /// A key from its base64 text (standard alphabet, padded).
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        Self::decode(text, "the master key")
    }

    /// A key from the base64 text in the environment variable `variable`
    /// (usually [`MASTER_KEY_VAR`]); errors name the variable.
    pub fn from_env(variable: &str) -> Result<Self, MasterKeyError> {
        match std::env::var(variable) {
            Ok(text) if !text.trim().is_empty() => Self::decode(&text, variable),
            _ => Err(MasterKeyError::Missing {
                variable: variable.to_owned(),
            }),
        }
    }

    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MasterKeyError> {
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| MasterKeyError::WrongLength {
            origin: "the master key".to_owned(),
            length: bytes.len(),
        })?;
        Ok(MasterKey {
            cipher: Arc::new(cipher),
        })
    }

    /// A new random key, for demos and tests: data encrypted under it is
    /// unreadable once the process forgets it.
    pub fn generate() -> Self {
        let key = Key::<Aes256Gcm>::generate();
        MasterKey {
            cipher: Arc::new(Aes256Gcm::new(&key)),
        }
    }

    fn decode(text: &str, origin: &str) -> Result<Self, MasterKeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| MasterKeyError::NotBase64 {
                origin: origin.to_owned(),
            })?;
        let cipher =
            Aes256Gcm::new_from_slice(&bytes).map_err(|_| MasterKeyError::WrongLength {
                origin: origin.to_owned(),
                length: bytes.len(),
            })?;
        Ok(MasterKey {
            cipher: Arc::new(cipher),
        })
    }

    fn associated_data(subject: &str) -> String {
        format!("annals-subject-key:v1:{subject}")
    }

    /// Wraps a subject's data key: a nonce, then the sealed key.
    pub(crate) fn wrap(&self, subject: &str, data_key: &[u8]) -> Option<Vec<u8>> {
        let nonce = Nonce::generate();
        let aad = Self::associated_data(subject);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                AeadPayload {
                    msg: data_key,
                    aad: aad.as_bytes(),
                },
            )
            .ok()?;
        let mut wrapped = Vec::with_capacity(NONCE_LEN + sealed.len());
        wrapped.extend_from_slice(nonce.as_slice());
        wrapped.extend_from_slice(&sealed);
        Some(wrapped)
    }

    /// Unwraps a subject's data key; `None` if the master key or the bytes
    /// (or the subject they are bound to) do not match.
    pub(crate) fn unwrap_key(&self, subject: &str, wrapped: &[u8]) -> Option<Aes256Gcm> {
        if wrapped.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).ok()?;
        let aad = Self::associated_data(subject);
        let key = self
            .cipher
            .decrypt(
                &nonce,
                AeadPayload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .ok()?;
        Aes256Gcm::new_from_slice(&key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_only_for_its_subject_and_master_key() {
        let master = MasterKey::generate();
        let wrapped = master.wrap("user-1", &[9u8; 32]).expect("wraps");
        assert!(master.unwrap_key("user-1", &wrapped).is_some());
        assert!(master.unwrap_key("user-2", &wrapped).is_none());
        assert!(
            MasterKey::generate()
                .unwrap_key("user-1", &wrapped)
                .is_none()
        );
    }

    #[test]
    fn errors_never_show_the_key() {
        let text = "not base64 but secret!";
        let error = MasterKey::from_base64(text).expect_err("not base64");
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
