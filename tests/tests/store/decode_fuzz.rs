//! Fuzzing, time-bounded so it runs in CI: envelope decoding and upcasting
//! meet arbitrary input and must answer with a typed error naming the
//! stream, version and event type, never a panic.
//!
//! - `upcasting_and_decoding_arbitrary_payloads`: arbitrary JSON payloads,
//!   event types (known and unknown) and schema versions, decoded as the
//!   test domain's events (with a JSON and a typed upcaster on the way).
//! - `reading_arbitrary_stored_rows`: rows written straight into a SQLite
//!   store with arbitrary payload and header text, schema versions and
//!   types, then read back through the store.
//! - `a_stored_time_out_of_range_is_a_typed_error_on_postgres`: PostgreSQL
//!   times no date can hold (`infinity`), planted by the schema's owner,
//!   read back through every read path that decodes events.
//!
//! `ANNALS_FUZZ_SECONDS` sets each target's budget (default 5 seconds); the
//! executions per second are printed (`cargo test -- --nocapture`).

use std::time::{Duration, Instant};

use annals::prelude::*;
use annals::{Metadata, Payload};
use annals_tests::backends::{RawAccess, TestStore};
use annals_tests::domain::{TenantEvent, UserEvent};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

fn budget() -> Duration {
    let seconds = std::env::var("ANNALS_FUZZ_SECONDS")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(seconds)
}

/// Runs `test` on values of `strategy` until the budget is spent; returns
/// the number of executions.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u64 {
    let budget = budget();
    let started = Instant::now();
    let executions = std::cell::Cell::new(0_u64);
    while started.elapsed() < budget {
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        let outcome = runner.run(&strategy, |value| {
            executions.set(executions.get() + 1);
            test(value)
        });
        if let Err(failure) = outcome {
            panic!("{name}: {failure}");
        }
    }
    let executions = executions.get();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {executions} executions in {seconds:.1} s ({:.0}/s)",
        executions as f64 / seconds
    );
    executions
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![Just("email"), Just("name"), Just("new_name"), Just("role")]
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("email".to_owned()),
                    Just("display_name".to_owned()),
                    Just("name".to_owned()),
                    Just("new_name".to_owned()),
                    Just("reason".to_owned()),
                    Just("role".to_owned()),
                    ".{0,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("test.tenant.created".to_owned()),
        Just("test.tenant.renamed".to_owned()),
        Just("test.tenant.suspended".to_owned()),
        Just("test.user.registered".to_owned()),
        Just("test.user.role_assigned".to_owned()),
        Just("test.user.renamed".to_owned()),
        Just("test.user.deactivated".to_owned()),
        "[a-z.]{0,20}",
    ]
}

fn recorded(event_type: String, schema_version: u32, payload: Payload) -> RecordedEvent {
    RecordedEvent {
        event_id: uuid::Uuid::now_v7(),
        stream_id: StreamId::new("fuzz-1").expect("stream id"),
        version: 7,
        position: LogPosition::new(1, 1),
        event_type,
        schema_version,
        payload,
        metadata: Metadata::new(),
        recorded_at: chrono::Utc::now(),
        tags: Vec::new(),
    }
}

/// A decode error must name where the event is.
fn named(error: &Error) -> Result<(), TestCaseError> {
    match error {
        Error::Decode {
            stream, version, ..
        }
        | Error::UnknownEventType {
            stream, version, ..
        } => {
            prop_assert_eq!(stream.as_str(), "fuzz-1");
            prop_assert_eq!(*version, 7);
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "untyped decode failure: {other:?}"
        ))),
    }
}

#[test]
fn upcasting_and_decoding_arbitrary_payloads() {
    let known = std::cell::Cell::new(0_u64);
    let errors = std::cell::Cell::new(0_u64);
    let executions = fuzz(
        "upcast and decode",
        (event_type(), 0_u32..4, json()),
        |(event_type, schema_version, payload)| {
            let payload = Payload::from_serialize(&payload)
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            if event_type.starts_with("test.") {
                known.set(known.get() + 1);
            }
            let event = recorded(event_type, schema_version, payload);
            if let Err(error) = event.decode::<UserEvent>() {
                errors.set(errors.get() + 1);
                named(&error)?;
            }
            if let Err(error) = event.decode::<TenantEvent>() {
                errors.set(errors.get() + 1);
                named(&error)?;
            }
            Ok(())
        },
    );
    let (known, errors) = (known.get(), errors.get());
    eprintln!(
        "upcast and decode: {known} of {executions} with a known type, {errors} typed errors"
    );
    // Most payloads carry a type the decoders know (and so reach the
    // upcasters and field decoding), and the decoders refused with typed
    // errors: the fuzz did more than reject unknown names.
    assert!(known > executions / 2, "{known} of {executions}");
    assert!(errors > executions, "{errors} errors over two decoders");

    // And a well-formed version 1 payload goes through the typed upcaster.
    let old = recorded(
        "test.user.registered".to_owned(),
        1,
        Payload::from_json(r#"{"email":"ada@example.test"}"#).expect("json"),
    );
    assert_eq!(
        old.decode::<UserEvent>().expect("upcast"),
        UserEvent::Registered {
            email: "ada@example.test".into(),
            display_name: "ada@example.test".into(),
        }
    );
}

#[test]
fn reading_arbitrary_stored_rows() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime.block_on(TestStore::sqlite());
    let RawAccess::Sqlite(pool) = &store.raw else {
        panic!("a SQLite test store has SQLite access");
    };
    let payload_text = prop_oneof![
        json().prop_map(|value| value.to_string()),
        ".{0,24}",
        Just(String::new()),
    ];
    let headers_text = prop_oneof![
        Just("{}".to_owned()),
        Just(r#"{"k":"v"}"#.to_owned()),
        Just(r#"{"k":1}"#.to_owned()),
        ".{0,12}",
    ];
    let row = std::cell::Cell::new(0_u64);
    // What each planted row led to: the fuzz is worth something only if
    // rows reach the reader and every outcome is seen.
    let refused = std::cell::Cell::new(0_u64);
    let read = std::cell::Cell::new(0_u64);
    let corrupt = std::cell::Cell::new(0_u64);
    let decode_errors = std::cell::Cell::new(0_u64);
    let decoded_ok = std::cell::Cell::new(0_u64);
    let bump = |cell: &std::cell::Cell<u64>| cell.set(cell.get() + 1);
    let executions = fuzz(
        "stored rows",
        (event_type(), -2_i64..6, payload_text, headers_text),
        |(event_type, schema_version, payload, headers)| {
            row.set(row.get() + 1);
            let stream = format!("fuzz-row-{}", row.get());
            runtime.block_on(async {
                let planted = sqlx::query(store.sql(
                    "INSERT INTO annals_events (commit_id, event_id, stream_id, version, event_type, \
                     schema_version, payload, headers, recorded_at) \
                     VALUES ((SELECT COALESCE(MAX(position), 0) + 1 FROM annals_events), ?, ?, 1, ?, ?, ?, ?, ?)",
                ))
                .bind(uuid::Uuid::now_v7())
                .bind(&stream)
                .bind(&event_type)
                .bind(schema_version)
                .bind(&payload)
                .bind(&headers)
                .bind(chrono::Utc::now().timestamp_micros())
                .execute(pool)
                .await;
                if planted.is_err() {
                    // The storage refused the row (a CHECK constraint).
                    bump(&refused);
                    return Ok(());
                }
                let id = StreamId::new(stream.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                match store.store.read_stream(&id, 0, 10).await {
                    Ok(events) => {
                        bump(&read);
                        prop_assert_eq!(events.len(), 1);
                        let event = &events[0];
                        for decoded in [
                            event.decode::<UserEvent>().map(drop),
                            event.decode::<TenantEvent>().map(drop),
                        ] {
                            if let Err(Error::Decode { stream: named, .. }
                            | Error::UnknownEventType { stream: named, .. }) = &decoded
                            {
                                bump(&decode_errors);
                                prop_assert_eq!(named, &stream);
                            } else {
                                prop_assert!(decoded.is_ok(), "{decoded:?}");
                                bump(&decoded_ok);
                            }
                        }
                    }
                    Err(Error::CorruptEvent {
                        stream: named,
                        version,
                        event_type: named_type,
                        ..
                    }) => {
                        bump(&corrupt);
                        prop_assert_eq!(named, stream);
                        prop_assert_eq!(version, 1);
                        prop_assert_eq!(named_type, event_type);
                    }
                    Err(other) => {
                        return Err(TestCaseError::fail(format!("untyped read failure: {other:?}")));
                    }
                }
                Ok(())
            })
        },
    );
    let (refused, read, corrupt) = (refused.get(), read.get(), corrupt.get());
    let (decode_errors, decoded) = (decode_errors.get(), decoded_ok.get());
    eprintln!(
        "stored rows: {executions} tried, {refused} refused by the schema, {read} read \
         ({decoded} decoded, {decode_errors} typed decode errors), {corrupt} typed as corrupt"
    );
    // Every row was either refused by the schema, read, or typed as
    // corrupt; most reached the reader, and both readable and corrupt rows
    // were seen, readable ones failing to decode with typed errors. (Rows
    // that decode are rare here; the conformance suite's round trip covers
    // them.)
    assert_eq!(refused + read + corrupt, executions);
    assert!(
        read + corrupt > executions / 2,
        "most planted rows must reach the reader"
    );
    assert!(
        read > 0 && corrupt > 0,
        "readable and corrupt rows must both be read"
    );
    assert!(
        decode_errors > 0,
        "readable rows must meet the typed decoders"
    );
}

/// PostgreSQL's `timestamptz` holds `infinity` and `-infinity`, which no
/// `DateTime` can: an event recorded at either (planted by the schema's
/// owner, behind the store's back) is a `CorruptEvent` naming the stream,
/// version, type and column on every path that decodes it, with and
/// without metadata, and never a panic or a wrong date.
#[tokio::test]
async fn a_stored_time_out_of_range_is_a_typed_error_on_postgres() {
    use annals::store::LogFilter;
    let store = annals_tests::backends::fresh_postgres_store().await;
    for (version, time) in [(1_i64, "infinity"), (2, "-infinity")] {
        sqlx::query(
            "INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version, payload, recorded_at) \
             VALUES ($1, 'timeless', $2, 'test.timeless', 1, '{}', $3::timestamptz)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(version)
        .bind(time)
        .execute(store.pool())
        .await
        .expect("the owner plants the row");
    }
    let expect_corrupt = |path: &str, result: annals::Result<Vec<RecordedEvent>>| match result {
        Err(Error::CorruptEvent {
            stream,
            version,
            event_type,
            reason,
        }) => {
            assert_eq!(
                (stream.as_str(), version, event_type.as_str()),
                ("timeless", 1, "test.timeless"),
                "{path}"
            );
            assert!(reason.contains("recorded_at"), "{path}: {reason}");
        }
        other => panic!("{path}: expected CorruptEvent, got {other:?}"),
    };
    let id = StreamId::new("timeless").expect("stream id");
    expect_corrupt("read_stream", store.read_stream(&id, 1, 10).await);
    // The log shows an event once no older transaction runs anywhere on
    // the server (other tests' may, for a moment).
    let deadline = Instant::now() + Duration::from_secs(30);
    while matches!(store.read_all(LogPosition::START, 10).await, Ok(events) if events.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the planted events never reached the log"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    expect_corrupt("read_all", store.read_all(LogPosition::START, 10).await);
    for filter in [
        LogFilter::all(),
        LogFilter::all().without_metadata(),
        LogFilter::event_types(["test.timeless"]).without_metadata(),
    ] {
        expect_corrupt(
            &format!("read_log {filter:?}"),
            store
                .read_log(LogPosition::START, 10, &filter)
                .await
                .map(|page| page.events),
        );
    }
    // The second event, read on its own, names itself.
    match store.read_stream(&id, 2, 10).await {
        Err(Error::CorruptEvent {
            version, reason, ..
        }) => {
            assert_eq!(version, 2);
            assert!(reason.contains("recorded_at"), "{reason}");
        }
        other => panic!("expected CorruptEvent, got {other:?}"),
    }
}
