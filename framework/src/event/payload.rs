//! Event payloads: JSON text that is known to be valid.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The JSON body of an event.
///
/// It keeps the JSON text as written (no parse into a tree on the hot path)
/// and guarantees it is valid JSON. PostgreSQL stores payloads as `jsonb`,
/// which normalises whitespace and key order, so two payloads compare equal
/// when they hold the same JSON value, whatever their spelling.
///
/// ```
/// use annals::Payload;
/// use serde_json::json;
///
/// let payload = Payload::from_serialize(&json!({ "email": "ada@example.test" }))?;
/// let spelled_differently = Payload::from_json("{ \"email\" : \"ada@example.test\" }")?;
/// assert_eq!(payload, spelled_differently);
/// assert!(Payload::from_json("{not json").is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct Payload(Box<str>);

impl Payload {
    /// Validates JSON text and keeps it.
    pub fn from_json(json: impl Into<String>) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json.into()).map(|raw| Payload(raw.into()))
    }

    /// JSON text the database has already checked (a PostgreSQL `jsonb`
    /// column cannot hold anything else), kept without parsing it again:
    /// reading the log is the hot path.
    pub(crate) fn from_checked_json(json: String) -> Self {
        Payload(json.into_boxed_str())
    }

    /// Serialises a value.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(|raw| Payload(raw.into()))
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// Deserialises into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Parses into a [`serde_json::Value`].
    pub fn to_value(&self) -> serde_json::Value {
        // The text is valid JSON (checked when the payload was built, or by
        // the database), so this parse cannot fail; fall back to `null`
        // rather than panic regardless.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// Written as the JSON it holds (not as a string of it).
impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Read from any JSON value, kept as its text.
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| Payload(raw.into()))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json() || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}
