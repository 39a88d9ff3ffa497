//! The encrypted form of one personal-data field in a stored payload:
//! `{"annals_pii": "v1:<base64 of nonce and ciphertext>"}`, sealed with
//! AES-256-GCM under the subject's key and bound to the event id, the field
//! and the subject.

use aes_gcm::aead::{Aead, AeadInOut, Generate, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The key of the envelope object that replaces a field's value.
pub(crate) const ENVELOPE_KEY: &str = "annals_pii";
/// The prefix of this format's sealed text.
const VERSION_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// `annals-pii:v1:{event_id}:{field}:{subject}`, written without the
/// formatting machinery (it was a third of opening a field).
fn associated_data(event_id: Uuid, field: &str, subject: &str) -> String {
    const PREFIX: &str = "annals-pii:v1:";
    let mut id = Uuid::encode_buffer();
    let id = event_id.hyphenated().encode_lower(&mut id);
    let mut data = String::with_capacity(PREFIX.len() + id.len() + field.len() + subject.len() + 2);
    data.push_str(PREFIX);
    data.push_str(id);
    data.push(':');
    data.push_str(field);
    data.push(':');
    data.push_str(subject);
    data
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

/// Opens a sealed text back into the field's value, as JSON text, or says
/// why not.
pub(crate) fn open(
    key: &Aes256Gcm,
    event_id: Uuid,
    field: &str,
    subject: &str,
    text: &str,
) -> Result<String, &'static str> {
    let encoded = text
        .strip_prefix(VERSION_PREFIX)
        .ok_or("unknown envelope version")?;
    // Nonce, ciphertext, tag; opened where it was decoded.
    let mut bytes = BASE64
        .decode(encoded)
        .map_err(|_| "the envelope is not base64")?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err("the envelope is too short");
    }
    let tag_at = bytes.len() - TAG_LEN;
    let nonce = Nonce::try_from(&bytes[..NONCE_LEN]).map_err(|_| "bad nonce")?;
    let tag = Tag::try_from(&bytes[tag_at..]).map_err(|_| "bad tag")?;
    let aad = associated_data(event_id, field, subject);
    key.decrypt_inout_detached(
        &nonce,
        aad.as_bytes(),
        (&mut bytes[NONCE_LEN..tag_at]).into(),
        &tag,
    )
    .map_err(|_| "authentication failed: the ciphertext, event id, field or subject was altered")?;
    bytes.truncate(tag_at);
    bytes.drain(..NONCE_LEN);
    let json = String::from_utf8(bytes).map_err(|_| "the decrypted value is not JSON")?;
    serde_json::from_str::<&serde_json::value::RawValue>(&json)
        .map_err(|_| "the decrypted value is not JSON")?;
    Ok(json)
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
        let text = envelope[ENVELOPE_KEY].as_str().expect("an envelope");
        assert_eq!(open(&key, id, "email", "u1", text), Ok(value.to_string()));
        assert!(open(&key, id, "name", "u1", text).is_err());
        assert!(open(&key, id, "email", "u2", text).is_err());
        assert!(open(&key, Uuid::now_v7(), "email", "u1", text).is_err());
    }
}
