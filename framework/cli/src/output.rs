//! What the commands print: tables for a person, JSON for a script.

use std::io::Write;

use annals::RecordedEvent;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

use crate::failure::Failure;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Tables and lines for a person.
    Human,
    /// JSON for a script.
    Json,
}

/// A table with a header row, sized to the terminal.
pub(crate) fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// Prints a line to stdout; a closed pipe (`annals events | head`) ends
/// the command quietly instead of panicking.
pub(crate) fn line(text: impl std::fmt::Display) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::BrokenPipe => Failure::OutputClosed,
            _ => Failure::io("cannot write to stdout", error),
        })
}

/// Prints a JSON document.
pub(crate) fn json(value: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| Failure::io("cannot format JSON", error))?;
    line(text)
}

/// An event as JSON: every field of the envelope, the payload as the JSON
/// it is.
pub(crate) fn event_json(event: &RecordedEvent) -> Result<Value, Failure> {
    serde_json::to_value(event).map_err(|error| {
        Failure::io(
            format!(
                "cannot format event {} ({} version {})",
                event.event_id, event.stream_id, event.version
            ),
            error,
        )
    })
}

/// Events as a table: position, stream, version, type, time, tenant.
pub(crate) fn events_table(events: &[RecordedEvent]) -> Table {
    let mut table = table([
        "position",
        "stream",
        "version",
        "type",
        "recorded at",
        "tenant",
    ]);
    for event in events {
        table.add_row([
            event.position.to_string(),
            event.stream_id.to_string(),
            event.version.to_string(),
            event.event_type.clone(),
            time(event.recorded_at),
            event.metadata.tenant_id.clone().unwrap_or_default(),
        ]);
    }
    table
}

/// One event in full: envelope, metadata and the pretty-printed payload.
pub(crate) fn event_detail(event: &RecordedEvent) -> Result<String, Failure> {
    let mut text = String::new();
    let metadata = &event.metadata;
    let mut field = |name: &str, value: String| {
        text.push_str(&format!("{name:<15} {value}\n"));
    };
    field("event id", event.event_id.to_string());
    field("stream", event.stream_id.to_string());
    field("version", event.version.to_string());
    field("position", event.position.to_string());
    field(
        "type",
        format!("{} (schema v{})", event.event_type, event.schema_version),
    );
    field("recorded at", time(event.recorded_at));
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    field("tenant", optional(metadata.tenant_id.clone()));
    field(
        "correlation id",
        optional(metadata.correlation_id.map(|id| id.to_string())),
    );
    field(
        "causation id",
        optional(metadata.causation_id.map(|id| id.to_string())),
    );
    field("actor", optional(metadata.actor.clone()));
    if !event.tags.is_empty() {
        field("tags", event.tags.join(", "));
    }
    for (key, value) in &metadata.headers {
        field(&format!("header {key}"), value.clone());
    }
    let payload = serde_json::to_string_pretty(&event.payload.to_value())
        .map_err(|error| Failure::io("cannot format the payload", error))?;
    text.push_str("payload\n");
    text.push_str(&payload);
    Ok(text)
}

/// A time to the millisecond, UTC.
pub(crate) fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}
