//! Tamper evidence on the SQL backends: the stored links follow the format
//! `annals::hash_chain` documents (recomputed here, independently, from the
//! raw rows), and each way of tampering with a stored event is named by
//! `verify_stream` and `verify_log`. The conformance suite covers the plain
//! case (an altered payload) on every backend and layout.

use annals::prelude::*;
use annals_tests::backends::{RawAccess, TestStore};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid stream id")
}

fn numbered(n: u64) -> NewEvent {
    NewEvent::json("test.numbered", &json!({ "n": n })).expect("event")
}

/// Three streams with every kind of column: NULLs, unicode, headers,
/// several events per append and a multi-stream batch.
async fn fill(t: &TestStore) {
    let full = Metadata::new()
        .with_actor("Ørjan")
        .with_tenant("tenant-🦀")
        .with_correlation_id(Uuid::now_v7())
        .with_causation_id(Uuid::now_v7())
        .with_trace_context("00-abc-def-01")
        .with_header("ключ", "値")
        .with_header("a", "b");
    t.store
        .append(
            &stream("chain-1"),
            ExpectedVersion::NoStream,
            vec![
                numbered(1),
                NewEvent::json(
                    "test.unicode",
                    &json!({ "name": "Zoë \"q\" 李", "x": [1.5, null] }),
                )
                .expect("event")
                .with_metadata(full),
                numbered(3),
            ],
        )
        .await
        .expect("append");
    t.store
        .append_batch(vec![
            StreamAppend::new(
                stream("chain-1"),
                ExpectedVersion::Exact(3),
                vec![numbered(4)],
            ),
            StreamAppend::new(
                stream("chain-2"),
                ExpectedVersion::NoStream,
                vec![numbered(1), numbered(2)],
            ),
        ])
        .await
        .expect("batch");
    t.store
        .append(&stream("chain-3"), ExpectedVersion::Any, vec![numbered(1)])
        .await
        .expect("append");
}

/// One row as the documented format sees it.
struct RawRow {
    event_id: Uuid,
    stream_id: String,
    version: i64,
    event_type: String,
    schema_version: i32,
    payload: String,
    tenant_id: Option<String>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    actor: Option<String>,
    trace_context: Option<String>,
    headers: String,
    recorded_at_micros: i64,
    hash: Option<Vec<u8>>,
}

fn text(hasher: &mut Sha256, value: Option<&str>) {
    match value {
        Some(value) => {
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
        None => hasher.update([0xff; 8]),
    }
}

fn uuid(hasher: &mut Sha256, value: Option<Uuid>) {
    match value {
        Some(value) => {
            hasher.update([1]);
            hasher.update(value.as_bytes());
        }
        None => hasher.update([0]),
    }
}

/// The module documentation's digest, written out again from the text.
fn digest(row: &RawRow) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(row.event_id.as_bytes());
    text(&mut hasher, Some(&row.stream_id));
    hasher.update(row.version.to_be_bytes());
    text(&mut hasher, Some(&row.event_type));
    hasher.update(row.schema_version.to_be_bytes());
    text(&mut hasher, Some(&row.payload));
    text(&mut hasher, row.tenant_id.as_deref());
    uuid(&mut hasher, row.correlation_id);
    uuid(&mut hasher, row.causation_id);
    text(&mut hasher, row.actor.as_deref());
    text(&mut hasher, row.trace_context.as_deref());
    text(&mut hasher, Some(&row.headers));
    hasher.update(row.recorded_at_micros.to_be_bytes());
    hasher.finalize().into()
}

/// Every stored row, each stream in version order, read as the format says
/// (PostgreSQL's `jsonb` as its text, times in microseconds).
async fn raw_rows(t: &TestStore) -> Vec<RawRow> {
    type Columns = (
        Uuid,
        String,
        i64,
        String,
        i32,
        String,
        Option<String>,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        String,
        i64,
        Option<Vec<u8>>,
    );
    let rows: Vec<Columns> = match &t.raw {
        RawAccess::Postgres(pool) => sqlx::query_as(t.sql(
            "SELECT event_id, stream_id, version, event_type, schema_version, payload::text, \
             tenant_id, correlation_id, causation_id, actor, trace_context, headers::text, \
             (extract(epoch FROM recorded_at) * 1000000)::int8, hash \
             FROM annals_events ORDER BY stream_id, version",
        ))
        .fetch_all(pool)
        .await
        .expect("raw rows"),
        RawAccess::Sqlite(pool) => sqlx::query_as(t.sql(
            "SELECT event_id, stream_id, version, event_type, schema_version, payload, \
             tenant_id, correlation_id, causation_id, actor, trace_context, headers, \
             recorded_at, hash FROM annals_events ORDER BY stream_id, version",
        ))
        .fetch_all(pool)
        .await
        .expect("raw rows"),
        RawAccess::Memory => panic!("the in-memory store has no rows"),
    };
    rows.into_iter()
        .map(|row| RawRow {
            event_id: row.0,
            stream_id: row.1,
            version: row.2,
            event_type: row.3,
            schema_version: row.4,
            payload: row.5,
            tenant_id: row.6,
            correlation_id: row.7,
            causation_id: row.8,
            actor: row.9,
            trace_context: row.10,
            headers: row.11,
            recorded_at_micros: row.12,
            hash: row.13,
        })
        .collect()
}

async fn links_follow_the_documented_format(t: &TestStore) {
    fill(t).await;
    let rows = raw_rows(t).await;
    assert_eq!(rows.len(), 7);
    let mut previous: Option<(&str, [u8; 32])> = None;
    for row in &rows {
        let head = match previous {
            Some((stream, link)) if stream == row.stream_id => link,
            _ => [0; 32],
        };
        let mut hasher = Sha256::new();
        hasher.update(head);
        hasher.update(digest(row));
        let link: [u8; 32] = hasher.finalize().into();
        assert_eq!(
            row.hash.as_deref(),
            Some(link.as_slice()),
            "stored link of {} version {}",
            row.stream_id,
            row.version
        );
        previous = Some((&row.stream_id, link));
    }
    let heads = t.store.verify_log().await.expect("verify").heads;
    assert_eq!(
        heads.get("chain-1").map(|head| head.as_bytes().to_vec()),
        rows.iter()
            .rfind(|row| row.stream_id == "chain-1")
            .and_then(|row| row.hash.clone())
    );
}

#[tokio::test]
async fn postgres_links_follow_the_documented_format() {
    links_follow_the_documented_format(&TestStore::postgres().await).await;
}

#[tokio::test]
async fn sqlite_links_follow_the_documented_format() {
    links_follow_the_documented_format(&TestStore::sqlite().await).await;
}

/// Deleting an event breaks the link of the one after it.
async fn a_deleted_event_breaks_the_next_link(t: &TestStore) {
    fill(t).await;
    let deleted = t
        .tamper("DELETE FROM annals_events WHERE stream_id = 'chain-2' AND version = 1")
        .await;
    assert_eq!(deleted, Some(1));
    let report = t
        .store
        .verify_stream(&stream("chain-2"))
        .await
        .expect("verify");
    let broken = report.first_break.expect("a break");
    assert_eq!((broken.stream_id.as_str(), broken.version), ("chain-2", 2));
    assert_eq!(report.events_checked, 1);
    assert!(
        t.store
            .verify_stream(&stream("chain-1"))
            .await
            .expect("verify")
            .is_intact()
    );
}

#[tokio::test]
async fn postgres_a_deleted_event_breaks_the_next_link() {
    a_deleted_event_breaks_the_next_link(&TestStore::postgres().await).await;
}

#[tokio::test]
async fn sqlite_a_deleted_event_breaks_the_next_link() {
    a_deleted_event_breaks_the_next_link(&TestStore::sqlite().await).await;
}

/// A row inserted with plain SQL has no link and is reported, even when
/// it is a stream's only event.
async fn a_row_written_past_annals_is_reported(t: &TestStore) {
    fill(t).await;
    t.plant_raw_event("chain-planted", 1, "test.numbered", r#"{"n": 1}"#)
        .await
        .expect("plant");
    let report = t.store.verify_log().await.expect("verify");
    let broken = report.first_break.expect("a break");
    assert_eq!(
        (broken.stream_id.as_str(), broken.version, broken.found),
        ("chain-planted", 1, None)
    );
    assert!(broken.to_string().ends_with("found none"), "{broken}");
    assert_eq!(report.events_checked, 8);
}

#[tokio::test]
async fn postgres_a_row_written_past_annals_is_reported() {
    a_row_written_past_annals_is_reported(&TestStore::postgres().await).await;
}

#[tokio::test]
async fn sqlite_a_row_written_past_annals_is_reported() {
    a_row_written_past_annals_is_reported(&TestStore::sqlite().await).await;
}

/// Someone who changes a payload and recomputes that event's link (with
/// the store's own SQL functions) moves the break to the next event: its
/// stored link was made from the old one.
#[tokio::test]
async fn postgres_a_recomputed_link_breaks_the_next_one() {
    let t = TestStore::postgres().await;
    fill(&t).await;
    let changed = t
        .tamper(
            "UPDATE annals_events AS e SET payload = '{\"n\": 99}', \
                 hash = sha256(p.hash || annals_event_digest(e.event_id, e.stream_id, e.version, \
                     e.event_type, e.schema_version, '{\"n\": 99}'::jsonb::text, e.tenant_id, \
                     e.correlation_id, e.causation_id, e.actor, e.trace_context, e.headers::text, \
                     e.recorded_at)) \
             FROM annals_events AS p \
             WHERE e.stream_id = 'chain-1' AND e.version = 3 \
               AND p.stream_id = 'chain-1' AND p.version = 2",
        )
        .await;
    assert_eq!(changed, Some(1));
    let report = t
        .store
        .verify_stream(&stream("chain-1"))
        .await
        .expect("verify");
    let broken = report.first_break.expect("a break");
    assert_eq!((broken.stream_id.as_str(), broken.version), ("chain-1", 4));
    let log = t.store.verify_log().await.expect("verify the log");
    assert_eq!(log.first_break, Some(broken));
}
