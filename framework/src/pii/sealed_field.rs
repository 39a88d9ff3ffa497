//! The encrypted form of one personal-data field in a stored payload:
//! `{"annals_pii": "v1:<base64 of nonce and ciphertext>"}`, sealed with
//! AES-256-GCM under the subject's key and bound to the event id, the field
//! and the subject.

use aes_gcm::aead::{Aead, Generate, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The key of the envelope object that replaces a field's value.
pub(crate) const ENVELOPE_KEY: &str = "annals_pii";
/// The prefix of this format's sealed text.
const VERSION_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

fn associated_data(event_id: Uuid, field: &str, subject: &str) -> String {
    format!("annals-pii:v1:{event_id}:{field}:{subject}")
}

/// Whether a payload's JSON text may hold sealed fields (a cheap pre-check).
pub(crate) fn may_hold_sealed_fields(json: &str) -> bool {
    json.contains("\"annals_pii\"")
}

/// The subject a payload names in `subject_key`: a string as it is, a number
/// as its JSON text.
pub(crate) fn subject_of(payload: &Map<String, Value>, subject_key: &str) -> Option<String> {
    match payload.get(subject_key)? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The sealed text of a field value, if it is an envelope.
pub(crate) fn sealed_text(value: &Value) -> Option<&str> {
    match value {
        Value::Object(object) if object.len() == 1 => object.get(ENVELOPE_KEY)?.as_str(),
        _ => None,
    }
}

/// Seals a field's value into its envelope.
pub(crate) fn seal(
    key: &Aes256Gcm,
    event_id: Uuid,
    field: &str,
    subject: &str,
    value: &Value,
) -> Option<Value> {
    let plaintext = serde_json::to_vec(value).ok()?;
    let nonce = Nonce::generate();
    let aad = associated_data(event_id, field, subject);
    let sealed = key
        .encrypt(
            &nonce,
            AeadPayload {
                msg: &plaintext,
                aad: aad.as_bytes(),
            },
        )
        .ok()?;
    let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
    bytes.extend_from_slice(nonce.as_slice());
    bytes.extend_from_slice(&sealed);
    let mut envelope = Map::new();
    envelope.insert(
        ENVELOPE_KEY.to_owned(),
        Value::String(format!("{VERSION_PREFIX}{}", BASE64.encode(bytes))),
    );
    Some(Value::Object(envelope))
}

/// Opens a sealed text back into the field's value, or says why not.
pub(crate) fn open(
    key: &Aes256Gcm,
    event_id: Uuid,
    field: &str,
    subject: &str,
    text: &str,
) -> Result<Value, &'static str> {
    let encoded = text
        .strip_prefix(VERSION_PREFIX)
        .ok_or("unknown envelope version")?;
    let bytes = BASE64
        .decode(encoded)
        .map_err(|_| "the envelope is not base64")?;
    if bytes.len() < NONCE_LEN {
        return Err("the envelope is too short");
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| "bad nonce")?;
    let aad = associated_data(event_id, field, subject);
    let plaintext = key
        .decrypt(
            &nonce,
            AeadPayload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .map_err(
            |_| "authentication failed: the ciphertext, event id, field or subject was altered",
        )?;
    serde_json::from_slice(&plaintext).map_err(|_| "the decrypted value is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::KeyInit;

    #[test]
    fn a_sealed_value_opens_only_in_its_place() {
        let key = Aes256Gcm::new_from_slice(&[3u8; 32]).expect("32 bytes");
        let id = Uuid::now_v7();
        let value = Value::from("ada@example.test");
        let envelope = seal(&key, id, "email", "u1", &value).expect("seals");
        assert!(!envelope.to_string().contains("ada@"));
        let text = sealed_text(&envelope).expect("an envelope");
        assert_eq!(open(&key, id, "email", "u1", text), Ok(value));
        assert!(open(&key, id, "name", "u1", text).is_err());
        assert!(open(&key, id, "email", "u2", text).is_err());
        assert!(open(&key, Uuid::now_v7(), "email", "u1", text).is_err());
    }
}
