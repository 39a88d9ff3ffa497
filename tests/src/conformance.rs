//! The event-store conformance suite. Every backend runs every case here,
//! unchanged, through [`conformance_suite!`](crate::conformance_suite).

use std::collections::{BTreeMap, HashSet};

use annals::aggregate::snapshot::{RetentionPolicy, Snapshot};
use annals::prelude::*;
use annals::store::AppendResult;
use chrono::{Duration, Utc};
use futures_util::TryStreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::backends::TestStore;
use crate::events::UserEvent;

/// Expands to one `#[tokio::test]` per conformance case for a backend:
/// `conformance_suite!(memory)`, `conformance_suite!(sqlite)`,
/// `conformance_suite!(postgres)` (the names of [`TestStore`]'s constructors).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:ident) => {
        $crate::conformance_suite!(@cases $backend:
            round_trip_preserves_every_field,
            expected_version_rules,
            an_expected_head_guards_the_history,
            concurrent_writers_with_the_same_expected_version_exactly_one_wins,
            multi_stream_append_is_all_or_nothing,
            bad_batches_are_rejected_before_anything_is_written,
            duplicate_event_ids_are_rejected,
            read_stream_forward_and_backward,
            global_log_is_ordered_and_resumes_exactly,
            query_by_every_path_with_paging,
            unicode_and_large_payloads_round_trip,
            invalid_json_in_storage_is_a_typed_error,
            unknown_or_misshapen_events_are_typed_decode_errors,
            stored_events_cannot_be_changed,
            snapshots_are_stored_found_and_pruned,
            a_streams_snapshots_are_deleted_together,
            checkpoints_and_dead_letters_are_kept,
            oversized_input_is_refused_naming_the_limit,
            hash_chain_names_the_first_broken_link,
            nul_characters_are_refused_naming_the_field,
            checkpoints_refuse_positions_they_cannot_store,
            leases_give_each_reader_one_owner_and_fence_the_last,
            tags_are_stored_read_and_queried,
            append_conditions_refuse_what_the_caller_decided_against,
            racing_conditional_appends_exactly_one_wins,
            read_matching_returns_the_tenants_matching_events_in_order,
            racing_decisions_register_an_address_once,
            read_log_filters_types_in_the_store_and_reads_past_the_rest,
            read_log_without_metadata_leaves_out_only_the_metadata,
            streams_are_listed_in_id_order_by_prefix_and_page,
        );
    };
    (@cases $backend:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $crate::backends::TestStore::$backend().await;
                $crate::conformance::$case(&store).await;
            }
        )*
    };
}

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid test stream id")
}

fn event(event_type: &str, body: serde_json::Value) -> NewEvent {
    NewEvent::json(event_type, &body).expect("JSON values serialise")
}

fn numbered(n: usize) -> NewEvent {
    event("test.numbered", json!({ "n": n }))
}

/// Metadata as the store keeps it: a tenant handle stamps its tenant on
/// events that name none.
fn as_stored(t: &TestStore, metadata: &Metadata) -> Metadata {
    let mut stored = metadata.clone();
    if stored.tenant_id.is_none() {
        stored.tenant_id = t.store.tenant().map(str::to_owned);
    }
    stored
}

/// A tenant for events of this test: the store's own on a tenant handle
/// (which refuses events naming another), else `wanted`.
fn tenant_for<'t>(t: &'t TestStore, wanted: &'t str) -> &'t str {
    t.store.tenant().unwrap_or(wanted)
}

/// Appends `count` events to `id`, so that snapshots name real versions (a
/// tenant handle snapshots only versions its tenant has).
async fn with_events(t: &TestStore, id: &str, count: usize) {
    append(
        t,
        &stream(id),
        ExpectedVersion::NoStream,
        (1..=count).map(numbered).collect(),
    )
    .await;
}

async fn append(
    t: &TestStore,
    id: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendResult {
    t.store
        .append(id, expected, events)
        .await
        .unwrap_or_else(|error| panic!("append to {id} failed: {error:?}"))
}

async fn read_all_in_batches(
    t: &TestStore,
    after: LogPosition,
    batch: usize,
    expected: usize,
) -> Vec<RecordedEvent> {
    // On PostgreSQL the log only shows events below the oldest running
    // transaction of the cluster; other tests' transactions can hold that
    // horizon back for a moment, so wait for what was committed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let events = read_all_once(t, after, batch).await;
        if events.len() >= expected || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn read_all_once(t: &TestStore, after: LogPosition, batch: usize) -> Vec<RecordedEvent> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    let mut checkpoint = after;
    loop {
        let page = t.store.read_all(checkpoint, batch).await.expect("read_all");
        assert!(page.len() <= batch, "read_all returned more than asked");
        let Some(last) = page.last() else {
            return events;
        };
        checkpoint = last.position;
        events.extend(page);
    }
}

/// Every field of an event comes back as it was appended.
pub async fn round_trip_preserves_every_field(t: &TestStore) {
    let id = stream("user-round-trip");
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    let metadata = Metadata::new()
        .with_tenant("acme")
        .with_actor("admin@acme.test")
        .with_correlation_id(correlation)
        .with_causation_id(causation)
        .with_trace_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_header("client", "web")
        .with_header("ip", "192.0.2.1");
    let sent = vec![
        event(
            "test.user.registered",
            json!({ "email": "ada@acme.test", "tags": [1, 2, 3] }),
        )
        .with_metadata(metadata.clone()),
        event("test.user.renamed", json!({ "name": "Ada" }))
            .with_schema_version(3)
            .with_metadata(metadata.clone()),
        // A stream belongs to one tenant: the sparsest metadata still
        // names it.
        event("test.user.noted", json!(null)).with_metadata(Metadata::new().with_tenant("acme")),
    ];
    let before = Utc::now() - Duration::seconds(60);
    let result = append(t, &id, ExpectedVersion::NoStream, sent.clone()).await;
    assert_eq!((result.first_version, result.last_version), (1, 3));

    let read = t.store.read_stream(&id, 1, 100).await.expect("read_stream");
    assert_eq!(read.len(), 3);
    for (n, (sent, one)) in sent.iter().zip(&read).enumerate() {
        let read_back = one;
        assert_eq!(read_back.event_id, sent.event_id, "event id of #{n}");
        assert_eq!(read_back.stream_id, id);
        assert_eq!(read_back.version, n as u64 + 1);
        assert_eq!(read_back.event_type, sent.event_type);
        assert_eq!(read_back.schema_version, sent.schema_version);
        assert_eq!(read_back.payload, sent.payload, "payload of #{n}");
        assert_eq!(
            read_back.metadata,
            as_stored(t, &sent.metadata),
            "metadata of #{n}"
        );
        let recorded = read_back.recorded_at;
        assert!(recorded > before && recorded < Utc::now() + Duration::seconds(60));
        assert_eq!(recorded, read[0].recorded_at, "one append, one timestamp");
    }
    assert_eq!(result.position, read[2].position);
    assert!(read[0].position < read[1].position && read[1].position < read[2].position);
    assert_eq!(
        read[0].position.commit, read[2].position.commit,
        "one append, one commit"
    );
    assert_eq!(t.store.stream_version(&id).await.expect("version"), 3);
    assert_eq!(
        t.store
            .stream_version(&stream("user-none"))
            .await
            .expect("version"),
        0
    );
}

/// An append that names the stream's newest event (the history its caller
/// decided on) is refused, writing nothing, when the stream ends with
/// another event, even at the expected version; a new stream has no head.
pub async fn an_expected_head_guards_the_history(t: &TestStore) {
    let id = stream("user-head");
    let first = event("test.user.registered", json!({ "n": 1 }));
    let first_id = first.event_id;
    append(t, &id, ExpectedVersion::NoStream, vec![first]).await;
    let elsewhere = Uuid::now_v7();
    let guarded = |head: Uuid, n: u64| {
        StreamAppend::new(
            id.clone(),
            ExpectedVersion::Exact(1),
            vec![event("test.user.renamed", json!({ "n": n }))],
        )
        .with_expected_head(head)
    };
    match t.store.append_batch(vec![guarded(elsewhere, 2)]).await {
        Err(Error::HistoryMismatch {
            stream,
            version,
            expected_event,
            found_event,
        }) => {
            assert_eq!(
                (stream.as_str(), version, expected_event, found_event),
                ("user-head", 1, elsewhere, Some(first_id))
            );
        }
        other => panic!("expected the other history to be refused, got {other:?}"),
    }
    assert!(
        t.store
            .append_batch(vec![guarded(elsewhere, 2)])
            .await
            .is_err_and(|error| error.is_conflict())
    );
    assert_eq!(t.store.stream_version(&id).await.expect("version"), 1);
    // A batch with one stale stream writes nothing of the other.
    let other = stream("user-head-other");
    let batch = vec![
        StreamAppend::new(
            other.clone(),
            ExpectedVersion::NoStream,
            vec![event("test.user.registered", json!({}))],
        ),
        guarded(elsewhere, 2),
    ];
    assert!(t.store.append_batch(batch).await.is_err());
    assert_eq!(t.store.stream_version(&other).await.expect("version"), 0);

    let written = t
        .store
        .append_batch(vec![guarded(first_id, 2)])
        .await
        .expect("the right head");
    assert_eq!(written[0].last_version, 2);
    // No stream has no head.
    let fresh = StreamAppend::new(
        stream("user-head-new"),
        ExpectedVersion::NoStream,
        vec![event("test.user.registered", json!({}))],
    )
    .with_expected_head(first_id);
    match t.store.append_batch(vec![fresh]).await {
        Err(Error::HistoryMismatch {
            found_event,
            version,
            ..
        }) => {
            assert_eq!((found_event, version), (None, 0));
        }
        other => panic!("expected no head, got {other:?}"),
    }
}

/// `Any`, `NoStream`, `StreamExists` and `Exact` accept and refuse as
/// documented, and a refused append writes nothing.
pub async fn expected_version_rules(t: &TestStore) {
    let id = stream("user-expectations");
    let conflict =
        |result: Result<AppendResult>, expected: ExpectedVersion, actual: u64| match result {
            Err(Error::VersionConflict {
                stream,
                expected: e,
                actual: a,
            }) => {
                assert_eq!(stream, "user-expectations");
                assert_eq!((e, a), (expected, actual));
            }
            other => panic!("expected a conflict ({expected}, actual {actual}), got {other:?}"),
        };

    let exists = t
        .store
        .append(&id, ExpectedVersion::StreamExists, vec![numbered(0)])
        .await;
    conflict(exists, ExpectedVersion::StreamExists, 0);
    let exact = t
        .store
        .append(&id, ExpectedVersion::Exact(2), vec![numbered(0)])
        .await;
    conflict(exact, ExpectedVersion::Exact(2), 0);

    append(t, &id, ExpectedVersion::NoStream, vec![numbered(1)]).await;
    let again = t
        .store
        .append(&id, ExpectedVersion::NoStream, vec![numbered(2)])
        .await;
    conflict(again, ExpectedVersion::NoStream, 1);
    append(t, &id, ExpectedVersion::StreamExists, vec![numbered(2)]).await;
    append(
        t,
        &id,
        ExpectedVersion::Exact(2),
        vec![numbered(3), numbered(4)],
    )
    .await;
    let stale = t
        .store
        .append(&id, ExpectedVersion::Exact(2), vec![numbered(5)])
        .await;
    conflict(stale, ExpectedVersion::Exact(2), 4);
    let ahead = t
        .store
        .append(&id, ExpectedVersion::Exact(9), vec![numbered(5)])
        .await;
    conflict(ahead, ExpectedVersion::Exact(9), 4);
    let any = append(t, &id, ExpectedVersion::Any, vec![numbered(5)]).await;
    assert_eq!((any.first_version, any.last_version), (5, 5));

    let stored = t.store.read_stream(&id, 1, 100).await.expect("read");
    let ns: Vec<_> = stored
        .iter()
        .map(|e| e.payload.to_value()["n"].clone())
        .collect();
    assert_eq!(ns, [1, 2, 3, 4, 5], "refused appends wrote nothing");
}

/// Two (or more) writers holding the same version race: exactly one wins,
/// every other gets a conflict, and the stream has no gap or duplicate.
pub async fn concurrent_writers_with_the_same_expected_version_exactly_one_wins(t: &TestStore) {
    let id = stream("account-race");
    append(t, &id, ExpectedVersion::NoStream, vec![numbered(0)]).await;
    let mut head = 1;
    for round in 0..5 {
        let writers = (0..8).map(|writer| {
            let store = t.store.clone();
            let id = id.clone();
            let events = vec![numbered(writer), numbered(writer)];
            tokio::spawn(async move {
                store
                    .append(&id, ExpectedVersion::Exact(head), events)
                    .await
            })
        });
        let mut wins = 0;
        for result in futures_util::future::join_all(writers).await {
            match result.expect("writer task") {
                Ok(result) => {
                    wins += 1;
                    assert_eq!(
                        (result.first_version, result.last_version),
                        (head + 1, head + 2)
                    );
                }
                Err(Error::VersionConflict {
                    expected, actual, ..
                }) => {
                    assert_eq!(expected, ExpectedVersion::Exact(head));
                    assert!(actual > head, "a loser saw version {actual}");
                }
                Err(other) => panic!("round {round}: unexpected error: {other:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer must win");
        head += 2;
        let stored = t.store.load_stream(&id).await.expect("load");
        let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (1..=head).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
        let last_two = &stored[stored.len() - 2..];
        assert_eq!(
            last_two[0].payload, last_two[1].payload,
            "both events are the winner's"
        );
    }
}

/// A batch across streams is written entirely or not at all.
pub async fn multi_stream_append_is_all_or_nothing(t: &TestStore) {
    let (a, b, c) = (stream("order-a"), stream("order-b"), stream("order-c"));
    append(t, &c, ExpectedVersion::NoStream, vec![numbered(0)]).await;

    let failing = vec![
        StreamAppend::new(
            a.clone(),
            ExpectedVersion::NoStream,
            vec![numbered(1), numbered(2)],
        ),
        StreamAppend::new(b.clone(), ExpectedVersion::Exact(0), vec![numbered(3)]),
        StreamAppend::new(c.clone(), ExpectedVersion::NoStream, vec![numbered(4)]),
    ];
    match t.store.append_batch(failing).await {
        Err(Error::VersionConflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, "order-c");
            assert_eq!((expected, actual), (ExpectedVersion::NoStream, 1));
        }
        other => panic!("expected a conflict on order-c, got {other:?}"),
    }
    for id in [&a, &b] {
        assert_eq!(
            t.store.stream_version(id).await.expect("version"),
            0,
            "{id} untouched"
        );
    }
    assert_eq!(
        read_all_in_batches(t, LogPosition::START, 100, 1)
            .await
            .len(),
        1
    );

    let results = t
        .store
        .append_batch(vec![
            StreamAppend::new(
                a.clone(),
                ExpectedVersion::NoStream,
                vec![numbered(1), numbered(2)],
            ),
            StreamAppend::new(b.clone(), ExpectedVersion::Any, vec![numbered(3)]),
            StreamAppend::new(c.clone(), ExpectedVersion::Exact(1), vec![numbered(4)]),
        ])
        .await
        .expect("batch");
    let versions: Vec<_> = results
        .iter()
        .map(|r| (r.first_version, r.last_version))
        .collect();
    assert_eq!(versions, [(1, 2), (1, 1), (2, 2)], "results in batch order");
    let commits: HashSet<u64> = results.iter().map(|r| r.position.commit).collect();
    assert_eq!(commits.len(), 1, "one batch, one commit");
    let log = read_all_in_batches(t, LogPosition::START, 100, 5).await;
    let streams: Vec<&str> = log.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(
        streams,
        ["order-c", "order-a", "order-a", "order-b", "order-c"]
    );
}

/// Empty batches, empty appends, a stream named twice and bad type names
/// are refused with `InvalidInput`, and nothing is written.
pub async fn bad_batches_are_rejected_before_anything_is_written(t: &TestStore) {
    let id = stream("user-bad-batches");
    let invalid = |result: Result<Vec<AppendResult>>, field: &str| match result {
        Err(Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected invalid {field}, got {other:?}"),
    };
    invalid(t.store.append_batch(vec![]).await, "batch");
    invalid(
        t.store
            .append_batch(vec![StreamAppend::new(
                id.clone(),
                ExpectedVersion::Any,
                vec![],
            )])
            .await,
        "batch",
    );
    invalid(
        t.store
            .append_batch(vec![
                StreamAppend::new(id.clone(), ExpectedVersion::Any, vec![numbered(1)]),
                StreamAppend::new(id.clone(), ExpectedVersion::Any, vec![numbered(2)]),
            ])
            .await,
        "batch",
    );
    invalid(
        t.store
            .append_batch(vec![StreamAppend::new(
                id.clone(),
                ExpectedVersion::Any,
                vec![numbered(1), event("has space", json!({}))],
            )])
            .await,
        "event type",
    );
    assert!(
        read_all_in_batches(t, LogPosition::START, 10, 0)
            .await
            .is_empty()
    );
}

/// Appending an event id that is already stored fails naming the id, and the
/// rest of that append is not written.
pub async fn duplicate_event_ids_are_rejected(t: &TestStore) {
    let first = numbered(1);
    let duplicate_id = first.event_id;
    append(t, &stream("user-dup-a"), ExpectedVersion::Any, vec![first]).await;
    let again = numbered(2).with_event_id(duplicate_id);
    let result = t
        .store
        .append(
            &stream("user-dup-b"),
            ExpectedVersion::Any,
            vec![numbered(3), again],
        )
        .await;
    match result {
        Err(Error::InvalidInput {
            field: "event id",
            reason,
        }) => {
            assert!(reason.contains(&duplicate_id.to_string()), "{reason}")
        }
        other => panic!("expected a duplicate event id error, got {other:?}"),
    }
    assert_eq!(
        t.store
            .stream_version(&stream("user-dup-b"))
            .await
            .expect("version"),
        0
    );
}

/// Forward reads from a version with a limit; backward reads of the last N.
pub async fn read_stream_forward_and_backward(t: &TestStore) {
    let id = stream("user-reads");
    append(
        t,
        &id,
        ExpectedVersion::NoStream,
        (1..=10).map(numbered).collect(),
    )
    .await;
    append(
        t,
        &stream("user-other"),
        ExpectedVersion::Any,
        vec![numbered(0)],
    )
    .await;
    let versions =
        |events: Vec<RecordedEvent>| events.iter().map(|e| e.version).collect::<Vec<_>>();

    assert_eq!(
        versions(t.store.read_stream(&id, 4, 3).await.expect("read")),
        [4, 5, 6]
    );
    assert_eq!(
        versions(t.store.read_stream(&id, 9, 100).await.expect("read")),
        [9, 10]
    );
    assert_eq!(
        versions(t.store.read_stream(&id, 11, 100).await.expect("read")),
        [] as [u64; 0]
    );
    assert_eq!(
        versions(t.store.read_stream(&id, 0, 2).await.expect("read")),
        [1, 2]
    );
    assert_eq!(
        versions(
            t.store
                .read_stream_backward(&id, None, 3)
                .await
                .expect("read")
        ),
        [10, 9, 8]
    );
    assert_eq!(
        versions(
            t.store
                .read_stream_backward(&id, Some(3), 10)
                .await
                .expect("read")
        ),
        [2, 1]
    );
    assert!(
        t.store
            .read_stream(&stream("user-missing"), 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
    let loaded = t.store.load_stream(&id).await.expect("load");
    assert_eq!(versions(loaded), (1..=10).collect::<Vec<_>>());
}

/// The global log holds every event once, in commit order, each stream in
/// version order; reading in batches or resuming from a saved position
/// returns exactly the rest.
pub async fn global_log_is_ordered_and_resumes_exactly(t: &TestStore) {
    let mut expected_ids = Vec::new();
    for round in 0..10 {
        for name in ["a", "b", "c"] {
            let events = vec![numbered(round), numbered(round)];
            expected_ids.extend(events.iter().map(|e| e.event_id));
            append(
                t,
                &stream(&format!("log-{name}")),
                ExpectedVersion::Any,
                events,
            )
            .await;
        }
    }

    let whole = read_all_in_batches(t, LogPosition::START, 1000, 60).await;
    let ids: Vec<Uuid> = whole.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, expected_ids, "commit order, each event once");
    assert!(whole.windows(2).all(|w| w[0].position < w[1].position));

    let batched = read_all_in_batches(t, LogPosition::START, 7, 60).await;
    assert_eq!(
        batched.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        expected_ids
    );

    let saved = whole[24].position;
    let rest = read_all_in_batches(t, saved, 5, 35).await;
    assert_eq!(
        rest.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        expected_ids[25..]
    );
    let saved_text = saved
        .to_string()
        .parse::<LogPosition>()
        .expect("position parses back");
    assert_eq!(
        t.store.read_all(saved_text, 1).await.expect("read")[0].event_id,
        expected_ids[25]
    );
    assert!(
        t.store
            .read_all(whole[59].position, 10)
            .await
            .expect("read")
            .is_empty()
    );

    let streamed: Vec<RecordedEvent> = t
        .store
        .stream_all(LogPosition::START, 4)
        .try_collect()
        .await
        .expect("stream_all");
    assert_eq!(
        streamed.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        expected_ids
    );

    let mut per_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for event in &whole {
        per_stream
            .entry(event.stream_id.as_str())
            .or_default()
            .push(event.version);
    }
    for (id, versions) in per_stream {
        assert_eq!(
            versions,
            (1..=20).collect::<Vec<_>>(),
            "{id} in version order"
        );
    }
}

/// Queries by type, time range, tenant, correlation id and header, alone
/// and combined, page through results in global order.
pub async fn query_by_every_path_with_paging(t: &TestStore) {
    let request = Uuid::now_v7();
    let other_request = Uuid::now_v7();
    let start = Utc::now() - Duration::seconds(1);
    // A tenant handle (scoped to acme) cannot write globex's events: there
    // the odd events are acme's too, and globex's queries find nothing.
    let scoped = t.store.tenant().is_some();
    for n in 0..6_usize {
        let tenant = if n % 2 == 0 {
            "acme"
        } else {
            tenant_for(t, "globex")
        };
        let correlation = if n < 4 { request } else { other_request };
        let metadata = Metadata::new()
            .with_tenant(tenant)
            .with_correlation_id(correlation)
            .with_header("channel", if n % 3 == 0 { "api" } else { "web" });
        let event_type = if n % 2 == 0 {
            "test.user.registered"
        } else {
            "test.user.renamed"
        };
        let new = event(event_type, json!({ "n": n })).with_metadata(metadata);
        append(
            t,
            &stream(&format!("user-q{n}")),
            ExpectedVersion::NoStream,
            vec![new],
        )
        .await;
    }
    append(
        t,
        &stream("user-plain"),
        ExpectedVersion::Any,
        vec![numbered(99)],
    )
    .await;
    let end = Utc::now() + Duration::seconds(1);

    let ns = |page: &QueryPageView| page.0.clone();
    let all_pages = |query: EventQuery| async move {
        let mut found = Vec::new();
        let mut query = query;
        loop {
            let page = t.store.query(&query).await.expect("query");
            assert!(page.events.len() <= query.limit);
            found.extend(
                page.events
                    .iter()
                    .map(|e| e.payload.to_value()["n"].as_u64().unwrap_or(999)),
            );
            // Each page continues the query's order: by recording time
            // (then sequence) with a time bound, by sequence otherwise.
            let key = |e: &RecordedEvent| {
                let at = query.in_recorded_order().then_some(e.recorded_at);
                (at, e.position.sequence)
            };
            assert!(page.events.windows(2).all(|w| key(&w[0]) < key(&w[1])));
            match page.next {
                Some(after) => {
                    let last = page.events.last().expect("a page before a cursor");
                    assert_eq!(
                        (after.recorded_at, after.sequence),
                        key(last),
                        "the cursor is the last event's sort key"
                    );
                    query = query.after(after);
                }
                None => return QueryPageView(found),
            }
        }
    };

    let count = |query: EventQuery| async move { t.store.count(&query).await.expect("count") };
    assert_eq!(count(EventQuery::new()).await, 7);
    assert_eq!(
        count(EventQuery::new().tenant("globex")).await,
        if scoped { 0 } else { 3 }
    );
    assert_eq!(
        count(
            EventQuery::new()
                .header("channel", "api")
                .correlation_id(request)
        )
        .await,
        2
    );
    assert_eq!(
        count(EventQuery::new().event_type("test.user.renamed").limit(1)).await,
        3,
        "paging is ignored"
    );
    let by_type = all_pages(
        EventQuery::new()
            .event_type("test.user.registered")
            .limit(2),
    )
    .await;
    assert_eq!(ns(&by_type), [0, 2, 4]);
    let two_types = all_pages(
        EventQuery::new()
            .event_type("test.user.renamed")
            .event_type("test.numbered")
            .limit(1),
    )
    .await;
    assert_eq!(ns(&two_types), [1, 3, 5, 99]);
    let by_tenant = all_pages(EventQuery::new().tenant("globex").limit(2)).await;
    let globex_events: &[u64] = if scoped { &[] } else { &[1, 3, 5] };
    assert_eq!(ns(&by_tenant), globex_events);
    let by_correlation = all_pages(EventQuery::new().correlation_id(request).limit(3)).await;
    assert_eq!(ns(&by_correlation), [0, 1, 2, 3]);
    let by_header = all_pages(EventQuery::new().header("channel", "api")).await;
    assert_eq!(ns(&by_header), [0, 3]);
    let no_such_header = all_pages(EventQuery::new().header("channel", "fax")).await;
    assert!(ns(&no_such_header).is_empty());
    let in_window = all_pages(EventQuery::new().recorded_between(start, end).limit(4)).await;
    assert_eq!(ns(&in_window), [0, 1, 2, 3, 4, 5, 99]);
    let before_window = all_pages(EventQuery::new().recorded_until(start)).await;
    assert!(ns(&before_window).is_empty());
    let after_window = all_pages(EventQuery::new().recorded_from(end)).await;
    assert!(ns(&after_window).is_empty());
    let combined = all_pages(
        EventQuery::new()
            .tenant("acme")
            .correlation_id(request)
            .event_type("test.user.registered")
            .header("channel", "web")
            .recorded_from(start),
    )
    .await;
    assert_eq!(ns(&combined), [2]);

    let first = t
        .store
        .query(&EventQuery::new().limit(3))
        .await
        .expect("query");
    assert_eq!(first.events.len(), 3);
    let after = first.next.expect("more pages");
    assert_eq!(after, first.events[2].position.sequence.into());
    let last = t
        .store
        .query(&EventQuery::new().after(after).limit(100))
        .await
        .expect("query");
    assert_eq!(last.events.len(), 4);
    assert_eq!(last.next, None);

    // In recorded order, the cursor carries the recording time, and counts
    // and pages continue after it.
    let window = EventQuery::new().recorded_between(start, end);
    let first = t
        .store
        .query(&window.clone().limit(3))
        .await
        .expect("query");
    let after = first.next.expect("more pages");
    assert_eq!(after.recorded_at, Some(first.events[2].recorded_at));
    assert_eq!(count(window.clone().after(after)).await, 4);
    let rest = t.store.query(&window.after(after)).await.expect("query");
    let seen: Vec<_> = first
        .events
        .iter()
        .chain(&rest.events)
        .map(|e| e.event_id)
        .collect();
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (7, 7), "every event once");
}

/// Query results as the list of their `n` payload fields.
#[derive(Debug)]
struct QueryPageView(Vec<u64>);

/// Non-ASCII stream ids, payloads and headers, and a 1 MiB payload, come back
/// byte for byte.
pub async fn unicode_and_large_payloads_round_trip(t: &TestStore) {
    let id = stream("用户-ümlaut-🦀");
    let body = json!({
        "name": "Zoë Ωmega 李雷 🧑‍💻",
        "quote": "she said \"hi\"\n\ttab\\slash \u{0001}",
        "nested": { "deep": [ { "x": "ä" }, null, true, 1.5, -7 ] },
    });
    let large = "x".repeat(1 << 20);
    let metadata = Metadata::new()
        .with_actor("Ørjan")
        .with_header("ключ", "値");
    append(
        t,
        &id,
        ExpectedVersion::NoStream,
        vec![
            event("test.unicode", body.clone()).with_metadata(metadata.clone()),
            event("test.large", json!({ "blob": large })),
        ],
    )
    .await;
    let read = t.store.read_stream(&id, 1, 10).await.expect("read");
    assert_eq!(read[0].stream_id.as_str(), "用户-ümlaut-🦀");
    assert_eq!(read[0].payload.to_value(), body);
    assert_eq!(read[0].metadata, as_stored(t, &metadata));
    assert_eq!(
        read[1].payload.to_value()["blob"].as_str().map(str::len),
        Some(1 << 20)
    );
    let queried = t
        .store
        .query(&EventQuery::new().header("ключ", "値"))
        .await
        .expect("query");
    assert_eq!(queried.events.len(), 1);
}

/// A payload that is not JSON, planted behind the store's back, is reported
/// as `CorruptEvent` naming stream, version and type by every read path, or
/// refused by the storage itself; it never panics.
pub async fn invalid_json_in_storage_is_a_typed_error(t: &TestStore) {
    match t
        .plant_raw_event("user-corrupt", 1, "test.user.registered", "{not json")
        .await
    {
        Err(refusal) => {
            // PostgreSQL's jsonb column, and the in-memory store, cannot hold it.
            assert!(
                refusal.contains("json") || refusal.contains("JSON"),
                "storage refused for another reason: {refusal}"
            );
        }
        Ok(()) => {
            let expect_corrupt = |result: Result<Vec<RecordedEvent>>| match result {
                Err(Error::CorruptEvent {
                    stream,
                    version,
                    event_type,
                    reason,
                }) => {
                    assert_eq!((stream.as_str(), version), ("user-corrupt", 1));
                    assert_eq!(event_type, "test.user.registered");
                    assert!(reason.contains("JSON"), "{reason}");
                }
                other => panic!("expected CorruptEvent, got {other:?}"),
            };
            let id = stream("user-corrupt");
            expect_corrupt(t.store.read_stream(&id, 1, 10).await);
            expect_corrupt(t.store.read_stream_backward(&id, None, 10).await);
            expect_corrupt(t.store.read_all(LogPosition::START, 10).await);
            expect_corrupt(
                t.store
                    .query(&EventQuery::new())
                    .await
                    .map(|page| page.events),
            );
            // The stream's version is still known, so appends stay consistent.
            assert_eq!(t.store.stream_version(&id).await.expect("version"), 1);
        }
    }
}

/// Decoding into a typed event names stream, version and type when the type
/// is unknown or the payload does not fit.
pub async fn unknown_or_misshapen_events_are_typed_decode_errors(t: &TestStore) {
    let id = stream("user-decode");
    let good = NewEvent::from_event(&UserEvent::Registered {
        email: "ada@acme.test".into(),
    })
    .expect("encode");
    append(
        t,
        &id,
        ExpectedVersion::NoStream,
        vec![
            good,
            event("test.user.exploded", json!({ "boom": true })),
            event("test.user.renamed", json!({ "nom": "wrong field" })),
            event("test.user.renamed", json!({ "name": "Ada" })).with_schema_version(7),
        ],
    )
    .await;
    let read = t.store.read_stream(&id, 1, 10).await.expect("read");
    assert_eq!(
        read[0].decode::<UserEvent>().expect("decodes"),
        UserEvent::Registered {
            email: "ada@acme.test".into()
        }
    );
    match read[1].decode::<UserEvent>() {
        Err(Error::UnknownEventType {
            stream,
            version,
            event_type,
            ..
        }) => {
            assert_eq!(
                (stream.as_str(), version, event_type.as_str()),
                ("user-decode", 2, "test.user.exploded")
            );
        }
        other => panic!("expected UnknownEventType, got {other:?}"),
    }
    match read[2].decode::<UserEvent>() {
        Err(error @ Error::Decode { .. }) => {
            let message = error.to_string();
            for part in ["user-decode", "event 3", "test.user.renamed", "name"] {
                assert!(message.contains(part), "{message:?} lacks {part:?}");
            }
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    match read[3].decode::<UserEvent>() {
        Err(Error::Decode {
            schema_version: 7,
            reason,
            ..
        }) => {
            assert!(reason.contains("schema version 7"), "{reason}")
        }
        other => panic!("expected Decode of version 7, got {other:?}"),
    }
}

/// Stored events cannot be updated or deleted, even with raw SQL.
pub async fn stored_events_cannot_be_changed(t: &TestStore) {
    let id = stream("user-immutable");
    append(t, &id, ExpectedVersion::NoStream, vec![numbered(1)]).await;
    if let Some(outcomes) = t.try_raw_mutations().await {
        for outcome in outcomes {
            match outcome {
                Err(message) => assert!(message.contains("append-only"), "{message}"),
                Ok(rows) => panic!("a raw mutation changed {rows} rows"),
            }
        }
    }
    let read = t.store.read_stream(&id, 1, 10).await.expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event_type, "test.numbered");
}

fn snapshot(stream: &str, version: u64, data: &[u8], age_hours: i64) -> Snapshot {
    use chrono::SubsecRound;
    Snapshot {
        stream_id: StreamId::new(stream).expect("valid stream id"),
        version,
        snapshot_version: 1,
        encoding: 0,
        data: data.to_vec(),
        taken_at: (Utc::now() - Duration::hours(age_hours)).trunc_subsecs(6),
    }
}

/// `SnapshotStore::delete_stream` removes every snapshot of one stream (what
/// crypto-shredding does on forget) and no other stream's.
pub async fn a_streams_snapshots_are_deleted_together(t: &TestStore) {
    with_events(t, "user-del-a", 6).await;
    with_events(t, "user-del-b", 1).await;
    for version in [2, 4, 6] {
        t.store
            .snapshots()
            .save(snapshot("user-del-a", version, b"a", 0))
            .await
            .expect("save");
    }
    t.store
        .snapshots()
        .save(snapshot("user-del-b", 1, b"b", 0))
        .await
        .expect("save");
    let a = stream("user-del-a");
    assert_eq!(
        t.store.snapshots().delete_stream(&a).await.expect("delete"),
        3
    );
    assert!(
        t.store
            .snapshots()
            .load(&a, None)
            .await
            .expect("load")
            .is_none()
    );
    assert_eq!(
        t.store
            .snapshots()
            .delete_stream(&a)
            .await
            .expect("delete again"),
        0
    );
    let b = t
        .store
        .snapshots()
        .load(&stream("user-del-b"), None)
        .await
        .expect("load")
        .expect("the other stream's snapshot stays");
    assert_eq!(b.version, 1);
}

/// Snapshots are stored per stream and version, the newest at or below a
/// version is found, a snapshot of the same version is replaced, and
/// retention deletes beyond the last K and older than T.
pub async fn snapshots_are_stored_found_and_pruned(t: &TestStore) {
    with_events(t, "user-snap-a", 15).await;
    with_events(t, "user-snap-b", 4).await;
    let a = stream("user-snap-a");
    for version in [5, 10, 15] {
        let saved = snapshot(
            "user-snap-a",
            version,
            format!("state at {version}").as_bytes(),
            0,
        );
        t.store.snapshots().save(saved).await.expect("save");
    }
    t.store
        .snapshots()
        .save(snapshot("user-snap-b", 3, b"old b", 72))
        .await
        .expect("save");
    t.store
        .snapshots()
        .save(snapshot("user-snap-b", 4, b"new b", 0))
        .await
        .expect("save");

    let newest = t
        .store
        .snapshots()
        .load(&a, None)
        .await
        .expect("load")
        .expect("found");
    assert_eq!(
        newest,
        snapshot("user-snap-a", 15, b"state at 15", 0).with_taken_at(newest.taken_at)
    );
    let at_12 = t
        .store
        .snapshots()
        .load(&a, Some(12))
        .await
        .expect("load")
        .expect("found");
    assert_eq!(
        (at_12.version, at_12.data.as_slice()),
        (10, b"state at 10".as_slice())
    );
    assert!(
        t.store
            .snapshots()
            .load(&a, Some(4))
            .await
            .expect("load")
            .is_none()
    );
    assert!(
        t.store
            .snapshots()
            .load(&stream("user-none"), None)
            .await
            .expect("load")
            .is_none()
    );

    let replacement = snapshot("user-snap-a", 10, b"retaken", 0);
    t.store
        .snapshots()
        .save(replacement)
        .await
        .expect("replace");
    let at_12 = t
        .store
        .snapshots()
        .load(&a, Some(12))
        .await
        .expect("load")
        .expect("found");
    assert_eq!(at_12.data, b"retaken");

    let keep_two = RetentionPolicy {
        keep_last: Some(2),
        max_age: None,
    };
    assert_eq!(
        t.store.snapshots().prune(&keep_two).await.expect("prune"),
        1,
        "a@5 goes"
    );
    assert!(
        t.store
            .snapshots()
            .load(&a, Some(9))
            .await
            .expect("load")
            .is_none()
    );
    assert_eq!(
        t.store
            .snapshots()
            .load(&a, Some(10))
            .await
            .expect("load")
            .map(|s| s.version),
        Some(10)
    );

    let one_day = RetentionPolicy {
        keep_last: None,
        max_age: Some(std::time::Duration::from_secs(86_400)),
    };
    assert_eq!(
        t.store.snapshots().prune(&one_day).await.expect("prune"),
        1,
        "b@3 is three days old"
    );
    let b = stream("user-snap-b");
    assert_eq!(
        t.store.snapshots().load(&b, Some(3)).await.expect("load"),
        None
    );
    assert_eq!(
        t.store
            .snapshots()
            .load(&b, None)
            .await
            .expect("load")
            .map(|s| s.version),
        Some(4)
    );
    assert_eq!(
        t.store
            .snapshots()
            .prune(&RetentionPolicy::default())
            .await
            .expect("prune"),
        0
    );
}

trait WithTakenAt {
    fn with_taken_at(self, at: chrono::DateTime<Utc>) -> Self;
}

impl WithTakenAt for Snapshot {
    fn with_taken_at(mut self, at: chrono::DateTime<Utc>) -> Self {
        self.taken_at = at;
        self
    }
}

/// A NUL character, which PostgreSQL cannot store in text or `jsonb`, gets
/// the same answer on every backend: a typed error naming the field, and
/// nothing written.
pub async fn nul_characters_are_refused_naming_the_field(t: &TestStore) {
    let id = stream("user-nul");
    let cases = [
        ("payload", event("test.nul", json!({ "name": "a\u{0}b" }))),
        ("payload", event("test.nul", json!({ "a\u{0}": 1 }))),
        (
            "actor",
            event("test.nul", json!({})).with_metadata(Metadata::new().with_actor("x\u{0}")),
        ),
        (
            "headers",
            event("test.nul", json!({})).with_metadata(Metadata::new().with_header("k", "v\u{0}")),
        ),
    ];
    for (field, bad) in cases {
        match t.store.append(&id, ExpectedVersion::Any, vec![bad]).await {
            Err(Error::InvalidInput {
                field: named,
                reason,
            }) => {
                assert_eq!(named, field, "{reason}");
                assert!(
                    reason.contains("user-nul") && reason.contains("NUL"),
                    "{reason}"
                );
            }
            other => panic!("expected a refusal naming {field}, got {other:?}"),
        }
    }
    // A backslash followed by `u0000` is text, not a NUL.
    append(
        t,
        &id,
        ExpectedVersion::NoStream,
        vec![event("test.nul", json!({ "path": "C:\\u0000" }))],
    )
    .await;
    let stored = t.store.read_stream(&id, 1, 10).await.expect("read");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]
            .payload
            .decode::<serde_json::Value>()
            .expect("decode"),
        json!({ "path": "C:\\u0000" })
    );
}

/// A checkpoint beyond what the SQL backends store (signed 64-bit) is
/// refused on every backend, never saved clamped.
pub async fn checkpoints_refuse_positions_they_cannot_store(t: &TestStore) {
    let edge = LogPosition::new(i64::MAX as u64, i64::MAX as u64);
    t.store
        .save_checkpoint("edge", edge)
        .await
        .expect("save the largest");
    assert_eq!(
        t.store.load_checkpoint("edge").await.expect("load"),
        Some(edge)
    );
    for too_far in [
        LogPosition::new(i64::MAX as u64 + 1, 0),
        LogPosition::new(0, u64::MAX),
    ] {
        match t.store.save_checkpoint("edge", too_far).await {
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!(field, "checkpoint position");
                assert!(reason.contains("`edge`"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(
        t.store.load_checkpoint("edge").await.expect("load"),
        Some(edge)
    );
}

/// Subscription checkpoints and dead letters survive in the store.
pub async fn checkpoints_and_dead_letters_are_kept(t: &TestStore) {
    use annals::subscription::dead_letter::DeadLetter;
    use chrono::SubsecRound;

    assert_eq!(
        t.store.load_checkpoint("projector").await.expect("load"),
        None
    );
    t.store
        .save_checkpoint("projector", LogPosition::new(7, 42))
        .await
        .expect("save");
    t.store
        .save_checkpoint("projector", LogPosition::new(9, 50))
        .await
        .expect("save again");
    t.store
        .save_checkpoint("mailer", LogPosition::new(1, 1))
        .await
        .expect("save");
    assert_eq!(
        t.store.load_checkpoint("projector").await.expect("load"),
        Some(LogPosition::new(9, 50))
    );
    // An operator's listing: every reader of this handle, by name.
    let listed: Vec<(String, LogPosition)> = t
        .store
        .checkpoints()
        .list()
        .await
        .expect("list checkpoints")
        .into_iter()
        .map(|checkpoint| (checkpoint.name, checkpoint.position))
        .collect();
    assert_eq!(
        listed,
        [
            ("mailer".to_owned(), LogPosition::new(1, 1)),
            ("projector".to_owned(), LogPosition::new(9, 50)),
        ]
    );

    let letter = |n: u64| DeadLetter {
        id: Uuid::now_v7(),
        handler: format!("handler-{n}"),
        event_id: Uuid::now_v7(),
        stream_id: stream("user-dead"),
        version: n,
        event_type: "test.numbered".into(),
        error: format!("failure {n}: ünïcode"),
        attempts: 3,
        failed_at: (Utc::now() + Duration::milliseconds(n as i64)).trunc_subsecs(6),
        retry_requested_at: None,
    };
    let (first, second) = (letter(1), letter(2));
    t.store
        .dead_letters()
        .save(first.clone())
        .await
        .expect("save");
    t.store
        .dead_letters()
        .save(second.clone())
        .await
        .expect("save");
    assert_eq!(
        t.store.dead_letters().list(10).await.expect("list"),
        [first.clone(), second.clone()]
    );
    assert_eq!(
        t.store.dead_letters().list(1).await.expect("list"),
        std::slice::from_ref(&first)
    );
    assert_eq!(
        t.store.dead_letters().get(second.id).await.expect("get"),
        Some(second.clone())
    );
    assert!(
        t.store
            .dead_letters()
            .delete(first.id)
            .await
            .expect("delete")
    );
    assert!(
        !t.store
            .dead_letters()
            .delete(first.id)
            .await
            .expect("delete again")
    );
    assert_eq!(
        t.store.dead_letters().get(first.id).await.expect("get"),
        None,
        "a deleted dead letter is gone"
    );

    // An operator asks for a retry; a retry that fails again clears the
    // request and records the new error and attempts.
    let letters = t.store.dead_letters();
    assert!(
        letters
            .retry_requests(10)
            .await
            .expect("requests")
            .is_empty()
    );
    assert!(letters.request_retry(second.id).await.expect("request"));
    assert!(
        !letters.request_retry(first.id).await.expect("request"),
        "gone"
    );
    let requested = letters.retry_requests(10).await.expect("requests");
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0].id, second.id);
    assert!(requested[0].retry_requested_at.is_some());
    letters
        .retry_failed(second.id, "still failing", 2)
        .await
        .expect("record");
    let again = letters.get(second.id).await.expect("get").expect("kept");
    assert_eq!(
        (
            again.error.as_str(),
            again.attempts,
            again.retry_requested_at
        ),
        ("still failing", second.attempts + 2, None)
    );
    assert!(
        letters
            .retry_requests(10)
            .await
            .expect("requests")
            .is_empty()
    );
    assert_eq!(
        t.store
            .dead_letters()
            .list(10)
            .await
            .expect("list")
            .iter()
            .map(|letter| letter.id)
            .collect::<Vec<_>>(),
        [second.id]
    );
}

/// Streams are listed by id (then tenant), with their versions and times,
/// narrowed by a literal, case-sensitive prefix and paged by the last one
/// listed; a tenant handle lists its tenant's streams only.
pub async fn streams_are_listed_in_id_order_by_prefix_and_page(t: &TestStore) {
    use annals::store::StreamQuery;

    for (id, count) in [
        ("list-b", 1),
        ("list-a", 3),
        ("list-c", 2),
        ("other-1", 1),
        ("LIST-d", 1),
    ] {
        append(
            t,
            &stream(id),
            ExpectedVersion::NoStream,
            (0..count).map(numbered).collect(),
        )
        .await;
    }
    let unscoped = t.store.tenant().is_none();
    if unscoped {
        // Another tenant's stream under an id the unscoped store also holds.
        let mut theirs = numbered(9);
        theirs.metadata.tenant_id = Some("t-one".to_owned());
        append(
            t,
            &stream("list-b"),
            ExpectedVersion::NoStream,
            vec![theirs],
        )
        .await;
    }
    let ids = |streams: &[annals::store::StreamInfo]| -> Vec<(String, Option<String>)> {
        streams
            .iter()
            .map(|s| (s.stream_id.as_str().to_owned(), s.tenant_id.clone()))
            .collect()
    };
    let own = t.store.tenant().map(str::to_owned);
    let mut expected = vec![
        ("list-a".to_owned(), own.clone()),
        ("list-b".to_owned(), own.clone()),
    ];
    if unscoped {
        expected.push(("list-b".to_owned(), Some("t-one".to_owned())));
    }
    expected.push(("list-c".to_owned(), own.clone()));

    let listed = t
        .store
        .list_streams(&StreamQuery::new().prefix("list-"))
        .await
        .expect("list streams");
    assert_eq!(
        ids(&listed),
        expected,
        "by id then tenant; `LIST-d` does not match `list-`"
    );
    let a = &listed[0];
    assert_eq!(a.version, 3);
    assert!(a.created_at <= a.updated_at);

    // Every stream this handle sees, and nothing of another tenant's.
    let everything = t
        .store
        .list_streams(&StreamQuery::new())
        .await
        .expect("list every stream");
    assert_eq!(everything.len(), expected.len() + 2, "{everything:?}");
    assert!(
        everything.iter().all(|s| unscoped || s.tenant_id == own),
        "a tenant handle lists only its own streams: {everything:?}"
    );

    // Pages continue after the last stream listed, tenant included.
    let first = t
        .store
        .list_streams(&StreamQuery::new().prefix("list-").limit(2))
        .await
        .expect("first page");
    assert_eq!(ids(&first), expected[..2]);
    let rest = t
        .store
        .list_streams(&StreamQuery::new().prefix("list-").after(&first[1]))
        .await
        .expect("next page");
    assert_eq!(ids(&rest), expected[2..]);

    // The prefix is literal: `_` is no wildcard.
    assert!(
        t.store
            .list_streams(&StreamQuery::new().prefix("list_"))
            .await
            .expect("list")
            .is_empty()
    );
}

/// Appends over the size limits are refused with the limit and the value
/// named, and nothing is written.
pub async fn oversized_input_is_refused_naming_the_limit(t: &TestStore) {
    use annals::store::{MAX_EVENTS_PER_APPEND, MAX_METADATA_BYTES, MAX_PAYLOAD_BYTES};
    let id = stream("user-oversized");
    let refused = |result: Result<AppendResult>, field: &str, needles: &[String]| match result {
        Err(Error::InvalidInput { field: f, reason }) => {
            assert_eq!(f, field);
            for needle in needles {
                assert!(
                    reason.contains(needle.as_str()),
                    "{reason:?} lacks {needle:?}"
                );
            }
        }
        other => panic!("expected invalid {field}, got {other:?}"),
    };

    let huge = event(
        "test.huge",
        json!({ "blob": "x".repeat(MAX_PAYLOAD_BYTES) }),
    );
    refused(
        t.store.append(&id, ExpectedVersion::Any, vec![huge]).await,
        "payload",
        &[
            MAX_PAYLOAD_BYTES.to_string(),
            "user-oversized".into(),
            "test.huge".into(),
        ],
    );
    let chatty = numbered(1)
        .with_metadata(Metadata::new().with_header("note", "y".repeat(MAX_METADATA_BYTES)));
    refused(
        t.store
            .append(&id, ExpectedVersion::Any, vec![chatty])
            .await,
        "metadata",
        &[MAX_METADATA_BYTES.to_string()],
    );
    let many: Vec<NewEvent> = (0..=MAX_EVENTS_PER_APPEND).map(numbered).collect();
    refused(
        t.store.append(&id, ExpectedVersion::Any, many).await,
        "batch",
        &[
            (MAX_EVENTS_PER_APPEND + 1).to_string(),
            MAX_EVENTS_PER_APPEND.to_string(),
        ],
    );
    assert_eq!(
        t.store.stream_version(&id).await.expect("version"),
        0,
        "nothing was written"
    );
}

/// Every event is chained to its stream's previous one: an untouched log
/// verifies, stream by stream and whole; a payload changed behind the
/// store's back is named (stream, version, both hashes) by both checks, and
/// the other streams still verify.
pub async fn hash_chain_names_the_first_broken_link(t: &TestStore) {
    let first = stream("chain-a");
    let second = stream("chain-b");
    append(
        t,
        &first,
        ExpectedVersion::NoStream,
        vec![numbered(1), numbered(2)],
    )
    .await;
    let before = t.store.verify_stream(&first).await.expect("verify");
    t.store
        .append_batch(vec![
            StreamAppend::new(first.clone(), ExpectedVersion::Exact(2), vec![numbered(3)]),
            StreamAppend::new(
                second.clone(),
                ExpectedVersion::NoStream,
                vec![
                    numbered(1)
                        .with_metadata(Metadata::new().with_tenant(tenant_for(t, "tenant-1"))),
                ],
            ),
        ])
        .await
        .expect("batch append");
    let metadata = Metadata::new()
        .with_actor("Ørjan")
        .with_tenant(tenant_for(t, "tenant-1"))
        .with_correlation_id(Uuid::now_v7())
        .with_header("ключ", "値");
    append(
        t,
        &second,
        ExpectedVersion::Exact(1),
        vec![event("test.unicode", json!({ "name": "Zoë 🦀", "n": 1.5 })).with_metadata(metadata)],
    )
    .await;

    let a = t.store.verify_stream(&first).await.expect("verify a");
    assert!(a.is_intact(), "{:?}", a.first_break);
    assert_eq!(a.events_checked, 3);
    assert_ne!(
        a.head("chain-a"),
        before.head("chain-a"),
        "an append moves the stream's head link"
    );
    let log = t.store.verify_log().await.expect("verify the log");
    assert!(log.is_intact(), "{:?}", log.first_break);
    assert_eq!(log.events_checked, 5);
    assert_eq!(log.heads.len(), 2);
    assert_eq!(log.head("chain-a"), a.head("chain-a"));
    let empty = t
        .store
        .verify_stream(&stream("chain-none"))
        .await
        .expect("verify an empty stream");
    assert!(empty.is_intact() && empty.events_checked == 0 && empty.heads.is_empty());

    let Some(changed) = t
        .tamper(
            "UPDATE annals_events SET payload = '{\"n\": 20}' \
             WHERE stream_id = 'chain-a' AND version = 2",
        )
        .await
    else {
        return; // the in-memory store has no way around its API
    };
    assert_eq!(changed, 1);
    let a = t.store.verify_stream(&first).await.expect("verify a again");
    let broken = a.first_break.expect("the changed event is named");
    assert_eq!((broken.stream_id.as_str(), broken.version), ("chain-a", 2));
    assert!(broken.found.is_some());
    assert_ne!(Some(broken.expected), broken.found);
    assert_eq!(broken.reason, annals::hash_chain::BreakReason::LinkMismatch);
    let log = t.store.verify_log().await.expect("verify the log again");
    assert_eq!(log.first_break.as_ref(), Some(&broken));
    assert!(
        broken.to_string().contains(&format!(
            "stream chain-a{} version 2: the stored link does not match: expected hash ",
            t.store
                .tenant()
                .map(|tenant| format!(" of tenant {tenant:?}"))
                .unwrap_or_default()
        )),
        "{broken}"
    );
    let b = t.store.verify_stream(&second).await.expect("verify b");
    assert!(b.is_intact(), "{:?}", b.first_break);
}

/// A reader's lease: one owner at a time, taken over after it expires or is
/// released under a new generation, and the old owner's late checkpoint
/// write is refused with a typed error naming the reader and generations;
/// an operator's reset is noticed by the owner's next commit.
pub async fn leases_give_each_reader_one_owner_and_fence_the_last(t: &TestStore) {
    use std::time::Duration as StdDuration;

    let checkpoints = t.store.checkpoints();
    let ttl = StdDuration::from_secs(30);
    let a = checkpoints
        .acquire("mailer", "worker-a", ttl)
        .await
        .expect("acquire")
        .expect("a free reader's lease is taken");
    assert_eq!(a.position, LogPosition::START);
    assert!(
        checkpoints
            .acquire("mailer", "worker-b", ttl)
            .await
            .expect("acquire")
            .is_none(),
        "a live lease is not taken by another worker"
    );
    let row = checkpoints
        .load("mailer")
        .await
        .expect("load")
        .expect("row");
    assert_eq!(row.owner.as_deref(), Some("worker-a"));
    assert_eq!(row.generation, a.generation);
    assert!(row.lease_expires_at > row.renewed_at);
    checkpoints
        .commit(&a, LogPosition::START, LogPosition::new(3, 3))
        .await
        .expect("the owner commits");
    let renewed = checkpoints
        .renew(&a, ttl)
        .await
        .expect("renew")
        .expect("the owner renews");
    assert_eq!(renewed.generation, a.generation);

    // Released: b takes over at once, from a's checkpoint, one generation on.
    checkpoints.release(&a).await.expect("release");
    let b = checkpoints
        .acquire("mailer", "worker-b", ttl)
        .await
        .expect("acquire")
        .expect("a released lease is free");
    assert_eq!(b.generation, a.generation + 1);
    assert_eq!(b.position, LogPosition::new(3, 3));
    match checkpoints
        .commit(&a, LogPosition::new(3, 3), LogPosition::new(4, 4))
        .await
    {
        Err(Error::LeaseLost {
            reader,
            generation,
            current_generation,
        }) => {
            assert_eq!(reader, "mailer");
            assert_eq!(generation, a.generation);
            assert_eq!(current_generation, Some(b.generation));
        }
        other => panic!("a lost lease's write must be refused, got {other:?}"),
    }
    assert!(checkpoints.renew(&a, ttl).await.expect("renew").is_none());
    checkpoints
        .release(&a)
        .await
        .expect("releasing a lost lease does nothing");
    assert_eq!(
        t.store.load_checkpoint("mailer").await.expect("load"),
        Some(LogPosition::new(3, 3)),
        "the refused write changed nothing"
    );

    // An operator's reset: the owner's next commit names where it is now.
    t.store
        .save_checkpoint("mailer", LogPosition::START)
        .await
        .expect("reset");
    match checkpoints
        .commit(&b, LogPosition::new(3, 3), LogPosition::new(5, 5))
        .await
    {
        Err(Error::CheckpointMoved {
            reader,
            expected,
            found,
        }) => {
            assert_eq!(reader, "mailer");
            assert_eq!(expected, LogPosition::new(3, 3));
            assert_eq!(found, LogPosition::START);
        }
        other => panic!("a moved checkpoint must be reported, got {other:?}"),
    }
    checkpoints
        .commit(&b, LogPosition::START, LogPosition::new(5, 5))
        .await
        .expect("the owner resumes from the reset");

    // Expiry: a lease nobody renews is taken over once it runs out.
    let short = checkpoints
        .acquire("indexer", "worker-a", StdDuration::from_millis(200))
        .await
        .expect("acquire")
        .expect("free");
    assert!(
        checkpoints
            .acquire("indexer", "worker-b", ttl)
            .await
            .expect("acquire")
            .is_none()
    );
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    let taken = checkpoints
        .acquire("indexer", "worker-b", ttl)
        .await
        .expect("acquire")
        .expect("an expired lease is taken over");
    assert_eq!(taken.generation, short.generation + 1);
    assert!(matches!(
        checkpoints
            .commit(&short, LogPosition::START, LogPosition::new(1, 1))
            .await,
        Err(Error::LeaseLost { .. })
    ));

    // An operator pauses the reader: its owner's writes are refused (and
    // nothing moves), a renewal tells the owner, and resuming lets it on.
    assert!(
        checkpoints
            .set_paused("indexer", true)
            .await
            .expect("pause")
    );
    assert!(
        !checkpoints.set_paused("nobody", true).await.expect("pause"),
        "no row, nothing paused"
    );
    let paused = checkpoints
        .load("indexer")
        .await
        .expect("load")
        .expect("row");
    assert!(paused.paused);
    assert!(matches!(
        checkpoints
            .commit(&taken, LogPosition::START, LogPosition::new(2, 2))
            .await,
        Err(Error::ReaderPaused { ref reader }) if reader == "indexer"
    ));
    assert_eq!(
        checkpoints
            .load("indexer")
            .await
            .expect("load")
            .expect("row")
            .position,
        LogPosition::START,
        "a paused reader's checkpoint stays"
    );
    let renewed = checkpoints
        .renew(&taken, ttl)
        .await
        .expect("renew")
        .expect("still held");
    assert!(renewed.paused, "the renewal tells the owner");
    assert!(
        checkpoints
            .set_paused("indexer", false)
            .await
            .expect("resume")
    );
    let renewed = checkpoints
        .renew(&renewed, ttl)
        .await
        .expect("renew")
        .expect("still held");
    assert!(!renewed.paused);
    checkpoints
        .commit(&renewed, LogPosition::START, LogPosition::new(2, 2))
        .await
        .expect("a resumed reader commits");

    // A rebuild request shows in the row and reaches the owner at its next
    // renewal; it can be withdrawn.
    assert!(
        checkpoints
            .request_rebuild("indexer", true)
            .await
            .expect("request")
    );
    assert!(
        !checkpoints
            .request_rebuild("nobody", true)
            .await
            .expect("request"),
        "no row, nothing requested"
    );
    let row = checkpoints
        .load("indexer")
        .await
        .expect("load")
        .expect("row");
    assert!(row.rebuild_requested);
    let renewed = checkpoints
        .renew(&renewed, ttl)
        .await
        .expect("renew")
        .expect("still held");
    assert!(renewed.rebuild_requested, "the renewal tells the owner");
    assert!(
        checkpoints
            .request_rebuild("indexer", false)
            .await
            .expect("withdraw")
    );
    assert!(
        !checkpoints
            .list()
            .await
            .expect("list")
            .iter()
            .any(|row| row.rebuild_requested)
    );
}

/// Events keep their tags, in order, and queries find them by tag (with
/// other conditions, and within their tenant).
pub async fn tags_are_stored_read_and_queried(t: &TestStore) {
    let acme = tenant_for(t, "acme");
    let tagged = |n: usize, tags: &[&str]| {
        numbered(n)
            .with_tags(tags.iter().copied())
            .with_metadata(Metadata::new().with_tenant(acme))
    };
    let id = stream("tagged-1");
    append(
        t,
        &id,
        ExpectedVersion::NoStream,
        vec![
            tagged(1, &["email:ada@example.test", "role:admin"]),
            tagged(2, &[]),
            tagged(3, &["role:admin"]),
        ],
    )
    .await;
    let stored = t.store.load_stream(&id).await.expect("read");
    let tags: Vec<Vec<String>> = stored.iter().map(|event| event.tags.clone()).collect();
    assert_eq!(
        tags,
        [
            vec!["email:ada@example.test".to_owned(), "role:admin".to_owned()],
            vec![],
            vec!["role:admin".to_owned()],
        ]
    );
    let from_log = read_all_in_batches(t, LogPosition::START, 10, 3).await;
    assert!(
        from_log.iter().any(|event| event.tags == stored[0].tags),
        "the global log carries tags"
    );

    let admins = t
        .store
        .query(&EventQuery::new().tag("role:admin"))
        .await
        .expect("query by tag");
    let numbers: Vec<u64> = admins.events.iter().map(|event| event.version).collect();
    assert_eq!(numbers, [1, 3]);
    let both = EventQuery::new()
        .tag("role:admin")
        .tag("email:ada@example.test");
    assert_eq!(t.store.count(&both).await.expect("count"), 1);
    let none = EventQuery::new().tag("role:admin").event_type("test.other");
    assert_eq!(t.store.count(&none).await.expect("count"), 0);

    if t.store.tenant().is_none() {
        // Another tenant's event with the same tag is found by a query for
        // its tenant only.
        let globex = numbered(9)
            .with_tags(["role:admin"])
            .with_metadata(Metadata::new().with_tenant("globex"));
        append(
            t,
            &stream("tagged-2"),
            ExpectedVersion::NoStream,
            vec![globex],
        )
        .await;
        let query = EventQuery::new().tag("role:admin").tenant("acme");
        assert_eq!(t.store.count(&query).await.expect("count"), 2);
    }

    for bad in ["", "line\nbreak", &"t".repeat(257)] {
        let refused = t
            .store
            .append(
                &stream("tagged-3"),
                ExpectedVersion::Any,
                vec![numbered(1).with_tags([bad])],
            )
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidInput { field: "tag", .. })),
            "{bad:?}: {refused:?}"
        );
    }
    assert_eq!(
        t.store
            .stream_version(&stream("tagged-3"))
            .await
            .expect("version"),
        0
    );
}

/// An append with a condition writes nothing when an event matching it was
/// recorded after the caller's position, and names the criterion; events
/// up to the position, of other types, missing a tag, or of another tenant
/// do not count.
pub async fn append_conditions_refuse_what_the_caller_decided_against(t: &TestStore) {
    use annals::store::{AppendCondition, Criterion};
    let acme = tenant_for(t, "acme");
    let registered = |email: &str| {
        event("iam.user.registered", json!({ "email": email }))
            .with_tags([format!("email:{email}"), "kind:user".to_owned()])
            .with_metadata(Metadata::new().with_tenant(acme))
    };
    let unique = |email: &str| {
        AppendCondition::none_match(
            Criterion::tagged([format!("email:{email}")]).of_types(["iam.user.registered"]),
        )
    };
    let conditional = |id: &str, email: &str, condition: AppendCondition| {
        StreamAppend::new(
            stream(id),
            ExpectedVersion::NoStream,
            vec![registered(email)],
        )
        .with_condition(condition)
    };

    // Nothing matches yet: written.
    let first = t
        .store
        .append_batch(vec![conditional(
            "cond-1",
            "ada@x.test",
            unique("ada@x.test"),
        )])
        .await
        .expect("no matching event yet");
    let first_position = first[0].position;

    // From the start of the log, the first registration counts: refused,
    // naming the stream, the criterion and where the event is; the other
    // stream of the batch is not written either.
    let refused = t
        .store
        .append_batch(vec![
            StreamAppend::new(
                stream("cond-side"),
                ExpectedVersion::NoStream,
                vec![numbered(1)],
            ),
            conditional("cond-2", "ada@x.test", unique("ada@x.test")),
        ])
        .await;
    match refused {
        Err(Error::AppendConditionFailed {
            stream: failed,
            criterion,
            after,
            found,
        }) => {
            assert_eq!(failed, "cond-2");
            assert!(criterion.contains("email:ada@x.test"), "{criterion}");
            assert!(criterion.contains("iam.user.registered"), "{criterion}");
            assert_eq!(after, None);
            assert_eq!(found, first_position);
        }
        other => panic!("expected AppendConditionFailed, got {other:?}"),
    }
    for id in ["cond-2", "cond-side"] {
        assert_eq!(
            t.store.stream_version(&stream(id)).await.expect("version"),
            0,
            "{id}"
        );
    }

    // Decided after the first registration: it no longer counts.
    t.store
        .append_batch(vec![conditional(
            "cond-3",
            "ada@x.test",
            unique("ada@x.test").after(Some(first_position)),
        )])
        .await
        .expect("the match is at or before the position");

    // Other types, or events missing one of the criterion's tags, do not count.
    let other_type = AppendCondition::none_match(
        Criterion::tagged(["email:ada@x.test"]).of_types(["iam.user.removed"]),
    );
    let missing_tag =
        AppendCondition::none_match(Criterion::tagged(["email:ada@x.test", "kind:robot"]));
    for (id, condition) in [("cond-4", other_type), ("cond-5", missing_tag)] {
        t.store
            .append_batch(vec![conditional(id, "bob@x.test", condition)])
            .await
            .unwrap_or_else(|error| panic!("{id}: {error:?}"));
    }
    // Any of several criteria counts.
    let either = AppendCondition::none_match(
        annals::store::EventCriteria::new()
            .or(Criterion::tagged(["email:nobody@x.test"]))
            .or(Criterion::tagged(["email:bob@x.test", "kind:user"])),
    );
    let refused = t
        .store
        .append_batch(vec![conditional("cond-6", "carol@x.test", either)])
        .await;
    assert!(
        matches!(&refused, Err(Error::AppendConditionFailed { criterion, .. }) if criterion.contains("bob@x.test")),
        "{refused:?}"
    );

    if t.store.tenant().is_none() {
        // Another tenant's registration of the same address does not count.
        let globex = event("iam.user.registered", json!({}))
            .with_tags(["email:dan@x.test"])
            .with_metadata(Metadata::new().with_tenant("globex"));
        append(
            t,
            &stream("cond-globex"),
            ExpectedVersion::NoStream,
            vec![globex],
        )
        .await;
        t.store
            .append_batch(vec![conditional(
                "cond-7",
                "dan@x.test",
                unique("dan@x.test"),
            )])
            .await
            .expect("globex's event is not acme's");
    }

    // A condition no backend can lock on is refused before anything is
    // written.
    let untagged =
        AppendCondition::none_match(Criterion::tagged(Vec::<String>::new()).of_types(["x"]));
    let refused = t
        .store
        .append_batch(vec![conditional("cond-8", "erin@x.test", untagged)])
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::InvalidInput {
                field: "append condition",
                ..
            })
        ),
        "{refused:?}"
    );
}

/// Sixteen writers register one address at once, each in its own stream,
/// each on the condition that nobody has: exactly one wins, every round.
pub async fn racing_conditional_appends_exactly_one_wins(t: &TestStore) {
    use annals::store::{AppendCondition, Criterion};
    let acme = tenant_for(t, "acme").to_owned();
    for round in 0..5 {
        let email = format!("email:race-{round}@x.test");
        let writers = (0..16).map(|writer| {
            let store = t.store.clone();
            let email = email.clone();
            let acme = acme.clone();
            tokio::spawn(async move {
                let registered = event("iam.user.registered", json!({ "writer": writer }))
                    .with_tags([email.clone()])
                    .with_metadata(Metadata::new().with_tenant(acme));
                let append = StreamAppend::new(
                    stream(&format!("racer-{round}-{writer}")),
                    ExpectedVersion::NoStream,
                    vec![registered],
                )
                .with_condition(AppendCondition::none_match(Criterion::tagged([email])));
                store.append_batch(vec![append]).await
            })
        });
        let mut wins = 0;
        for outcome in futures_util::future::join_all(writers).await {
            match outcome.expect("writer task") {
                Ok(_) => wins += 1,
                Err(Error::AppendConditionFailed { .. }) => {}
                Err(other) => panic!("round {round}: unexpected error: {other:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one registration wins");
        let stored = t
            .store
            .count(&EventQuery::new().tag(email.as_str()))
            .await
            .expect("count");
        assert_eq!(stored, 1, "round {round}: one event carries the address");
    }
}

/// `read_matching` returns the events of the tenant matching any
/// criterion, in log order, after the position given, a page at a time.
pub async fn read_matching_returns_the_tenants_matching_events_in_order(t: &TestStore) {
    use annals::store::{Criterion, EventCriteria};
    let acme = tenant_for(t, "acme");
    let tagged = |event_type: &str, tags: &[&str]| {
        event(event_type, json!({}))
            .with_tags(tags.iter().copied())
            .with_metadata(Metadata::new().with_tenant(acme))
    };
    append(
        t,
        &stream("matching-1"),
        ExpectedVersion::NoStream,
        vec![
            tagged("role.granted", &["role:admin", "user:1"]),
            tagged("role.granted", &["role:viewer", "user:1"]),
            tagged("role.revoked", &["role:admin", "user:1"]),
            tagged("role.granted", &["role:admin", "user:2"]),
        ],
    )
    .await;
    let criteria = EventCriteria::new()
        .or(Criterion::tagged(["user:1", "role:admin"]).of_types(["role.granted"]))
        .or(Criterion::tagged(["user:2"]));
    let tenant = t.store.tenant().is_none().then_some(acme);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let matching = loop {
        let events = t
            .store
            .read_matching(tenant, &criteria, None, 10)
            .await
            .expect("read matching");
        if events.len() >= 2 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let versions: Vec<u64> = matching.iter().map(|event| event.version).collect();
    assert_eq!(versions, [1, 4], "matching events, in log order");
    let rest = t
        .store
        .read_matching(tenant, &criteria, Some(matching[0].position), 1)
        .await
        .expect("read after");
    assert_eq!(rest.len(), 1, "a page of one");
    assert_eq!(rest[0].version, 4);
    if t.store.tenant().is_none() {
        let globex = t
            .store
            .read_matching(Some("globex"), &criteria, None, 10)
            .await
            .expect("read globex");
        assert!(globex.is_empty(), "acme's events are not globex's");
    } else {
        let refused = t
            .store
            .read_matching(Some("globex"), &criteria, None, 10)
            .await;
        assert!(
            matches!(
                refused,
                Err(Error::InvalidInput {
                    field: "tenant id",
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    let refused = t
        .store
        .read_matching(tenant, &EventCriteria::new(), None, 10)
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidInput { .. })),
        "{refused:?}"
    );
}

/// A decision that an address is free, raced by sixteen registrations of
/// it: one registers, the fifteen others are refused by the rule (after
/// deciding again on the winner's event), every round.
pub async fn racing_decisions_register_an_address_once(t: &TestStore) {
    use annals::store::{Criterion, EventCriteria};

    #[derive(Debug, thiserror::Error)]
    #[error("taken")]
    struct Taken;

    struct Register {
        writer: usize,
        round: usize,
    }

    impl Decision for Register {
        type State = bool;
        type Error = Taken;

        fn criteria(&self) -> EventCriteria {
            Criterion::tagged([format!("email:decided-{}@x.test", self.round)]).into()
        }

        fn evolve(&self, taken: &mut bool, _event: &RecordedEvent) -> annals::Result<()> {
            *taken = true;
            Ok(())
        }

        fn decide(&self, taken: &bool) -> Result<Appends, Taken> {
            if *taken {
                return Err(Taken);
            }
            let registered = event("iam.user.registered", json!({ "writer": self.writer }))
                .with_tags([format!("email:decided-{}@x.test", self.round)]);
            Ok(StreamAppend::new(
                stream(&format!("decider-{}-{}", self.round, self.writer)),
                ExpectedVersion::NoStream,
                vec![registered],
            )
            .into())
        }
    }

    let decisions = match t.store.tenant() {
        Some(_) => Decisions::new(t.store.clone()),
        None => Decisions::new(t.store.clone()).for_tenant("acme"),
    };
    for round in 0..5 {
        let racers = (0..16).map(|writer| {
            let decisions = decisions.clone();
            tokio::spawn(async move {
                decisions
                    .execute(&Register { writer, round }, Metadata::new())
                    .await
            })
        });
        let mut wins = 0;
        for outcome in futures_util::future::join_all(racers).await {
            match outcome.expect("racer task") {
                Ok(decided) => {
                    wins += 1;
                    assert!(decided.position.is_some());
                }
                Err(CommandError::Rejected(Taken)) => {}
                Err(other) => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: one registration");
    }
}

/// `read_log` returns only the wanted types, in log order, a page at a
/// time; it reads past events it skips (so a reader of a rare type does not
/// read the same stretch again), says where the head is, and leaves the
/// metadata out when asked.
pub async fn read_log_filters_types_in_the_store_and_reads_past_the_rest(t: &TestStore) {
    use annals::store::LogFilter;
    let metadata = Metadata::new().with_actor("reader@acme.test");
    let mut rare_ids = Vec::new();
    for n in 0..30 {
        let kind = if n % 10 == 3 {
            "test.rare"
        } else {
            "test.common"
        };
        let appended = event(kind, json!({ "n": n })).with_metadata(metadata.clone());
        if kind == "test.rare" {
            rare_ids.push(appended.event_id);
        }
        append(
            t,
            &stream(&format!("filtered-{n}")),
            ExpectedVersion::NoStream,
            vec![appended],
        )
        .await;
    }
    // Two common events after the last rare one.
    let everything = read_all_in_batches(t, LogPosition::START, 100, 30).await;
    assert_eq!(everything.len(), 30);
    let head = everything[29].position;

    let rare = LogFilter::event_types(["test.rare"]);
    let page = t
        .store
        .read_log(LogPosition::START, 100, &rare)
        .await
        .expect("read_log");
    assert_eq!(
        page.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        rare_ids
    );
    assert_eq!(
        page.read_to, head,
        "read to the head, past the common events after the last rare one"
    );
    assert_eq!(page.head, head);
    assert!(page.at_head());
    assert_eq!(
        page.events[0].metadata.actor.as_deref(),
        Some("reader@acme.test")
    );

    // A page at a time: a full page reads to its last event.
    let first = t
        .store
        .read_log(LogPosition::START, 2, &rare)
        .await
        .expect("read_log");
    assert_eq!(first.events.len(), 2);
    assert_eq!(first.read_to, first.events[1].position);
    assert!(!first.at_head());
    let second = t
        .store
        .read_log(first.read_to, 2, &rare)
        .await
        .expect("read_log");
    assert_eq!(
        second.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        rare_ids[2..]
    );
    assert_eq!(second.read_to, head);

    // Nothing wanted after a position: the read still moves to the head.
    let after_last_rare = page.events[2].position;
    let skipped = t
        .store
        .read_log(after_last_rare, 100, &rare)
        .await
        .expect("read_log");
    assert!(skipped.events.is_empty());
    assert_eq!(skipped.read_to, head);
    // At the head: nothing new, read_to stays.
    let idle = t.store.read_log(head, 100, &rare).await.expect("read_log");
    assert!(idle.events.is_empty());
    assert_eq!(idle.read_to, head);

    // Several types, every one of them, and none.
    let both = LogFilter::event_types(["test.rare", "test.common"]);
    let all = t
        .store
        .read_log(LogPosition::START, 100, &both)
        .await
        .expect("read_log");
    assert_eq!(
        all.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        everything.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    let unfiltered = t
        .store
        .read_log(LogPosition::START, 7, &LogFilter::all())
        .await
        .expect("read_log");
    assert_eq!(unfiltered.events.len(), 7);
    assert_eq!(unfiltered.events[6].event_id, everything[6].event_id);
    assert_eq!(
        unfiltered.head, head,
        "the head is the log's, not the page's"
    );
    let none = t
        .store
        .read_log(
            LogPosition::START,
            100,
            &LogFilter::event_types(Vec::<String>::new()),
        )
        .await
        .expect("read_log");
    assert!(none.events.is_empty());
    assert_eq!(none.read_to, head);

    // Without metadata: the same events, their metadata left out.
    let light = t
        .store
        .read_log(LogPosition::START, 100, &rare.clone().without_metadata())
        .await
        .expect("read_log");
    assert_eq!(
        light.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        rare_ids
    );
    for (light, full) in light.events.iter().zip(&page.events) {
        assert_eq!(light.metadata, Metadata::new());
        assert_eq!(light.payload.as_json(), full.payload.as_json());
        assert_eq!(
            (light.position, light.version, &light.stream_id),
            (full.position, full.version, &full.stream_id)
        );
    }
}

/// A read without metadata (what a projection gets whose handlers never
/// look at it) gives every event the read with metadata gives, every field
/// but the metadata as stored (tags, time, schema version), for one type,
/// several and all, page by page, and reads as far.
pub async fn read_log_without_metadata_leaves_out_only_the_metadata(t: &TestStore) {
    use annals::store::LogFilter;
    for n in 0..12u32 {
        let kind = ["test.light.a", "test.light.b", "test.light.c"][n as usize % 3];
        let mut appended = event(kind, json!({ "n": n, "text": "é\"x" })).with_metadata(
            Metadata::new()
                .with_actor("reader@acme.test")
                .with_header("channel", "web"),
        );
        if n % 2 == 0 {
            appended = appended.with_tags([format!("light:{n}"), "light:even".to_owned()]);
        }
        append(
            t,
            &stream(&format!("light-{}", n % 4)),
            ExpectedVersion::Any,
            vec![appended],
        )
        .await;
    }
    // On PostgreSQL, once the log shows all of them (see read_all_in_batches).
    assert_eq!(
        read_all_in_batches(t, LogPosition::START, 100, 12)
            .await
            .len(),
        12
    );
    let filters = [
        LogFilter::all(),
        LogFilter::event_types(["test.light.b"]),
        LogFilter::event_types(["test.light.a", "test.light.c"]),
    ];
    for filter in filters {
        let (mut full_after, mut light_after) = (LogPosition::START, LogPosition::START);
        let mut pages = 0;
        loop {
            let full = t
                .store
                .read_log(full_after, 3, &filter)
                .await
                .expect("read_log");
            let light = t
                .store
                .read_log(light_after, 3, &filter.clone().without_metadata())
                .await
                .expect("read_log without metadata");
            assert_eq!(light.events.len(), full.events.len(), "{filter:?}");
            for (light, full) in light.events.iter().zip(&full.events) {
                assert_eq!(full.metadata.actor.as_deref(), Some("reader@acme.test"));
                assert_eq!(light.metadata, Metadata::new(), "{filter:?}");
                let mut expected = full.clone();
                expected.metadata = Metadata::new();
                assert_eq!(light, &expected, "{filter:?}");
            }
            assert_eq!(
                (light.read_to, light.head),
                (full.read_to, full.head),
                "{filter:?}"
            );
            pages += 1;
            if full.at_head() {
                break;
            }
            (full_after, light_after) = (full.read_to, light.read_to);
        }
        assert!(pages > 1, "{filter:?} was read in one page");
    }
}

#[cfg(test)]
mod case_list {
    /// The case list in `conformance_suite!` is the one place a case is
    /// enrolled: a case written here but left out of it would never run on
    /// any backend. This reads this file and compares.
    #[test]
    fn every_case_is_in_the_suite() {
        let source = include_str!("conformance.rs");
        let list_start = source.find("@cases $backend:").expect("the case list");
        let list_end = source[list_start..].find(");").expect("its end") + list_start;
        let listed: std::collections::BTreeSet<&str> = source[list_start..list_end]
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|word| word.contains('_'))
            .collect();
        let defined: std::collections::BTreeSet<&str> = source
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split_once("(t: &TestStore)"))
            .map(|(name, _)| name)
            .collect();
        assert!(defined.len() >= 20, "found {} cases", defined.len());
        let missing: Vec<_> = defined.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "cases not in conformance_suite!: {missing:?}"
        );
        let unknown: Vec<_> = listed.difference(&defined).collect();
        assert!(unknown.is_empty(), "listed but not defined: {unknown:?}");
    }
}
