//! What `annals-codegen` generates, used for real: JSON Schemas that the
//! stored payloads of sample events satisfy, partitioned PostgreSQL tables
//! that really spread events, and an upgrade from the first migration to the
//! latest on a database that already holds events.

use std::str::FromStr;

use annals::aggregate::snapshot::Snapshot;
use annals::prelude::*;
use annals::registry;
use annals::store::{EventStore, PostgresEventStore, SqliteEventStore};
use annals_codegen::{Dialect, StoreLayout, store_migrations};
use annals_tests::backends::{RawAccess, TestStore, postgres_url};
use annals_tests::domain::{TenantCreated, TenantRenamed, TenantSuspended, UserEvent};
use serde_json::{Value, json};

fn validator(event_type: &str) -> jsonschema::Validator {
    let descriptor =
        registry::event(event_type).unwrap_or_else(|| panic!("{event_type} is not registered"));
    let schema = (descriptor.json_schema)();
    jsonschema::validator_for(&schema).unwrap_or_else(|error| {
        panic!("the schema of {event_type} is not a valid JSON Schema: {error}\n{schema:#}")
    })
}

fn payload_of(event: &impl Event) -> Value {
    let payload = event.to_payload().expect("encodes");
    serde_json::from_str(payload.as_json()).expect("payloads are JSON")
}

#[test]
fn stored_payloads_of_sample_events_satisfy_their_json_schemas() {
    let samples: Vec<(&str, Value)> = vec![
        (
            "test.tenant.created",
            payload_of(&TenantCreated {
                name: "Acme".into(),
            }),
        ),
        (
            "test.tenant.renamed",
            payload_of(&TenantRenamed {
                name: "Acme Ltd".into(),
                reason: "merger".into(),
            }),
        ),
        ("test.tenant.suspended", payload_of(&TenantSuspended)),
        (
            "test.user.registered",
            payload_of(&UserEvent::Registered {
                email: "ada@example.com".into(),
                display_name: "Ada".into(),
            }),
        ),
        (
            "test.user.role_assigned",
            payload_of(&UserEvent::RoleAssigned {
                role: "admin".into(),
            }),
        ),
        (
            "test.user.renamed",
            payload_of(&UserEvent::Renamed("Ada L.".into())),
        ),
        ("test.user.deactivated", payload_of(&UserEvent::Deactivated)),
    ];
    for (event_type, payload) in &samples {
        let errors: Vec<String> = validator(event_type)
            .iter_errors(payload)
            .map(|error| format!("{error} at {}", error.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{event_type} {payload}: {errors:?}");
    }
}

#[test]
fn payloads_of_the_wrong_shape_fail_their_schema_naming_the_field() {
    let registered = validator("test.user.registered");
    let wrong = json!({ "email": 5, "display_name": "Ada" });
    let errors: Vec<String> = registered
        .iter_errors(&wrong)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect();
    assert_eq!(errors, ["5 is not of type \"string\" at /email"]);
    assert!(!registered.is_valid(&json!({ "email": "ada@example.com" })));
    // A variant's schema is the variant's content, not the whole enum.
    assert!(
        !validator("test.user.role_assigned").is_valid(&json!({ "RoleAssigned": { "role": "x" } }))
    );
    assert!(!validator("test.user.deactivated").is_valid(&json!({ "role": "x" })));
}

#[test]
fn schemas_carry_the_wire_name_version_and_doc_comments() {
    let schema = (registry::event("test.user.registered")
        .expect("registered")
        .json_schema)();
    assert_eq!(schema["title"], "test.user.registered");
    assert_eq!(schema["x-annals-schema-version"], 2);
    assert_eq!(
        schema["properties"]["email"]["description"],
        "Email address."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_log_spreads_streams_and_keeps_ids_unique_across_partitions() {
    let t = TestStore::postgres_partitioned_by_stream().await;
    let RawAccess::Postgres(pool) = &t.raw else {
        panic!("a PostgreSQL test store");
    };
    for n in 0..40 {
        let stream = StreamId::new(format!("user-{n}")).expect("stream id");
        t.store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::json("test.n", &json!({ "n": n })).expect("event")],
            )
            .await
            .expect("append");
    }
    let partitions: i64 =
        sqlx::query_scalar(t.sql("SELECT count(DISTINCT tableoid)::bigint FROM annals_events"))
            .fetch_one(pool)
            .await
            .expect("count partitions");
    assert!(
        partitions >= 2,
        "40 streams landed in {partitions} partition(s)"
    );

    // The same event id in another stream (so another partition, most
    // likely) is still refused by the side table's key.
    let first = t
        .store
        .read_stream(&StreamId::new("user-0").expect("stream id"), 0, 1)
        .await
        .expect("read")
        .remove(0);
    let mut copy = NewEvent::json("test.n", &json!({ "n": 0 })).expect("event");
    copy.event_id = first.event_id;
    let outcome = t
        .store
        .append(
            &StreamId::new("user-elsewhere").expect("stream id"),
            ExpectedVersion::Any,
            vec![copy],
        )
        .await;
    match outcome {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "event id");
            assert!(reason.contains(&first.event_id.to_string()), "{reason}");
        }
        other => panic!("expected the duplicate id to be refused, got {other:?}"),
    }
}

const PLANTED_PAYLOAD: &str = r#"{"name":"Acme"}"#;

/// After the upgrade: the planted event reads back, appends continue its
/// stream, the later migrations' tables work, and the history is complete.
async fn assert_upgraded(store: &dyn EventStore, history: i64, migrations: usize) {
    let stream = StreamId::new("tenant-old").expect("stream id");
    let events = store
        .read_stream(&stream, 0, 10)
        .await
        .expect("read the old event");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "test.tenant.created");
    assert_eq!(
        events[0].decode::<TenantCreated>().expect("decodes"),
        TenantCreated {
            name: "Acme".into()
        }
    );
    store
        .append(
            &stream,
            ExpectedVersion::Exact(1),
            vec![NewEvent::from_event(&TenantSuspended).expect("event")],
        )
        .await
        .expect("append after the upgrade");
    // The upgrade sealed the old event into a chain the new one continues.
    let chain = store.verify_log().await.expect("verify");
    assert!(chain.is_intact(), "{:?}", chain.first_break);
    assert_eq!(chain.events_checked, 2);
    assert!(chain.head("tenant-old").is_some());
    store
        .snapshots()
        .save(Snapshot {
            stream_id: stream.clone(),
            version: 2,
            snapshot_version: 1,
            encoding: 0,
            data: b"{}".to_vec(),
            taken_at: chrono::Utc::now(),
        })
        .await
        .expect("the snapshots table of migration 2 exists");
    // Counted, not taken from the newest number: numbers may have gaps
    // (one reserved by a change on another branch).
    assert_eq!(
        usize::try_from(history).ok(),
        Some(migrations),
        "every migration is recorded once"
    );
}

#[tokio::test]
async fn postgres_upgrades_from_the_first_migration_with_data_in_it() {
    let schema = format!("u_{}", uuid::Uuid::now_v7().simple());
    let options = sqlx::postgres::PgConnectOptions::from_str(&postgres_url())
        .expect("test URL")
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::PgPool::connect_with(options).await.expect("connect");
    let first = &store_migrations::migrations(Dialect::Postgres, &StoreLayout::default())[0];
    let setup = format!(
        "CREATE SCHEMA {schema};
         {}
         CREATE TABLE annals_schema_history (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);
         INSERT INTO annals_schema_history VALUES (1, 'event_log', 'long ago');
         INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version, payload)
             VALUES ('{}', 'tenant-old', 1, 'test.tenant.created', 1, '{PLANTED_PAYLOAD}');",
        first.sql,
        uuid::Uuid::now_v7()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&pool)
        .await
        .expect("a database at migration 1");

    let store = PostgresEventStore::builder(postgres_url())
        .schema(&schema)
        .connect()
        .await
        .expect("connect upgrades");
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM annals_schema_history")
        .fetch_one(&pool)
        .await
        .expect("history");
    assert_upgraded(
        &store,
        history,
        store_migrations::migrations(Dialect::Postgres, &StoreLayout::default()).len(),
    )
    .await;
}

#[tokio::test]
async fn sqlite_upgrades_from_the_first_migration_with_data_in_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("create");
    let first = &store_migrations::migrations(Dialect::Sqlite, &StoreLayout::default())[0];
    let id = uuid::Uuid::now_v7();
    let setup = format!(
        "{}
         CREATE TABLE annals_schema_history (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);
         INSERT INTO annals_schema_history VALUES (1, 'event_log', 'long ago');",
        first.sql
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&pool)
        .await
        .expect("a database at migration 1");
    sqlx::query(
        "INSERT INTO annals_events (commit_id, event_id, stream_id, version, event_type, schema_version, payload, recorded_at) \
         VALUES (1, ?, 'tenant-old', 1, 'test.tenant.created', 1, ?, 0)",
    )
    .bind(id)
    .bind(PLANTED_PAYLOAD)
    .execute(&pool)
    .await
    .expect("plant an event");

    let store = SqliteEventStore::open(&path).await.expect("open upgrades");
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM annals_schema_history")
        .fetch_one(&pool)
        .await
        .expect("history");
    assert_upgraded(
        &store,
        history,
        store_migrations::migrations(Dialect::Sqlite, &StoreLayout::default()).len(),
    )
    .await;
}

/// An application role granted its privileges before migration 15 (which
/// has appends draw positions from the sequence themselves) still appends
/// after the upgrade: the migration grants the sequence to every role that
/// may insert events. Events written before it keep their links.
#[tokio::test]
async fn postgres_an_application_role_granted_before_chain_coverage_appends_after_it() {
    let schema = format!("u_{}", uuid::Uuid::now_v7().simple());
    let role = format!("app_{}", uuid::Uuid::now_v7().simple());
    let options = sqlx::postgres::PgConnectOptions::from_str(&postgres_url())
        .expect("test URL")
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::PgPool::connect_with(options).await.expect("connect");
    let mut setup = format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE annals_schema_history (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);"
    );
    for migration in store_migrations::migrations(Dialect::Postgres, &StoreLayout::default())
        .iter()
        .filter(|migration| migration.version < 15)
    {
        setup.push_str(&migration.sql);
        setup.push_str(&format!(
            "\nINSERT INTO annals_schema_history VALUES ({}, '{}', 'long ago');\n",
            migration.version, migration.name
        ));
    }
    // What `grant_tenant_access` granted before migration 15.
    setup.push_str(&format!(
        "CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {schema} TO {role};
         GRANT SELECT ON annals_schema_history TO {role};
         GRANT SELECT, INSERT ON annals_events TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON annals_snapshots, annals_checkpoints,
             annals_dead_letters, annals_subject_keys, annals_subject_streams TO {role};"
    ));
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&pool)
        .await
        .expect("a database at migration 14 with an application role");
    let app = PostgresEventStore::builder(annals_tests::backends::postgres_url_as(&role))
        .schema(&schema)
        .migrate(false)
        .connect()
        .await
        .expect("connect as the application role");
    let acme = app.for_tenant("acme").await.expect("tenant handle");
    let stream = StreamId::new("tenant-1").expect("stream id");
    // An event as Annals appended it before the upgrade: its link in the
    // old format, by the old SQL functions.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "WITH e AS (SELECT gen_random_uuid() AS id, now() AS at)
         INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version,
                                    payload, tenant_id, recorded_at, hash)
         SELECT e.id, 'tenant-1', 1, 'test.tenant.created', 1, '{PLANTED_PAYLOAD}'::jsonb, 'acme',
                e.at, sha256(decode(repeat('00', 32), 'hex') || annals_event_digest(e.id,
                    'tenant-1', 1, 'test.tenant.created', 1, '{PLANTED_PAYLOAD}'::jsonb::text,
                    'acme', NULL, NULL, NULL, NULL, '{{}}'::jsonb::text, e.at))
         FROM e"
    )))
    .execute(&pool)
    .await
    .expect("an event from before the upgrade");

    let owner = PostgresEventStore::builder(postgres_url())
        .schema(&schema)
        .connect()
        .await
        .expect("connect upgrades");
    assert_eq!(owner.table_prefix(), "annals_");
    acme.append(
        &stream,
        ExpectedVersion::Exact(1),
        vec![NewEvent::from_event(&TenantSuspended).expect("event")],
    )
    .await
    .expect("the application role appends after the upgrade");
    let formats: Vec<Option<i16>> =
        sqlx::query_scalar("SELECT chain_key FROM annals_events ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("link formats");
    assert_eq!(formats, [None, Some(0)], "an old link and a new one");
    let chain = acme.verify_log().await.expect("verify");
    assert!(chain.is_intact(), "{:?}", chain.first_break);
    assert_eq!(chain.events_checked, 2);
}
