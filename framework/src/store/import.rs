//! Writing events that were recorded elsewhere (a backup, another store)
//! with the ids, versions, metadata, tags and recording times they were
//! recorded with, and the data subjects' keys that open their `#[pii]`
//! fields: [`SqliteEventStore::import_log`] and
//! [`PostgresEventStore::import_log`].
//!
//! An import is one transaction: every event is written, in the order
//! given, or none is. Each event goes in at its recorded version, so a
//! stream that already has events in the target refuses
//! ([`Error::VersionConflict`] naming it), as
//! does an event id that is already stored. What the target assigns is
//! what belongs to it: log positions (in the order of the import) and the
//! hash chain's links, which cover those positions and are made with the
//! target's keys.
//!
//! A subject's key ([`SubjectKeyRecord`], listed by
//! [`SubjectKeyStore::list_subject_keys`]) is restored as it was: wrapped
//! under the master key (the target's application needs the same master
//! key), or a tombstone, so a forgotten subject stays forgotten. A
//! different key already stored for the subject refuses the import.
//!
//! [`SubjectKeyStore::list_subject_keys`]: crate::pii::SubjectKeyStore::list_subject_keys
//!
//! [`SqliteEventStore::import_log`]: crate::store::SqliteEventStore::import_log
//! [`PostgresEventStore::import_log`]: crate::store::PostgresEventStore::import_log

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::event::envelope::{NewEvent, RecordedEvent};
use crate::pii::SubjectKeyRecord;
use crate::store::append::{AppendResult, MAX_EVENTS_PER_APPEND, StreamAppend};
use crate::store::position::LogPosition;
use crate::store::stream::ExpectedVersion;

/// One thing an import writes: an event, or a data subject's key.
#[derive(Debug, Clone)]
pub enum ImportItem {
    /// An event, written at its recorded version with its recorded time.
    /// (Not named `Event`: a second item of that name makes the compiler
    /// spell the `Event` trait out in full in its messages.)
    Recorded(RecordedEvent),
    /// A data subject's key or tombstone, with its streams.
    SubjectKey(SubjectKeyRecord),
}

impl From<RecordedEvent> for ImportItem {
    fn from(event: RecordedEvent) -> Self {
        ImportItem::Recorded(event)
    }
}

impl From<SubjectKeyRecord> for ImportItem {
    fn from(record: SubjectKeyRecord) -> Self {
        ImportItem::SubjectKey(record)
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Events written.
    pub events: u64,
    /// Distinct streams they belong to (a stream id in two tenants counts
    /// twice).
    pub streams: u64,
    /// The target's log position of the last event written.
    pub last_position: Option<LogPosition>,
    /// Data subjects' keys and tombstones written.
    pub subject_keys: u64,
}

/// Events grouped into the appends that write them: consecutive events of
/// one stream in one entry, each append with a single recording time (the
/// store writes one per statement) and no stream twice, at most
/// `chunk_size` events each.
pub(crate) struct ImportBatches {
    chunk_size: usize,
    appends: Vec<StreamAppend>,
    /// The stream of each entry of `appends`, with its tenant and the
    /// version of its last event.
    heads: Vec<(String, Option<String>, u64)>,
    recorded_at: Option<DateTime<Utc>>,
    events_in_chunk: usize,
    streams: HashSet<(String, Option<String>)>,
    report: ImportReport,
}

/// Where an import writes, inside the one transaction it holds: each
/// backend's.
pub(crate) trait ImportWriter {
    /// Writes a chunk's appends with its recording time.
    async fn write_chunk(&mut self, chunk: ImportChunk) -> Result<Vec<AppendResult>>;
    /// Restores a data subject's key or tombstone.
    async fn restore_key(&mut self, record: &SubjectKeyRecord) -> Result<()>;
}

/// Writes `items` through `writer` in order, events gathered into chunks
/// ([`ImportBatches`]); the first error ends it (the caller then drops
/// its transaction). Returns what was written, for after the commit.
pub(crate) async fn write_items<S, I, W>(
    items: S,
    writer: &mut W,
    chunk_size: usize,
) -> Result<ImportReport>
where
    S: futures_util::Stream<Item = Result<I>>,
    I: Into<ImportItem>,
    W: ImportWriter,
{
    use futures_util::StreamExt as _;
    let mut items = std::pin::pin!(items);
    let mut batches = ImportBatches::new(chunk_size);
    while let Some(item) = items.next().await {
        match item?.into() {
            ImportItem::Recorded(event) => {
                if let Some(chunk) = batches.push(event)? {
                    let results = writer.write_chunk(chunk).await?;
                    batches.written(&results);
                }
            }
            ImportItem::SubjectKey(record) => {
                writer.restore_key(&record).await?;
                batches.key_written();
            }
        }
    }
    if let Some(chunk) = batches.take() {
        let results = writer.write_chunk(chunk).await?;
        batches.written(&results);
    }
    Ok(batches.report())
}

/// A group of appends ready to be written, all recorded at one instant.
#[derive(Debug)]
pub(crate) struct ImportChunk {
    pub(crate) appends: Vec<StreamAppend>,
    pub(crate) recorded_at: DateTime<Utc>,
}

impl ImportBatches {
    pub(crate) fn new(chunk_size: usize) -> Self {
        ImportBatches {
            chunk_size: chunk_size.clamp(1, MAX_EVENTS_PER_APPEND),
            appends: Vec::new(),
            heads: Vec::new(),
            recorded_at: None,
            events_in_chunk: 0,
            streams: HashSet::new(),
            report: ImportReport::default(),
        }
    }

    /// Takes the next event; returns the chunk it cannot join, if any,
    /// to be written before it.
    pub(crate) fn push(&mut self, event: RecordedEvent) -> Result<Option<ImportChunk>> {
        if event.version == 0 {
            return Err(Error::invalid(
                "version",
                format!(
                    "event {} of stream `{}` has version 0; versions start at 1",
                    event.event_id, event.stream_id
                ),
            ));
        }
        let tenant = event.metadata.tenant_id.clone();
        let continues_last = self.heads.last().is_some_and(|(stream, last_tenant, _)| {
            stream == event.stream_id.as_str() && *last_tenant == tenant
        });
        if let Some((stream, _, version)) = self.heads.last()
            && continues_last
            && event.version != version + 1
        {
            return Err(Error::invalid(
                "version",
                format!(
                    "stream `{stream}`: event {} has version {} right after version {version}; \
                     a stream's events come in version order without gaps",
                    event.event_id, event.version
                ),
            ));
        }
        let same_instant = self.recorded_at.is_none_or(|at| at == event.recorded_at);
        let stream_named_before = !continues_last
            && self
                .heads
                .iter()
                .any(|(stream, ..)| stream == event.stream_id.as_str());
        let ready =
            if !same_instant || stream_named_before || self.events_in_chunk >= self.chunk_size {
                self.take()
            } else {
                None
            };
        self.streams
            .insert((event.stream_id.as_str().to_owned(), tenant.clone()));
        self.recorded_at = Some(event.recorded_at);
        self.events_in_chunk += 1;
        let new_event = NewEvent {
            event_id: event.event_id,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata: event.metadata,
            tags: event.tags,
        };
        match (self.appends.last_mut(), self.heads.last_mut()) {
            (Some(append), Some(head)) if ready.is_none() && continues_last => {
                append.events.push(new_event);
                head.2 = event.version;
            }
            _ => {
                let expected = match event.version {
                    1 => ExpectedVersion::NoStream,
                    version => ExpectedVersion::Exact(version - 1),
                };
                self.heads
                    .push((event.stream_id.as_str().to_owned(), tenant, event.version));
                self.appends.push(StreamAppend::new(
                    event.stream_id,
                    expected,
                    vec![new_event],
                ));
            }
        }
        Ok(ready)
    }

    /// The chunk being gathered, if it holds anything.
    pub(crate) fn take(&mut self) -> Option<ImportChunk> {
        let recorded_at = self.recorded_at.take()?;
        self.heads.clear();
        self.events_in_chunk = 0;
        Some(ImportChunk {
            appends: std::mem::take(&mut self.appends),
            recorded_at,
        })
    }

    /// Counts what a chunk's appends wrote.
    pub(crate) fn written(&mut self, results: &[AppendResult]) {
        for result in results {
            self.report.events += result.positions.len() as u64;
            if let Some(last) = result.positions.last() {
                self.report.last_position = Some(*last);
            }
        }
    }

    /// Counts a subject key written.
    pub(crate) fn key_written(&mut self) {
        self.report.subject_keys += 1;
    }

    /// What was written, once the import has committed.
    pub(crate) fn report(mut self) -> ImportReport {
        self.report.streams = self.streams.len() as u64;
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::metadata::Metadata;
    use crate::event::payload::Payload;
    use crate::store::stream::StreamId;

    fn event(stream: &str, version: u64, at: i64) -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::now_v7(),
            stream_id: StreamId::new(stream).expect("valid"),
            version,
            position: LogPosition::START,
            event_type: "test.happened".to_owned(),
            schema_version: 1,
            payload: Payload::from_json("{}").expect("valid"),
            metadata: Metadata::default(),
            recorded_at: DateTime::from_timestamp_micros(at).expect("valid"),
            tags: Vec::new(),
        }
    }

    fn shape(chunk: &ImportChunk) -> Vec<(String, ExpectedVersion, usize)> {
        chunk
            .appends
            .iter()
            .map(|append| {
                (
                    append.stream_id.to_string(),
                    append.expected,
                    append.events.len(),
                )
            })
            .collect()
    }

    #[test]
    fn consecutive_events_of_one_stream_at_one_instant_share_an_append() {
        let mut batches = ImportBatches::new(100);
        assert!(batches.push(event("a", 1, 10)).expect("valid").is_none());
        assert!(batches.push(event("a", 2, 10)).expect("valid").is_none());
        assert!(batches.push(event("b", 4, 10)).expect("valid").is_none());
        // Stream `a` again in the same chunk: a new chunk, so that no
        // append names a stream twice and the log keeps the given order.
        let first = batches
            .push(event("a", 3, 10))
            .expect("accepted")
            .expect("a chunk");
        assert_eq!(
            shape(&first),
            [
                ("a".to_owned(), ExpectedVersion::NoStream, 2),
                ("b".to_owned(), ExpectedVersion::Exact(3), 1)
            ]
        );
        // Another instant: another chunk.
        let second = batches
            .push(event("c", 1, 11))
            .expect("accepted")
            .expect("a chunk");
        assert_eq!(
            shape(&second),
            [("a".to_owned(), ExpectedVersion::Exact(2), 1)]
        );
        let last = batches.take().expect("valid");
        assert_eq!(last.recorded_at.timestamp_micros(), 11);
        assert!(batches.take().is_none());
    }

    #[test]
    fn a_gap_in_a_streams_versions_is_refused_naming_it() {
        let mut batches = ImportBatches::new(100);
        batches.push(event("a", 1, 10)).expect("valid");
        let error = batches
            .push(event("a", 3, 10))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("stream `a`"), "{error}");
        assert!(error.contains("version 3 right after version 1"), "{error}");
        let error = batches
            .push(event("b", 0, 10))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("version 0"), "{error}");
    }

    #[test]
    fn chunks_hold_at_most_the_chunk_size() {
        let mut batches = ImportBatches::new(2);
        batches.push(event("a", 1, 10)).expect("valid");
        batches.push(event("a", 2, 10)).expect("valid");
        let full = batches
            .push(event("a", 3, 10))
            .expect("accepted")
            .expect("a chunk");
        assert_eq!(
            shape(&full),
            [("a".to_owned(), ExpectedVersion::NoStream, 2)]
        );
        let rest = batches.take().expect("valid");
        assert_eq!(
            shape(&rest),
            [("a".to_owned(), ExpectedVersion::Exact(2), 1)]
        );
    }
}
