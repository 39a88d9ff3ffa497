//! The export file: the log as JSON Lines, written by `annals export` and
//! read by `annals import`.
//!
//! ```text
//! {"annals_export":1,"source":"sqlite","tenant":null,"exported_at":"2026-12-03T14:00:00.000000Z"}
//! {"event_id":"…","stream_id":"user-1","version":1,"event_type":"iam.user.registered","schema_version":1,
//!  "payload":{…},"metadata":{…},"recorded_at":"2026-12-03T13:59:58.123456Z","tags":[…],
//!  "position":"41/41","link":"9f2c…"}
//! …one line per event, in log order…
//! {"subject_key":{"tenant":"acme","subject":"m1","wrapped_key":"…","forgotten_at":null,
//!  "streams":["member-m1"]},"link":"77a0…"}
//! …one line per data subject's key or tombstone…
//! {"annals_export_end":{"events":6,"streams":3,"subject_keys":1,"digest":"5d1e…"}}
//! ```
//!
//! Each event keeps what it was recorded with: id, stream, version, type,
//! schema version, payload (the stored JSON text), metadata, recording time
//! (microseconds) and tags; `position` is where it stood in the source log
//! (the target assigns its own, in the file's order). The file carries a
//! hash chain of its own, independent of positions and of either store's
//! keys, so that it is the same however often the log is exported and
//! imported:
//!
//! ```text
//! link(event) = SHA-256(link(previous event of its stream in the file, or 32 zero bytes)
//!                       || SHA-256(canonical JSON of the event without position and link))
//! link(key)   = SHA-256(canonical JSON of the subject key)
//! digest      = SHA-256(every link, in file order)
//! ```
//!
//! The subject keys are what opens the events' `#[pii]` fields (wrapped
//! under the master key, which is not in the file: the importing
//! application needs the same one) and the tombstones of forgotten
//! subjects, which stay forgotten. The file is as sensitive as the
//! database it came from.
//!
//! where the canonical JSON sorts object keys and has no spaces, and the
//! recording time is microseconds since the Unix epoch. The trailer's count
//! and digest make a truncated, reordered or spliced file fail as a whole;
//! an event's link names the one that was changed. Like an unkeyed store
//! chain it is a checksum, not a signature: it detects corruption and
//! careless edits, not someone who recomputes it (keep the file where only
//! operators can write it, and `annals verify` the store it came from).

use std::collections::HashMap;
use std::io::{BufRead, Write};

use annals::pii::{StoredSubjectKey, SubjectKeyRecord};
use annals::store::import::ImportItem;
use annals::{Metadata, Payload, RecordedEvent, StreamId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The version of the format this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The first line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    /// The format's version.
    pub(crate) annals_export: u32,
    /// The backend exported from: `sqlite` or `postgres`.
    pub(crate) source: String,
    /// The tenant the export was confined to, if any.
    pub(crate) tenant: Option<String>,
    /// When the export began.
    pub(crate) exported_at: DateTime<Utc>,
}

/// One event's line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    event_id: Uuid,
    stream_id: String,
    version: u64,
    event_type: String,
    schema_version: u32,
    payload: Box<RawValue>,
    metadata: Metadata,
    recorded_at: DateTime<Utc>,
    #[serde(default)]
    tags: Vec<String>,
    position: String,
    link: String,
}

/// One data subject's key line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyLine {
    subject_key: KeyFields,
    link: String,
}

/// A subject's key or tombstone as the file holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFields {
    tenant: Option<String>,
    subject: String,
    /// The wrapped key, hex; `None` for a tombstone.
    wrapped_key: Option<String>,
    /// When it was forgotten; `None` for a key.
    forgotten_at: Option<DateTime<Utc>>,
    streams: Vec<String>,
}

impl KeyFields {
    fn from_record(record: &SubjectKeyRecord) -> KeyFields {
        let (wrapped_key, forgotten_at) = match &record.key {
            StoredSubjectKey::Wrapped(wrapped) => (Some(hex::encode(wrapped)), None),
            StoredSubjectKey::Forgotten { forgotten_at } => (None, Some(*forgotten_at)),
        };
        KeyFields {
            tenant: record.tenant.clone(),
            subject: record.subject.clone(),
            wrapped_key,
            forgotten_at,
            streams: record
                .streams
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        }
    }

    fn into_record(self) -> Result<SubjectKeyRecord, String> {
        let key = match (self.wrapped_key, self.forgotten_at) {
            (Some(wrapped), None) => StoredSubjectKey::Wrapped(
                hex::decode(&wrapped)
                    .map_err(|error| format!("the wrapped key is not hex: {error}"))?,
            ),
            (None, Some(forgotten_at)) => StoredSubjectKey::Forgotten { forgotten_at },
            _ => {
                return Err(
                    "a subject key has either a wrapped_key or a forgotten_at, not both or neither"
                        .to_owned(),
                );
            }
        };
        Ok(SubjectKeyRecord {
            tenant: self.tenant,
            subject: self.subject,
            key,
            streams: self
                .streams
                .into_iter()
                .map(|stream| StreamId::new(stream).map_err(|error| error.to_string()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Its link: SHA-256 of its canonical JSON.
    fn link(&self) -> Result<[u8; 32], String> {
        let value = serde_json::to_value(self).map_err(|error| error.to_string())?;
        let mut text = String::new();
        write_canonical(&value, &mut text);
        Ok(Sha256::digest(text.as_bytes()).into())
    }
}

/// The last line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    annals_export_end: Totals,
}

/// What the trailer vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Totals {
    /// Events in the file.
    pub(crate) events: u64,
    /// Distinct streams (a stream id in two tenants counts twice).
    pub(crate) streams: u64,
    /// Data subjects' keys and tombstones.
    pub(crate) subject_keys: u64,
    /// SHA-256 of every event's link in file order, hex.
    pub(crate) digest: String,
}

/// The file's hash chain as events go by, in either direction.
#[derive(Default)]
struct FileChain {
    /// Per stream (tenant, id): the last link and version seen.
    heads: HashMap<(Option<String>, String), ([u8; 32], u64)>,
    digest: Sha256,
    events: u64,
    subject_keys: u64,
}

impl FileChain {
    /// The event's link, chained to its stream's previous one; checks that
    /// the stream's versions follow on.
    fn link(&mut self, event: &RecordedEvent) -> Result<[u8; 32], String> {
        let key = (
            event.metadata.tenant_id.clone(),
            event.stream_id.as_str().to_owned(),
        );
        let (previous, last_version) = self.heads.get(&key).copied().unwrap_or(([0; 32], 0));
        if event.version != last_version + 1 {
            return Err(format!(
                "stream `{}`{} has version {} after {}: a stream's events come in version order from 1, without gaps",
                event.stream_id,
                tenant_suffix(event.metadata.tenant_id.as_deref()),
                event.version,
                match last_version {
                    0 => "none".to_owned(),
                    version => format!("version {version}"),
                }
            ));
        }
        let mut hasher = Sha256::new();
        hasher.update(previous);
        hasher.update(Sha256::digest(canonical_event(event)?.as_bytes()));
        let link: [u8; 32] = hasher.finalize().into();
        self.heads.insert(key, (link, event.version));
        self.digest.update(link);
        self.events += 1;
        Ok(link)
    }

    /// A subject key's link, counted into the digest.
    fn key_link(&mut self, fields: &KeyFields) -> Result<[u8; 32], String> {
        let link = fields.link()?;
        self.digest.update(link);
        self.subject_keys += 1;
        Ok(link)
    }

    fn totals(self) -> Totals {
        Totals {
            events: self.events,
            streams: self.heads.len() as u64,
            subject_keys: self.subject_keys,
            digest: hex::encode(self.digest.finalize()),
        }
    }
}

fn tenant_suffix(tenant: Option<&str>) -> String {
    tenant.map_or_else(String::new, |tenant| format!(" of tenant {tenant:?}"))
}

/// The event's fields the file chain covers, as canonical JSON.
fn canonical_event(event: &RecordedEvent) -> Result<String, String> {
    let payload: Value = serde_json::from_str(event.payload.as_json())
        .map_err(|error| format!("the payload is not JSON: {error}"))?;
    let metadata = serde_json::to_value(&event.metadata)
        .map_err(|error| format!("the metadata cannot be written as JSON: {error}"))?;
    let fields = serde_json::json!({
        "event_id": event.event_id,
        "stream_id": event.stream_id.as_str(),
        "version": event.version,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "payload": payload,
        "metadata": metadata,
        "recorded_at": event.recorded_at.timestamp_micros(),
        "tags": event.tags,
    });
    let mut text = String::new();
    write_canonical(&fields, &mut text);
    Ok(text)
}

/// `value` with every object's keys sorted and no whitespace.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Writes an export: the header, then events in log order, then the
/// trailer.
pub(crate) struct ExportWriter<W: Write> {
    out: W,
    chain: FileChain,
}

impl<W: Write> ExportWriter<W> {
    pub(crate) fn start(mut out: W, header: &Header) -> std::io::Result<Self> {
        write_line(&mut out, header)?;
        Ok(ExportWriter {
            out,
            chain: FileChain::default(),
        })
    }

    /// Writes one event; an event the file cannot hold (its stream's
    /// versions do not follow on) is an `InvalidData` error naming it.
    pub(crate) fn event(&mut self, event: &RecordedEvent) -> std::io::Result<()> {
        let invalid = |reason: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "event {} ({} version {}): {reason}",
                    event.event_id, event.stream_id, event.version
                ),
            )
        };
        let link = self.chain.link(event).map_err(invalid)?;
        let payload = RawValue::from_string(event.payload.as_json().to_owned())
            .map_err(|error| invalid(format!("the payload is not JSON: {error}")))?;
        write_line(
            &mut self.out,
            &EventLine {
                event_id: event.event_id,
                stream_id: event.stream_id.as_str().to_owned(),
                version: event.version,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload,
                metadata: event.metadata.clone(),
                recorded_at: event.recorded_at,
                tags: event.tags.clone(),
                position: event.position.to_string(),
                link: hex::encode(link),
            },
        )
    }

    /// Writes a data subject's key or tombstone (after every event).
    pub(crate) fn subject_key(&mut self, record: &SubjectKeyRecord) -> std::io::Result<()> {
        let fields = KeyFields::from_record(record);
        let link = self.chain.key_link(&fields).map_err(|reason| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("subject `{}`: {reason}", record.subject),
            )
        })?;
        write_line(
            &mut self.out,
            &KeyLine {
                subject_key: fields,
                link: hex::encode(link),
            },
        )
    }

    /// Writes the trailer and hands back the output to flush and keep.
    pub(crate) fn finish(mut self) -> std::io::Result<(W, Totals)> {
        let totals = self.chain.totals();
        write_line(
            &mut self.out,
            &Trailer {
                annals_export_end: totals.clone(),
            },
        )?;
        Ok((self.out, totals))
    }
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Reads an export line by line, checking each event's link as it goes and
/// the trailer at the end: an iterator of the events, whose first error
/// (naming the line) is its last item.
pub(crate) struct ExportReader<R: BufRead> {
    lines: std::io::Lines<R>,
    line_number: u64,
    chain: FileChain,
    header: Header,
    done: bool,
}

impl<R: BufRead> ExportReader<R> {
    /// Reads and checks the header.
    pub(crate) fn open(input: R) -> Result<Self, String> {
        let mut lines = input.lines();
        let first = match lines.next() {
            None => {
                return Err("the file is empty: an export starts with its header line".to_owned());
            }
            Some(line) => line.map_err(|error| format!("cannot read line 1: {error}"))?,
        };
        let header: Header = serde_json::from_str(&first).map_err(|error| {
            format!("line 1 is not an Annals export header ({error}); is this a file `annals export` wrote?")
        })?;
        if header.annals_export != FORMAT_VERSION {
            return Err(format!(
                "the file is export format {}; this build reads format {FORMAT_VERSION}",
                header.annals_export
            ));
        }
        Ok(ExportReader {
            lines,
            line_number: 1,
            chain: FileChain::default(),
            header,
            done: false,
        })
    }

    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// The next event or key, `Ok(None)` after a trailer that matches, or
    /// why the file cannot be imported.
    fn next_item(&mut self) -> Result<Option<ImportItem>, String> {
        let Some(line) = self.lines.next() else {
            return Err(format!(
                "the file ends after line {} without its trailer: it was cut short",
                self.line_number
            ));
        };
        self.line_number += 1;
        let number = self.line_number;
        let line = line.map_err(|error| format!("cannot read line {number}: {error}"))?;
        let mut parsed: EventLine = match serde_json::from_str(&line) {
            Ok(parsed) => parsed,
            Err(event_error) => {
                if let Ok(key) = serde_json::from_str::<KeyLine>(&line) {
                    return self.key(key, number).map(Some);
                }
                let Ok(trailer) = serde_json::from_str::<Trailer>(&line) else {
                    return Err(format!("line {number} is not an event: {event_error}"));
                };
                self.end(trailer.annals_export_end)?;
                return Ok(None);
            }
        };
        let claimed_link = std::mem::take(&mut parsed.link);
        let event = to_event(parsed, number)?;
        let link = self
            .chain
            .link(&event)
            .map_err(|reason| format!("line {number}: {reason}"))?;
        if hex::encode(link) != claimed_link {
            return Err(format!(
                "line {number}: event {} ({} version {}) does not match its link: the file was changed after it was exported",
                event.event_id, event.stream_id, event.version
            ));
        }
        Ok(Some(ImportItem::Recorded(event)))
    }

    /// A subject key line, checked against its link.
    fn key(&mut self, line: KeyLine, number: u64) -> Result<ImportItem, String> {
        let link = self
            .chain
            .key_link(&line.subject_key)
            .map_err(|reason| format!("line {number}: {reason}"))?;
        if hex::encode(link) != line.link {
            return Err(format!(
                "line {number}: the key of subject `{}` does not match its link: the file was changed after it was exported",
                line.subject_key.subject
            ));
        }
        let record = line
            .subject_key
            .into_record()
            .map_err(|reason| format!("line {number}: {reason}"))?;
        Ok(ImportItem::SubjectKey(record))
    }

    /// Checks the trailer against what was read, and that nothing follows.
    fn end(&mut self, claimed: Totals) -> Result<(), String> {
        let number = self.line_number;
        let read = std::mem::take(&mut self.chain).totals();
        if claimed != read {
            return Err(format!(
                "line {number}: the trailer vouches for {} events in {} streams and {} subject keys, but the file holds {} in {} and {} (or they were reordered): it was cut or spliced",
                claimed.events,
                claimed.streams,
                claimed.subject_keys,
                read.events,
                read.streams,
                read.subject_keys
            ));
        }
        for rest in self.lines.by_ref() {
            self.line_number += 1;
            let rest =
                rest.map_err(|error| format!("cannot read line {}: {error}", self.line_number))?;
            if !rest.trim().is_empty() {
                return Err(format!(
                    "line {}: there is more after the trailer on line {number}",
                    self.line_number
                ));
            }
        }
        Ok(())
    }
}

/// The event a line describes, or what is wrong with it.
fn to_event(line: EventLine, number: u64) -> Result<RecordedEvent, String> {
    let stream_id =
        StreamId::new(line.stream_id.clone()).map_err(|error| format!("line {number}: {error}"))?;
    let position = line.position.parse().map_err(|error| {
        format!(
            "line {number}: the position {:?} is not commit/sequence: {error}",
            line.position
        )
    })?;
    let payload = Payload::from_json(line.payload.get().to_owned())
        .map_err(|error| format!("line {number}: the payload is not JSON: {error}"))?;
    Ok(RecordedEvent {
        event_id: line.event_id,
        stream_id,
        version: line.version,
        position,
        event_type: line.event_type,
        schema_version: line.schema_version,
        payload,
        metadata: line.metadata,
        recorded_at: line.recorded_at,
        tags: line.tags,
    })
}

impl<R: BufRead> Iterator for ExportReader<R> {
    type Item = Result<ImportItem, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_item() {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_drops_whitespace() {
        let value: Value =
            serde_json::from_str(r#"{ "b": [ {"z": 1, "a": "x y"} ], "a": null }"#).expect("valid");
        let mut text = String::new();
        write_canonical(&value, &mut text);
        assert_eq!(text, r#"{"a":null,"b":[{"a":"x y","z":1}]}"#);
    }
}
