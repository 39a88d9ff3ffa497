//! Schema migrations on connect: idempotent, optional, safe to race, and a
//! database newer than the build is refused naming both versions.

use annals::prelude::*;
use annals::store::{PostgresEventStore, SqliteEventStore};
use annals_codegen::{Dialect, store_migrations};
use annals_tests::backends::postgres_url;
use serde_json::json;

fn numbered(n: u32) -> NewEvent {
    NewEvent::json("test.numbered", &json!({ "n": n })).expect("event")
}

fn stream() -> StreamId {
    StreamId::new("user-migrated").expect("stream id")
}

fn fresh_schema() -> String {
    format!("m_{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test]
async fn sqlite_reopening_keeps_events_and_applies_nothing_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("events.db");
    let first = SqliteEventStore::open(&path).await.expect("first open");
    first
        .append(&stream(), ExpectedVersion::NoStream, vec![numbered(1)])
        .await
        .expect("append");
    drop(first);

    let again = SqliteEventStore::open(&path).await.expect("second open");
    again
        .migrate()
        .await
        .expect("explicit migrate is idempotent");
    assert_eq!(again.stream_version(&stream()).await.expect("version"), 1);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM annals_schema_history")
        .fetch_one(again.pool())
        .await
        .expect("history");
    assert_eq!(
        applied,
        i64::from(store_migrations::latest(Dialect::Sqlite)),
        "one row per migration"
    );
}

#[tokio::test]
async fn sqlite_without_migrations_reports_missing_tables_as_a_backend_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::builder(dir.path().join("bare.db"))
        .migrate(false)
        .open()
        .await
        .expect("open without migrating");
    match store
        .append(&stream(), ExpectedVersion::Any, vec![numbered(1)])
        .await
    {
        Err(Error::Backend {
            backend: "sqlite", ..
        }) => {}
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn sqlite_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let store = SqliteEventStore::open(&path).await.expect("open");
    sqlx::query("INSERT INTO annals_schema_history (version, name, applied_at) VALUES (999, 'from the future', 'later')")
        .execute(store.pool())
        .await
        .expect("plant history");
    drop(store);
    match SqliteEventStore::open(&path).await {
        Err(Error::SchemaTooNew {
            backend: "sqlite",
            found: 999,
            supported,
        }) if supported == i64::from(store_migrations::latest(Dialect::Sqlite)) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_connects_migrate_once() {
    let schema = fresh_schema();
    let connects = (0..4).map(|_| {
        PostgresEventStore::builder(postgres_url())
            .schema(schema.clone())
            .max_connections(2)
            .connect()
    });
    let stores = futures_util::future::join_all(connects).await;
    let stores: Vec<PostgresEventStore> = stores
        .into_iter()
        .map(|store| store.expect("every racing connect succeeds"))
        .collect();
    stores[0]
        .append(&stream(), ExpectedVersion::NoStream, vec![numbered(1)])
        .await
        .expect("append");
    assert_eq!(
        stores[3].stream_version(&stream()).await.expect("version"),
        1
    );
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM annals_schema_history")
        .fetch_one(stores[1].pool())
        .await
        .expect("history");
    assert_eq!(
        applied,
        i64::from(store_migrations::latest(Dialect::Postgres)),
        "one row per migration"
    );
}

#[tokio::test]
async fn postgres_newer_schema_is_refused() {
    let schema = fresh_schema();
    let store = PostgresEventStore::builder(postgres_url())
        .schema(schema.clone())
        .connect()
        .await
        .expect("connect");
    sqlx::query("INSERT INTO annals_schema_history (version, name, applied_at) VALUES (999, 'from the future', 'later')")
        .execute(store.pool())
        .await
        .expect("plant history");
    match PostgresEventStore::builder(postgres_url())
        .schema(schema)
        .connect()
        .await
    {
        Err(
            error @ Error::SchemaTooNew {
                backend: "postgres",
                found: 999,
                supported,
            },
        ) if supported == i64::from(store_migrations::latest(Dialect::Postgres)) => {
            assert!(error.to_string().contains("upgrade Annals"), "{error}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn postgres_bad_schema_names_and_urls_are_configuration_errors() {
    match PostgresEventStore::builder(postgres_url())
        .schema("Robert'); DROP TABLE x;--")
        .connect()
        .await
    {
        Err(Error::Config(message)) => assert!(message.contains("schema name"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    match PostgresEventStore::connect("postgres://app:hunter2@127.0.0.1:1/db").await {
        Err(
            error @ Error::Backend {
                operation: "connect",
                ..
            },
        ) => {
            let shown = format!("{error} {:?}", std::error::Error::source(&error));
            assert!(shown.contains("app:***@127.0.0.1:1"), "{shown}");
            assert!(!shown.contains("hunter2"), "the password leaked: {shown}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}
