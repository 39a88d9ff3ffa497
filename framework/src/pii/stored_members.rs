//! A stored payload read for its sealed fields without building it as a
//! JSON tree: its top-level members borrowed from the stored text, and the
//! text written back with some members replaced, every other member copied
//! as stored.
//!
//! A catch-up through [`PiiEventStore`](super::PiiEventStore) spent most of
//! its time allocating and freeing: each payload with a sealed field was
//! parsed into a map of owned keys and values and serialized back out after
//! its fields were opened.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON object's members as stored: each key (borrowed unless it has
/// escapes) and its value's text.
pub(super) struct StoredMembers<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> StoredMembers<'a> {
    /// The members of `json`; `None` if it is not a JSON object.
    pub(super) fn parse(json: &'a str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }

    /// The stored text of member `key` (the last, if the key repeats: the
    /// one a parsed map keeps).
    pub(super) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }

    /// The sealed text of member `key`, if its value is an envelope
    /// (`{"annals_pii": "<text>"}`, nothing else in it).
    pub(super) fn sealed(&self, key: &str) -> Option<Cow<'a, str>> {
        /// The envelope of a sealed field, as `sealed_field` writes it.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Envelope<'a> {
            #[serde(borrow)]
            annals_pii: Cow<'a, str>,
        }
        let text = self.get(key)?.get();
        if !text.starts_with('{') {
            return None;
        }
        serde_json::from_str::<Envelope<'a>>(text)
            .ok()
            .map(|envelope| envelope.annals_pii)
    }

    /// The data subject member `key` names: a string as it is, a number as
    /// its JSON text; `None` for anything else or an empty string.
    pub(super) fn subject(&self, key: &str) -> Option<String> {
        match serde_json::from_str::<Value>(self.get(key)?.get()).ok()? {
            Value::String(text) if !text.is_empty() => Some(text),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// The object's JSON text with each member named in `replaced` written
    /// as the JSON text given for it, and every other member as stored.
    pub(super) fn with_replaced(&self, replaced: &[(&str, String)]) -> String {
        let stored: usize = self
            .members
            .iter()
            .map(|(key, value)| key.len() + value.get().len() + 4)
            .sum();
        let added: usize = replaced.iter().map(|(_, text)| text.len()).sum();
        let mut json = String::with_capacity(stored + added + 2);
        json.push('{');
        for (index, (key, value)) in self.members.iter().enumerate() {
            if index > 0 {
                json.push(',');
            }
            push_json_string(&mut json, key);
            json.push(':');
            match replaced.iter().find(|(name, _)| name == key) {
                Some((_, text)) => json.push_str(text),
                None => json.push_str(value.get()),
            }
        }
        json.push('}');
        json
    }
}

/// `text` as a JSON string.
fn push_json_string(json: &mut String, text: &str) {
    if text
        .bytes()
        .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
    {
        json.push('"');
        json.push_str(text);
        json.push('"');
    } else {
        json.push_str(&Value::from(text).to_string());
    }
}

impl<'de> Deserialize<'de> for StoredMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = StoredMembers<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(StoredMembers { members })
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// An object key, borrowed from the stored text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }

            fn visit_string<E>(self, key: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_and_written_back_as_stored_but_the_replaced() {
        let json = r#"{"id":"u-1","email":{"annals_pii":"v1:abc"},"n":[1, 2],"esc\"aped":"x","email":{"annals_pii":"v1:last"}}"#;
        let members = StoredMembers::parse(json).expect("an object");
        assert_eq!(members.subject("id").as_deref(), Some("u-1"));
        assert_eq!(members.sealed("email").as_deref(), Some("v1:last"));
        assert_eq!(members.sealed("id"), None);
        assert_eq!(members.get("esc\"aped").map(RawValue::get), Some(r#""x""#));
        let written = members.with_replaced(&[("email", r#""ada@example.test""#.to_owned())]);
        assert_eq!(
            written,
            r#"{"id":"u-1","email":"ada@example.test","n":[1, 2],"esc\"aped":"x","email":"ada@example.test"}"#
        );
        let reread: serde_json::Map<String, Value> =
            serde_json::from_str(&written).expect("valid JSON");
        assert_eq!(reread["email"], "ada@example.test");
    }

    #[test]
    fn only_an_envelope_with_nothing_else_is_sealed() {
        let json = r#"{"a":{"annals_pii":"v1:x","more":1},"b":{"annals_pii":7},"c":"v1:x","d":{"annals_pii":"v1:y"}}"#;
        let members = StoredMembers::parse(json).expect("an object");
        assert_eq!(members.sealed("a"), None);
        assert_eq!(members.sealed("b"), None);
        assert_eq!(members.sealed("c"), None);
        assert_eq!(members.sealed("d").as_deref(), Some("v1:y"));
        assert!(StoredMembers::parse("[1]").is_none());
        assert_eq!(
            StoredMembers::parse(r#"{"n":42,"e":""}"#)
                .expect("an object")
                .subject("n")
                .as_deref(),
            Some("42")
        );
        assert_eq!(
            StoredMembers::parse(r#"{"e":""}"#)
                .expect("an object")
                .subject("e"),
            None
        );
    }
}
