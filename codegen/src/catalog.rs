//! The event catalog in Markdown: every event type, its versions and
//! fields, which aggregates emit it, which projections and handlers consume
//! it.

use std::fmt::Write as _;

use annals::registry::{self, EventDescriptor};
use serde_json::Value;

use crate::json_schema;
use crate::store_migrations::GENERATED_MARKER;

/// The catalog of everything registered in this program.
///
/// ```
/// #[annals::event(name = "doc.catalog.example")]
/// struct Example { id: u64 }
///
/// let catalog = annals_codegen::catalog::markdown();
/// assert!(catalog.contains("## `doc.catalog.example` (v1)"));
/// assert!(catalog.contains("| `id` | integer (uint64) | yes |"));
/// ```
pub fn markdown() -> String {
    let mut events: Vec<&EventDescriptor> = registry::events().collect();
    events.sort_by(|a, b| a.name.cmp(b.name).then(a.version.cmp(&b.version)));
    let mut text = format!(
        "<!-- {GENERATED_MARKER} -->\n# Event catalog\n\n{} event types, {} aggregates, {} projections, {} handlers.\n",
        events.len(),
        registry::aggregates().count(),
        registry::projections().count(),
        registry::handlers().count()
    );
    for event in events {
        entry(&mut text, event);
    }
    text
}

fn entry(text: &mut String, event: &EventDescriptor) {
    let _ = write!(
        text,
        "\n## `{}` (v{})\n\nRust type `{}`.",
        event.name, event.version, event.rust_type
    );
    if !event.upcasts_from.is_empty() {
        let older: Vec<String> = event.upcasts_from.iter().map(|v| format!("v{v}")).collect();
        let _ = write!(text, " Also reads {} (upcast on read).", older.join(", "));
    }
    let schema = (event.json_schema)();
    if let Some(description) = schema.get("description").and_then(Value::as_str) {
        let _ = write!(text, " {}", one_line(description));
    }
    text.push_str("\n\n");

    let mut emitted_by: Vec<String> = registry::aggregates_for_event(event.name)
        .iter()
        .map(|aggregate| format!("`{}`", aggregate.name))
        .collect();
    emitted_by.sort();
    let mut projected_by: Vec<String> = registry::projections()
        .filter(|projection| (projection.event_types)().contains(&event.name))
        .map(|projection| format!("`{}` v{}", projection.name, projection.version))
        .collect();
    projected_by.sort();
    let handled_by: Vec<String> = registry::handlers_for(event.name)
        .iter()
        .map(|handler| format!("`{}` (priority {})", handler.name, handler.priority))
        .collect();
    let _ = writeln!(
        text,
        "- Emitted by aggregates: {}",
        list_or_none(&emitted_by)
    );
    let _ = writeln!(text, "- Projections: {}", list_or_none(&projected_by));
    let _ = writeln!(text, "- Handlers: {}", list_or_none(&handled_by));
    if !event.pii.is_empty() {
        let fields: Vec<String> = event
            .pii
            .iter()
            .map(|field| format!("`{}` (subject `{}`)", field.field, field.subject))
            .collect();
        let _ = writeln!(
            text,
            "- Personal data, encrypted per subject and redacted once forgotten: {}",
            fields.join(", ")
        );
    }
    let _ = writeln!(
        text,
        "- JSON Schema: [`events/{0}`](events/{0})",
        json_schema::file_name(event.name, event.version)
    );

    let properties = schema.get("properties").and_then(Value::as_object);
    match properties {
        Some(properties) if !properties.is_empty() => {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|names| names.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            text.push_str(
                "\n| field | type | required | description |\n| --- | --- | --- | --- |\n",
            );
            for (name, property) in properties {
                let description = property
                    .get("description")
                    .and_then(Value::as_str)
                    .map(one_line)
                    .unwrap_or_default();
                let _ = writeln!(
                    text,
                    "| `{name}` | {} | {} | {description} |",
                    json_schema::type_label(property).replace('|', "\\|"),
                    if required.contains(&name.as_str()) {
                        "yes"
                    } else {
                        "no"
                    },
                );
            }
        }
        _ => {
            let _ = writeln!(text, "\nPayload: {}.", json_schema::type_label(&schema));
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}
