//! A JSON Schema (draft 2020-12) per event type and version, as `#[event]`
//! derived it through `schemars`, for neighbouring services and contract
//! tests.
//!
//! ```
//! #[annals::event(name = "doc.user.registered", version = 2)]
//! struct UserRegistered {
//!     /// The address the user signs in with.
//!     email: String,
//!     display_name: Option<String>,
//! }
//!
//! let descriptor = annals::registry::event("doc.user.registered").expect("registered");
//! let schema = annals_codegen::json_schema::for_event(descriptor);
//! assert_eq!(schema["title"], "doc.user.registered");
//! assert_eq!(schema["x-annals-schema-version"], 2);
//! assert_eq!(schema["required"], serde_json::json!(["email"]));
//! assert_eq!(schema["properties"]["email"]["description"], "The address the user signs in with.");
//! assert_eq!(annals_codegen::json_schema::file_name(descriptor.name, 2), "doc.user.registered.v2.json");
//! ```

use annals::registry::EventDescriptor;
use serde_json::Value;

use crate::store_migrations::GENERATED_MARKER;

/// The schema of the payload an event's current version writes, with a
/// `$comment` marking it as generated, and `"x-annals-pii": {"subject": ...}`
/// on each `#[pii]` field (stored encrypted, redacted once its subject is
/// forgotten).
pub fn for_event(event: &EventDescriptor) -> Value {
    let mut schema = (event.json_schema)();
    if let Value::Object(object) = &mut schema {
        object.insert("$comment".to_owned(), Value::from(GENERATED_MARKER));
    }
    // Personal data: the schema describes the event as read; the stored
    // payload holds an encrypted envelope in these fields' place.
    for field in event.pii {
        if let Some(Value::Object(property)) = schema
            .get_mut("properties")
            .and_then(|properties| properties.get_mut(field.field))
        {
            property.insert(
                "x-annals-pii".to_owned(),
                serde_json::json!({ "subject": field.subject }),
            );
        }
    }
    schema
}

/// `{event type}.v{version}.json`.
pub fn file_name(event_type: &str, version: u32) -> String {
    format!("{event_type}.v{version}.json")
}

/// The file's text: pretty JSON with sorted keys (`$comment` first) and a
/// final newline, so regenerating gives identical bytes.
pub fn to_file_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A short human description of a property's schema, for the catalog:
/// `string (uuid)`, `integer or null`, `Address`, `array of string`.
pub fn type_label(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference.rsplit('/').next().unwrap_or(reference).to_owned();
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(cases) = schema.get(combinator).and_then(Value::as_array) {
            return cases
                .iter()
                .map(type_label)
                .collect::<Vec<_>>()
                .join(" or ");
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(Value::to_string).collect();
        return format!("one of {}", values.join(", "));
    }
    let base = match schema.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => return "any".to_owned(),
    };
    if let (true, Some(items)) = (base.starts_with("array"), schema.get("items")) {
        return base.replacen("array", &format!("array of {}", type_label(items)), 1);
    }
    match schema.get("format").and_then(Value::as_str) {
        Some(format) => format!("{base} ({format})"),
        None => base,
    }
}
