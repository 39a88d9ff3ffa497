//! Tamper evidence on the SQL backends: the stored links follow the format
//! `annals::hash_chain` documents (recomputed here, independently, from the
//! raw rows), and each way of tampering with a stored event is named by
//! `verify_stream` and `verify_log`. The conformance suite covers the plain
//! case (an altered payload) on every backend and layout.

use annals::hash_chain::{BreakReason, ChainKey, ChainKeys};
use annals::prelude::*;
use annals::store::{PostgresEventStore, SqliteEventStore};
use annals_tests::backends::{
    RawAccess, TestStore, application_role_builder, application_role_store, fresh_postgres_store,
    postgres_url,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid stream id")
}

fn numbered(n: u64) -> NewEvent {
    NewEvent::json("test.numbered", &json!({ "n": n })).expect("event")
}

/// Three streams with every kind of column: NULLs, unicode, headers,
/// several events per append and a multi-stream batch. `chain-1` belongs
/// to a tenant (all its events name it), the others to none.
async fn fill(t: &TestStore) {
    let in_tenant = || Metadata::new().with_tenant("tenant-🦀");
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
                numbered(1).with_metadata(in_tenant()),
                NewEvent::json(
                    "test.unicode",
                    &json!({ "name": "Zoë \"q\" 李", "x": [1.5, null] }),
                )
                .expect("event")
                .with_metadata(full),
                numbered(3).with_metadata(in_tenant()),
            ],
        )
        .await
        .expect("append");
    t.store
        .append_batch(vec![
            StreamAppend::new(
                stream("chain-1"),
                ExpectedVersion::Exact(3),
                vec![numbered(4).with_metadata(in_tenant())],
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
    position: i64,
    commit: i64,
    hash: Option<Vec<u8>>,
    chain_key: Option<i64>,
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
    hasher.update(row.position.to_be_bytes());
    hasher.update(row.commit.to_be_bytes());
    hasher.finalize().into()
}

/// Every stored row, each stream in version order, read as the format says
/// (PostgreSQL's `jsonb` as its text, times in microseconds).
async fn raw_rows(t: &TestStore) -> Vec<RawRow> {
    /// One row of either backend, its columns in the order selected.
    macro_rules! raw_row {
        ($row:expr) => {{
            let row = $row;
            let get = |index: usize| format!("column {index}");
            RawRow {
                event_id: row.try_get(0).expect(&get(0)),
                stream_id: row.try_get(1).expect(&get(1)),
                version: row.try_get(2).expect(&get(2)),
                event_type: row.try_get(3).expect(&get(3)),
                schema_version: row.try_get(4).expect(&get(4)),
                payload: row.try_get(5).expect(&get(5)),
                tenant_id: row.try_get(6).expect(&get(6)),
                correlation_id: row.try_get(7).expect(&get(7)),
                causation_id: row.try_get(8).expect(&get(8)),
                actor: row.try_get(9).expect(&get(9)),
                trace_context: row.try_get(10).expect(&get(10)),
                headers: row.try_get(11).expect(&get(11)),
                recorded_at_micros: row.try_get(12).expect(&get(12)),
                position: row.try_get(13).expect(&get(13)),
                commit: row.try_get(14).expect(&get(14)),
                hash: row.try_get(15).expect(&get(15)),
                chain_key: row.try_get(16).expect(&get(16)),
            }
        }};
    }
    match &t.raw {
        RawAccess::Postgres(pool) => sqlx::query(t.sql(
            "SELECT event_id, stream_id, version, event_type, schema_version, payload::text, \
             tenant_id, correlation_id, causation_id, actor, trace_context, headers::text, \
             (extract(epoch FROM recorded_at) * 1000000)::int8, position, \
             transaction_id::text::int8, hash, chain_key::int8 \
             FROM annals_events ORDER BY stream_id, version",
        ))
        .fetch_all(pool)
        .await
        .expect("raw rows")
        .iter()
        .map(|row| raw_row!(row))
        .collect(),
        RawAccess::Sqlite(pool) => sqlx::query(t.sql(
            "SELECT event_id, stream_id, version, event_type, schema_version, payload, \
             tenant_id, correlation_id, causation_id, actor, trace_context, headers, \
             recorded_at, position, commit_id, hash, chain_key \
             FROM annals_events ORDER BY stream_id, version",
        ))
        .fetch_all(pool)
        .await
        .expect("raw rows")
        .iter()
        .map(|row| raw_row!(row))
        .collect(),
        RawAccess::Memory => panic!("the in-memory store has no rows"),
    }
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
            row.chain_key,
            Some(0),
            "an unkeyed store's links are unkeyed"
        );
        assert_eq!(
            row.hash.as_deref(),
            Some(link.as_slice()),
            "stored link of {} version {}",
            row.stream_id,
            row.version
        );
        previous = Some((&row.stream_id, link));
    }
    let heads = t.store.verify_log().await.expect("verify");
    assert_eq!(
        heads.head("chain-1").map(|head| head.as_bytes().to_vec()),
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
                 hash = sha256(p.hash || annals_event_link_digest(e.event_id, e.stream_id, \
                     e.version, e.event_type, e.schema_version, '{\"n\": 99}'::jsonb::text, \
                     e.tenant_id, e.correlation_id, e.causation_id, e.actor, e.trace_context, \
                     e.headers::text, e.recorded_at, e.position, e.transaction_id::text::int8)) \
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

// Keyed chains: what holds against someone who can write the tables but
// does not hold the application's key (the module docs' list, sentence by
// sentence).

fn key(id: u16, byte: u8) -> ChainKey {
    ChainKey::new(id, [byte; 32]).expect("a valid key")
}

/// A keyed owner store in a schema of its own, and the same schema through
/// the application role (holding the same keys) as a tenant handle.
async fn keyed_postgres(keys: &ChainKeys) -> (PostgresEventStore, PostgresEventStore) {
    let schema = format!("t_{}", Uuid::now_v7().simple());
    let owner = PostgresEventStore::builder(postgres_url())
        .schema(schema)
        .chain_keys(keys.clone())
        .connect()
        .await
        .expect("owner store");
    let app = application_role_builder(&owner)
        .await
        .chain_keys(keys.clone())
        .connect()
        .await
        .expect("application role store");
    let tenant = app.for_tenant("acme").await.expect("tenant handle");
    (owner, tenant)
}

/// Appends `n` numbered events to `id` through `store`.
async fn append_numbered(store: &dyn EventStore, id: &str, n: u64) {
    let current = store.stream_version(&stream(id)).await.expect("version");
    let events = (current + 1..=current + n).map(numbered).collect();
    store
        .append(&stream(id), ExpectedVersion::Exact(current), events)
        .await
        .expect("append");
}

/// A fabricated next event of `acct-1`, inserted by the application role
/// with plain SQL (tenant set, as its own transactions do) and a correct
/// unkeyed link computed with the store's own SQL functions, marked with
/// `chain_key`.
async fn forge_as_application_role(tenant: &PostgresEventStore, chain_key: i16) {
    let mut tx = tenant.pool().begin().await.expect("begin");
    sqlx::query("SELECT set_config('annals.tenant', 'acme', true)")
        .execute(&mut *tx)
        .await
        .expect("set the tenant");
    sqlx::query(
        "WITH head AS (SELECT version, hash FROM annals_events WHERE stream_id = 'acct-1' \
                       ORDER BY version DESC LIMIT 1), \
              n AS (SELECT nextval('annals_events_position_seq'::regclass) AS position, \
                           pg_current_xact_id() AS txid, gen_random_uuid() AS event_id, \
                           now() AS at) \
         INSERT INTO annals_events (position, transaction_id, event_id, stream_id, version, \
                                    event_type, schema_version, payload, tenant_id, headers, \
                                    recorded_at, hash, chain_key) \
         OVERRIDING SYSTEM VALUE \
         SELECT n.position, n.txid, n.event_id, 'acct-1', head.version + 1, 'test.numbered', 1, \
                '{\"n\": 666}'::jsonb, 'acme', '{}'::jsonb, n.at, \
                annals_keyed_chain_step(NULL, head.hash, annals_event_link_digest( \
                    n.event_id, 'acct-1', head.version + 1, 'test.numbered', 1, \
                    '{\"n\": 666}'::jsonb::text, 'acme', NULL, NULL, NULL, NULL, '{}'::jsonb::text, \
                    n.at, n.position, n.txid::text::int8), NULL, NULL), \
                $1 \
         FROM head, n",
    )
    .bind(chain_key)
    .execute(&mut *tx)
    .await
    .expect("the application role may insert rows of its tenant");
    tx.commit().await.expect("commit");
}

/// Without keys, an event the application role fabricates with a correct
/// link verifies; with keys, its unkeyed link is named, and marking it
/// with the key's id does not help.
#[tokio::test]
async fn postgres_a_keyed_chain_names_an_event_the_application_role_forged() {
    let keys = ChainKeys::new(key(1, 0x11));
    for (chain_key, reason) in [(0, BreakReason::Unkeyed), (1, BreakReason::LinkMismatch)] {
        let (_owner, tenant) = keyed_postgres(&keys).await;
        append_numbered(&tenant, "acct-1", 3).await;
        assert!(tenant.verify_log().await.expect("verify").is_intact());
        forge_as_application_role(&tenant, chain_key).await;
        assert_eq!(
            tenant.stream_version(&stream("acct-1")).await.expect("v"),
            4
        );

        let report = tenant.verify_log().await.expect("verify");
        let broken = report.first_break.expect("the forged event is named");
        assert_eq!(
            (broken.stream_id.as_str(), broken.version, broken.reason),
            ("acct-1", 4, reason)
        );
    }

    // The same forgery against a store without keys goes unnoticed: the
    // limit the docs state.
    let owner = fresh_postgres_store().await;
    let tenant = application_role_store(&owner)
        .await
        .for_tenant("acme")
        .await
        .expect("tenant handle");
    append_numbered(&tenant, "acct-1", 3).await;
    forge_as_application_role(&tenant, 0).await;
    let report = tenant.verify_log().await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_break);
    assert_eq!(report.events_checked, 4);
}

/// Moving an event in the log (a new position, or a transaction id that
/// puts it below a reader's checkpoint) breaks its link, keyed or not.
#[tokio::test]
async fn postgres_moving_an_event_in_the_log_breaks_its_link() {
    let keys = ChainKeys::new(key(1, 0x22));
    for keyed in [true, false] {
        let owner = if keyed {
            keyed_postgres(&keys).await.0
        } else {
            fresh_postgres_store().await
        };
        let t = TestStore::from_postgres(owner);
        append_numbered(t.store.as_ref(), "moved", 2).await;
        append_numbered(t.store.as_ref(), "other", 1).await;
        append_numbered(t.store.as_ref(), "hidden", 1).await;
        // The log's readers see an append once no older transaction is
        // open (other tests share the server).
        let mut checkpoint = None;
        for _ in 0..500 {
            let read = t
                .store
                .read_all(LogPosition::START, 100)
                .await
                .expect("read");
            if read.len() == 4 {
                checkpoint = read.last().map(|event| event.position);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let checkpoint = checkpoint.expect("the readers see the four events");

        // The second event of `moved`, deleted and written again, unchanged
        // but for a later position.
        let moved = t
            .tamper(
                "WITH gone AS (DELETE FROM annals_events WHERE stream_id = 'moved' AND version = 2 \
                               RETURNING *) \
                 INSERT INTO annals_events OVERRIDING SYSTEM VALUE \
                 SELECT position + 1000, transaction_id, event_id, stream_id, version, event_type, \
                        schema_version, payload, tenant_id, correlation_id, causation_id, actor, \
                        trace_context, headers, recorded_at, hash, chain_key FROM gone",
            )
            .await;
        assert_eq!(moved, Some(1));
        // `hidden`'s only event moved to the oldest transaction id: a reader
        // past the checkpoint never sees it, and the chain says so.
        let hidden = t
            .tamper(
                "UPDATE annals_events SET transaction_id = '3'::xid8 WHERE stream_id = 'hidden'",
            )
            .await;
        assert_eq!(hidden, Some(1));
        assert!(
            t.store
                .read_all(checkpoint, 100)
                .await
                .expect("read")
                .is_empty(),
            "the edit hides the event from a reader past it"
        );

        for (id, version) in [("moved", 2), ("hidden", 1)] {
            let report = t.store.verify_stream(&stream(id)).await.expect("verify");
            let broken = report.first_break.expect("the moved event is named");
            assert_eq!(
                (broken.stream_id.as_str(), broken.version, broken.reason),
                (id, version, BreakReason::LinkMismatch),
                "keyed: {keyed}"
            );
        }
        assert!(
            t.store
                .verify_stream(&stream("other"))
                .await
                .expect("verify")
                .is_intact()
        );
    }
}

/// Keys rotate: links of a retired key still verify, and a link made with
/// a key the store does not hold, or whose key id was changed, is named.
#[tokio::test]
async fn postgres_retired_keys_verify_and_unknown_keys_are_named() {
    let first = ChainKeys::new(key(1, 0x31));
    let (owner, tenant) = keyed_postgres(&first).await;
    append_numbered(&tenant, "rotated", 2).await;
    let rotated = ChainKeys::new(key(2, 0x32))
        .with_retired(key(1, 0x31))
        .expect("distinct ids");
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(owner.pool())
        .await
        .expect("schema");
    let after_rotation = PostgresEventStore::builder(postgres_url())
        .schema(schema.clone())
        .chain_keys(rotated.clone())
        .connect()
        .await
        .expect("store with the new key");
    let tenant_after_rotation = application_role_builder(&owner)
        .await
        .chain_keys(rotated)
        .connect()
        .await
        .expect("application role store with the new key")
        .for_tenant("acme")
        .await
        .expect("tenant handle");
    append_numbered(&tenant_after_rotation, "rotated", 2).await;
    let keys_used: Vec<Option<i16>> =
        sqlx::query_scalar("SELECT chain_key FROM annals_events ORDER BY version")
            .fetch_all(owner.pool())
            .await
            .expect("key ids");
    assert_eq!(keys_used, [Some(1), Some(1), Some(2), Some(2)]);
    assert!(
        after_rotation
            .verify_log()
            .await
            .expect("verify")
            .is_intact()
    );

    let only_new = PostgresEventStore::builder(postgres_url())
        .schema(schema.clone())
        .chain_keys(ChainKeys::new(key(2, 0x32)))
        .connect()
        .await
        .expect("store without the retired key");
    let broken = only_new
        .verify_log()
        .await
        .expect("verify")
        .first_break
        .expect("the old key's links cannot be checked");
    assert_eq!(
        (broken.version, broken.reason),
        (1, BreakReason::UnknownKey { key_id: 1 })
    );
    let unkeyed = PostgresEventStore::builder(postgres_url())
        .schema(schema)
        .connect()
        .await
        .expect("store without keys");
    assert_eq!(
        unkeyed
            .verify_log()
            .await
            .expect("verify")
            .first_break
            .map(|broken| broken.reason),
        Some(BreakReason::UnknownKey { key_id: 1 }),
        "a store without keys does not call keyed links intact"
    );

    let t = TestStore::from_postgres(after_rotation);
    t.tamper("UPDATE annals_events SET chain_key = 7 WHERE version = 3")
        .await;
    let broken = t
        .store
        .verify_log()
        .await
        .expect("verify")
        .first_break
        .expect("a changed key id is named");
    assert_eq!(
        (broken.version, broken.reason),
        (3, BreakReason::UnknownKey { key_id: 7 })
    );
}

/// What the chain cannot see: a stream's newest event removed leaves an
/// intact, shorter chain; only a head recorded elsewhere shows it.
#[tokio::test]
async fn postgres_a_cut_stream_verifies_but_its_head_moves() {
    let (owner, _tenant) = keyed_postgres(&ChainKeys::new(key(1, 0x41))).await;
    append_numbered(&owner, "cut", 3).await;
    let before = owner.verify_log().await.expect("verify");
    let t = TestStore::from_postgres(owner);
    t.tamper("DELETE FROM annals_events WHERE stream_id = 'cut' AND version = 3")
        .await;
    let after = t.store.verify_log().await.expect("verify");
    assert!(after.is_intact());
    assert_ne!(after.head("cut"), before.head("cut"));
}

/// SQLite with keys: the file's writer without the key cannot add an
/// event that verifies, nor move one; links follow the documented HMAC.
#[tokio::test]
async fn sqlite_a_keyed_chain_names_forged_and_moved_events() {
    let secret = [0x51u8; 32];
    let keys = ChainKeys::new(ChainKey::new(5, secret).expect("key"));
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::builder(dir.path().join("events.db"))
        .chain_keys(keys)
        .open()
        .await
        .expect("open");
    let t = TestStore::from_sqlite(store, dir);
    fill(&t).await;

    // Every link is HMAC-SHA-256 over the documented digest, written out
    // here from RFC 2104 with SHA-256 alone.
    let rows = raw_rows(&t).await;
    let mut previous: Option<(&str, [u8; 32])> = None;
    for row in &rows {
        let head = match previous {
            Some((stream, link)) if stream == row.stream_id => link,
            _ => [0; 32],
        };
        let (mut inner, mut outer) = ([0x36u8; 64], [0x5cu8; 64]);
        for (index, byte) in secret.iter().enumerate() {
            inner[index] ^= byte;
            outer[index] ^= byte;
        }
        let inner_hash: [u8; 32] = Sha256::new()
            .chain_update(inner)
            .chain_update(head)
            .chain_update(digest(row))
            .finalize()
            .into();
        let link: [u8; 32] = Sha256::new()
            .chain_update(outer)
            .chain_update(inner_hash)
            .finalize()
            .into();
        assert_eq!(row.chain_key, Some(5));
        assert_eq!(row.hash.as_deref(), Some(link.as_slice()));
        previous = Some((&row.stream_id, link));
    }
    assert!(t.store.verify_log().await.expect("verify").is_intact());

    // A row written with a correct unkeyed link.
    let last = rows
        .iter()
        .rfind(|row| row.stream_id == "chain-3")
        .expect("chain-3");
    let mut forged = RawRow {
        event_id: Uuid::now_v7(),
        stream_id: "chain-3".to_owned(),
        version: last.version + 1,
        event_type: "test.numbered".to_owned(),
        schema_version: 1,
        payload: r#"{"n":666}"#.to_owned(),
        tenant_id: None,
        correlation_id: None,
        causation_id: None,
        actor: None,
        trace_context: None,
        headers: "{}".to_owned(),
        recorded_at_micros: last.recorded_at_micros,
        position: rows.iter().map(|row| row.position).max().unwrap_or(0) + 1,
        commit: rows.iter().map(|row| row.position).max().unwrap_or(0) + 1,
        hash: None,
        chain_key: Some(0),
    };
    let link: [u8; 32] = Sha256::new()
        .chain_update(last.hash.as_deref().expect("a link"))
        .chain_update(digest(&forged))
        .finalize()
        .into();
    forged.hash = Some(link.to_vec());
    let RawAccess::Sqlite(pool) = &t.raw else {
        unreachable!("a SQLite store")
    };
    sqlx::query(
        "INSERT INTO annals_events (position, commit_id, event_id, stream_id, version, \
         event_type, schema_version, payload, headers, recorded_at, hash, chain_key) \
         VALUES (?, ?, ?, ?, ?, ?, 1, ?, '{}', ?, ?, 0)",
    )
    .bind(forged.position)
    .bind(forged.commit)
    .bind(forged.event_id)
    .bind(&forged.stream_id)
    .bind(forged.version)
    .bind(&forged.event_type)
    .bind(&forged.payload)
    .bind(forged.recorded_at_micros)
    .bind(&forged.hash)
    .execute(pool)
    .await
    .expect("the file's writer inserts a row");
    let broken = t
        .store
        .verify_log()
        .await
        .expect("verify")
        .first_break
        .expect("the forged row is named");
    assert_eq!(
        (broken.stream_id.as_str(), broken.reason),
        ("chain-3", BreakReason::Unkeyed)
    );

    // A commit id moved.
    t.tamper("UPDATE annals_events SET commit_id = commit_id + 100 WHERE stream_id = 'chain-2' AND version = 2")
        .await;
    let broken = t
        .store
        .verify_stream(&stream("chain-2"))
        .await
        .expect("verify")
        .first_break
        .expect("the moved row is named");
    assert_eq!(
        (broken.version, broken.reason),
        (2, BreakReason::LinkMismatch)
    );
}

/// A log written before the store had keys comes under them by re-signing
/// once, as the owner: refused while a link is broken (nothing changes),
/// refused to the application role, and afterwards every link is keyed and
/// a forged unkeyed event is named.
#[tokio::test]
async fn postgres_resigning_brings_an_unkeyed_log_under_a_key() {
    let unkeyed = fresh_postgres_store().await;
    append_numbered(&unkeyed, "acct-1", 3).await;
    append_numbered(&unkeyed, "acct-2", 2).await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(unkeyed.pool())
        .await
        .expect("schema");
    let keys = ChainKeys::new(key(4, 0x61));
    let owner = PostgresEventStore::builder(postgres_url())
        .schema(schema.clone())
        .chain_keys(keys.clone())
        .connect()
        .await
        .expect("keyed owner store");
    assert_eq!(
        owner
            .verify_log()
            .await
            .expect("verify")
            .first_break
            .map(|broken| broken.reason),
        Some(BreakReason::Unkeyed)
    );

    // A tampered log is not vouched for.
    let t = TestStore::from_postgres(unkeyed.clone());
    t.tamper("UPDATE annals_events SET payload = '{\"n\": 9}' WHERE stream_id = 'acct-2' AND version = 2")
        .await;
    match owner.resign_chain().await {
        Err(Error::ChainBroken { first_break }) => {
            assert_eq!(
                (first_break.stream_id.as_str(), first_break.version),
                ("acct-2", 2)
            );
            assert_eq!(first_break.reason, BreakReason::LinkMismatch);
        }
        other => panic!("expected the broken chain to be refused, got {other:?}"),
    }
    let keyed_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM annals_events WHERE chain_key > 0")
            .fetch_one(owner.pool())
            .await
            .expect("count");
    assert_eq!(keyed_rows, 0, "nothing was re-signed");
    t.tamper("UPDATE annals_events SET payload = '{\"n\": 2}' WHERE stream_id = 'acct-2' AND version = 2")
        .await;

    // The application role cannot do it.
    let app = application_role_builder(&owner)
        .await
        .chain_keys(keys.clone())
        .connect()
        .await
        .expect("application role store");
    match app.resign_chain().await {
        Err(Error::Config(message)) => assert!(message.contains("owns"), "{message}"),
        other => panic!("expected the application role to be refused, got {other:?}"),
    }
    let tenant = app.for_tenant("acme").await.expect("tenant handle");
    assert!(matches!(tenant.resign_chain().await, Err(Error::Config(_))));

    let report = owner.resign_chain().await.expect("re-sign");
    assert!(report.is_intact());
    assert_eq!(report.events_checked, 5);
    let formats: Vec<Option<i16>> =
        sqlx::query_scalar("SELECT DISTINCT chain_key FROM annals_events")
            .fetch_all(owner.pool())
            .await
            .expect("formats");
    assert_eq!(formats, [Some(4)]);
    assert!(owner.verify_log().await.expect("verify").is_intact());
    // Appends still work (the trigger is back: an update is refused).
    append_numbered(&owner, "acct-1", 1).await;
    assert!(owner.verify_log().await.expect("verify").is_intact());
    let update = sqlx::query("UPDATE annals_events SET event_type = 'x'")
        .execute(owner.pool())
        .await;
    assert!(update.is_err(), "events are immutable again");
    assert_eq!(
        unkeyed
            .verify_log()
            .await
            .expect("verify")
            .first_break
            .map(|broken| broken.reason),
        Some(BreakReason::UnknownKey { key_id: 4 }),
        "a store without the key cannot vouch for the re-signed log"
    );
}
