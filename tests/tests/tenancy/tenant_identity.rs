//! Tenant-qualified identities on SQLite and in memory (issue 14, point 8):
//! the same rules as on PostgreSQL, kept by the stores' own code (neither
//! has row-level security). A stream id, snapshot, checkpoint, dead letter
//! and data subject belongs to its tenant; a store not scoped to a tenant
//! refuses a stream id that several tenants hold; a SQLite file from before
//! keeps every row across the migration.

use std::sync::Arc;

use annals::aggregate::snapshot::Snapshot;
use annals::pii::SubjectKeyStore;
use annals::prelude::*;
use annals::subscription::dead_letter::DeadLetter;
use annals_codegen::{Dialect, StoreLayout, store_migrations};
use annals_tests::backends::TestStore;
use serde_json::json;

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("stream id")
}

fn event(n: u64) -> NewEvent {
    NewEvent::json("test.numbered", &json!({ "n": n })).expect("event")
}

fn in_tenant(tenant: &str, n: u64) -> NewEvent {
    let mut event = event(n);
    event.metadata.tenant_id = Some(tenant.to_owned());
    event
}

fn refused(result: Result<impl std::fmt::Debug>, field: &str, mentions: &str) {
    match result {
        Err(Error::InvalidInput {
            field: found,
            reason,
        }) => {
            assert_eq!(found, field, "{reason}");
            assert!(reason.contains(mentions), "{reason}");
        }
        other => panic!("expected a refusal of the {field}, got {other:?}"),
    }
}

/// The two backends without row-level security, each unscoped and as two
/// tenant handles over the same events.
async fn stores() -> Vec<(
    &'static str,
    TestStore,
    Arc<dyn EventStore>,
    Arc<dyn EventStore>,
)> {
    let memory = InMemoryEventStore::new();
    let memory_handles: (Arc<dyn EventStore>, Arc<dyn EventStore>) = (
        Arc::new(memory.for_tenant("acme").expect("acme")),
        Arc::new(memory.for_tenant("globex").expect("globex")),
    );
    let mut memory_store = TestStore::memory().await;
    memory_store.store = Arc::new(memory);

    let dir = tempfile::tempdir().expect("dir");
    let sqlite = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .expect("open");
    let sqlite_handles: (Arc<dyn EventStore>, Arc<dyn EventStore>) = (
        Arc::new(sqlite.for_tenant("acme").expect("acme")),
        Arc::new(sqlite.for_tenant("globex").expect("globex")),
    );
    let sqlite_store = TestStore::from_sqlite(sqlite, dir);
    vec![
        ("memory", memory_store, memory_handles.0, memory_handles.1),
        ("sqlite", sqlite_store, sqlite_handles.0, sqlite_handles.1),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_belong_to_their_tenant() {
    for (backend, t, acme, globex) in stores().await {
        let user = stream("user-1");
        acme.append(&user, ExpectedVersion::NoStream, vec![event(1), event(2)])
            .await
            .expect("acme's user-1");
        // globex's user-1 is another stream: it does not exist yet, and
        // nothing in the answer tells globex about acme's.
        assert_eq!(globex.stream_version(&user).await.expect("version"), 0);
        assert!(
            globex
                .read_stream(&user, 1, 10)
                .await
                .expect("read")
                .is_empty()
        );
        globex
            .append(&user, ExpectedVersion::NoStream, vec![event(3)])
            .await
            .unwrap_or_else(|error| panic!("{backend}: globex's own user-1: {error}"));
        assert_eq!(acme.stream_version(&user).await.expect("version"), 2);
        assert_eq!(globex.stream_version(&user).await.expect("version"), 1);
        let acme_events = acme.read_stream(&user, 1, 10).await.expect("read");
        assert!(
            acme_events
                .iter()
                .all(|e| e.metadata.tenant_id.as_deref() == Some("acme")),
            "{backend}"
        );
        assert_eq!(
            acme.read_all(LogPosition::START, 10)
                .await
                .expect("log")
                .len(),
            2
        );
        assert_eq!(
            globex
                .read_all(LogPosition::START, 10)
                .await
                .expect("log")
                .len(),
            1
        );

        // The unscoped store cannot tell which user-1 is meant.
        refused(
            t.store.read_stream(&user, 1, 10).await,
            "stream id",
            "2 tenants",
        );
        refused(
            t.store.read_stream_backward(&user, None, 10).await,
            "stream id",
            "`user-1`",
        );
        refused(
            t.store.stream_version(&user).await,
            "stream id",
            "for_tenant",
        );
        refused(t.store.verify_stream(&user).await, "stream id", "`user-1`");
        // ...but it reads all of the log, and each tenant's chain verifies.
        assert_eq!(
            t.store
                .read_all(LogPosition::START, 10)
                .await
                .expect("log")
                .len(),
            3
        );
        let report = t.store.verify_log().await.expect("verify");
        assert!(report.first_break.is_none(), "{backend}: {report:?}");
        assert_eq!(report.events_checked, 3);
        for handle in [&acme, &globex] {
            assert!(
                handle
                    .verify_stream(&user)
                    .await
                    .expect("verify")
                    .first_break
                    .is_none()
            );
        }

        // The unscoped store appends to the stream of the tenant its events
        // name, and one append names one tenant.
        t.store
            .append(
                &stream("user-2"),
                ExpectedVersion::NoStream,
                vec![in_tenant("acme", 4)],
            )
            .await
            .expect("unscoped append in acme's name");
        assert_eq!(
            acme.stream_version(&stream("user-2"))
                .await
                .expect("version"),
            1
        );
        refused(
            t.store
                .append(
                    &stream("user-3"),
                    ExpectedVersion::NoStream,
                    vec![in_tenant("acme", 5), in_tenant("globex", 6)],
                )
                .await,
            "tenant id",
            "a stream belongs to one tenant",
        );
        // A tenant handle appends its own tenant's events alone.
        refused(
            acme.append(
                &stream("user-4"),
                ExpectedVersion::NoStream,
                vec![in_tenant("globex", 7)],
            )
            .await,
            "tenant id",
            "\"acme\"",
        );
        assert_eq!(
            t.store
                .read_all(LogPosition::START, 10)
                .await
                .expect("log")
                .len(),
            4,
            "{backend}: nothing of a refused append was written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_checkpoints_dead_letters_and_subjects_belong_to_their_tenant() {
    for (backend, t, acme, globex) in stores().await {
        let user = stream("user-1");
        acme.append(&user, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .expect("append");
        let snapshot = Snapshot {
            stream_id: user.clone(),
            version: 1,
            snapshot_version: 1,
            encoding: 0,
            data: b"acme's state".to_vec(),
            taken_at: chrono::Utc::now(),
        };
        acme.snapshots().save(snapshot).await.expect("snapshot");
        assert!(
            acme.snapshots()
                .load(&user, None)
                .await
                .expect("load")
                .is_some()
        );
        assert!(
            globex
                .snapshots()
                .load(&user, None)
                .await
                .expect("load")
                .is_none(),
            "{backend}"
        );
        assert!(
            t.store
                .snapshots()
                .load(&user, None)
                .await
                .expect("load")
                .is_none()
        );
        assert_eq!(
            globex
                .snapshots()
                .delete_stream(&user)
                .await
                .expect("delete"),
            0
        );

        acme.save_checkpoint("directory", LogPosition::new(5, 1))
            .await
            .expect("checkpoint");
        globex
            .save_checkpoint("directory", LogPosition::new(7, 2))
            .await
            .expect("the same name in another tenant");
        assert_eq!(
            acme.load_checkpoint("directory").await.expect("load"),
            Some(LogPosition::new(5, 1))
        );
        assert_eq!(
            globex.load_checkpoint("directory").await.expect("load"),
            Some(LogPosition::new(7, 2))
        );
        assert_eq!(
            t.store.load_checkpoint("directory").await.expect("load"),
            None
        );

        let letter = DeadLetter {
            id: uuid::Uuid::now_v7(),
            handler: "mailer".into(),
            event_id: uuid::Uuid::now_v7(),
            stream_id: user.clone(),
            version: 1,
            event_type: "test.numbered".into(),
            error: "down".into(),
            attempts: 3,
            failed_at: chrono::Utc::now(),
            retry_requested_at: None,
        };
        acme.dead_letters()
            .save(letter.clone())
            .await
            .expect("dead letter");
        assert!(
            globex
                .dead_letters()
                .list(10)
                .await
                .expect("list")
                .is_empty(),
            "{backend}"
        );
        assert!(
            !globex
                .dead_letters()
                .delete(letter.id)
                .await
                .expect("delete")
        );
        assert_eq!(acme.dead_letters().list(10).await.expect("list").len(), 1);
        assert_eq!(
            t.store.dead_letters().list(10).await.expect("list").len(),
            1
        );
    }

    // Data subjects: a tenant handle keeps its own tenant's alone.
    let memory = InMemoryEventStore::new();
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = SqliteEventStore::open(dir.path().join("keys.db"))
        .await
        .expect("open");
    let handles: Vec<Arc<dyn SubjectKeyStore>> = vec![
        Arc::new(memory.for_tenant("acme").expect("acme")),
        Arc::new(sqlite.for_tenant("acme").expect("acme")),
    ];
    for (keys, unscoped) in handles.iter().zip([
        Arc::new(memory.clone()) as Arc<dyn SubjectKeyStore>,
        Arc::new(sqlite.clone()),
    ]) {
        unscoped
            .create_subject_key(Some("globex"), "42", vec![1; 60])
            .await
            .expect("globex's subject");
        assert!(
            keys.load_subject_key(Some("globex"), "42")
                .await
                .expect("load")
                .is_none()
        );
        refused(
            keys.create_subject_key(Some("globex"), "7", vec![2; 60])
                .await,
            "tenant id",
            "\"acme\"",
        );
        refused(
            keys.forget_subject_key(Some("globex"), "42").await,
            "tenant id",
            "\"acme\"",
        );
        keys.create_subject_key(Some("acme"), "42", vec![3; 60])
            .await
            .expect("acme's own 42");
        assert!(matches!(
            unscoped
                .load_subject_key(Some("globex"), "42")
                .await
                .expect("load"),
            Some(annals::pii::StoredSubjectKey::Wrapped(_))
        ));
        // Listing (what an export copies) shows the handle its own alone,
        // and the unscoped store every tenant's, by tenant then subject.
        let own = keys.list_subject_keys(None, 10).await.expect("list");
        assert_eq!(
            own.iter().map(|r| r.order_key()).collect::<Vec<_>>(),
            [("acme", "42")]
        );
        let every = unscoped.list_subject_keys(None, 10).await.expect("list");
        assert_eq!(
            every.iter().map(|r| r.order_key()).collect::<Vec<_>>(),
            [("acme", "42"), ("globex", "42")]
        );
        let rest = unscoped
            .list_subject_keys(every.first(), 10)
            .await
            .expect("list after");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].tenant.as_deref(), Some("globex"));
    }
}

/// A SQLite file written before stream ids were per tenant (schema 11):
/// the migration keeps every event (positions, links), snapshot, checkpoint
/// and dead letter, and the store goes on from them.
#[tokio::test]
async fn a_sqlite_file_from_before_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("old.db");
    let layout = StoreLayout::default().table_prefix("old_").expect("prefix");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("create");
    for migration in store_migrations::migrations(Dialect::Sqlite, &layout)
        .into_iter()
        .filter(|migration| migration.version <= 11)
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql))
            .execute(&pool)
            .await
            .expect("an old migration");
    }
    pool.close().await;

    // Events as the store writes them (in a scratch file of today's
    // schema, then copied into the old shape, links and all), the other
    // rows in the old tables' shape.
    {
        let scratch_path = dir.path().join("scratch.db");
        let scratch = SqliteEventStore::builder(&scratch_path)
            .table_prefix("old_")
            .open()
            .await
            .expect("open a scratch store");
        for (id, tenant) in [("user-1", Some("acme")), ("user-2", None)] {
            let mut events = vec![event(1), event(2)];
            for event in &mut events {
                event.metadata.tenant_id = tenant.map(str::to_owned);
            }
            scratch
                .append(&stream(id), ExpectedVersion::NoStream, events)
                .await
                .expect("scratch append");
        }
        scratch.pool().close().await;
        let old = SqliteEventStore::builder(&path)
            .table_prefix("old_")
            .migrate(false)
            .open()
            .await
            .expect("open without migrating");
        let columns = "position, commit_id, event_id, stream_id, version, event_type, \
                       schema_version, payload, tenant_id, correlation_id, causation_id, actor, \
                       trace_context, headers, recorded_at, hash, chain_key";
        let mut connection = old.pool().acquire().await.expect("connection");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ATTACH DATABASE '{}' AS scratch",
            scratch_path.display()
        )))
        .execute(&mut *connection)
        .await
        .expect("attach the scratch file");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO main.old_events ({columns}) SELECT {columns} FROM scratch.old_events"
        )))
        .execute(&mut *connection)
        .await
        .expect("copy the events");
        sqlx::query("DETACH DATABASE scratch")
            .execute(&mut *connection)
            .await
            .expect("detach");
        drop(connection);
        sqlx::raw_sql(
            "INSERT INTO old_snapshots (stream_id, version, snapshot_version, encoding, data, taken_at) \
                 VALUES ('user-2', 2, 1, 0, x'01', 1); \
             INSERT INTO old_checkpoints (name, commit_id, sequence, updated_at) VALUES ('directory', 3, 4, 1); \
             INSERT INTO old_dead_letters (id, handler, event_id, stream_id, version, event_type, error, attempts, failed_at) \
                 VALUES (x'0102030405060708090a0b0c0d0e0f10', 'mailer', x'0102030405060708090a0b0c0d0e0f11', 'user-2', 1, 't', 'down', 1, 1);",
        )
        .execute(old.pool())
        .await
        .expect("old rows");
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM old_events")
            .fetch_one(old.pool())
            .await
            .expect("count");
        assert_eq!(before, 4);
    }

    let store = SqliteEventStore::builder(&path)
        .table_prefix("old_")
        .open()
        .await
        .expect("migrate");
    let log = store.read_all(LogPosition::START, 10).await.expect("log");
    assert_eq!(
        log.iter().map(|e| e.position.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(
        store
            .verify_log()
            .await
            .expect("verify")
            .first_break
            .is_none()
    );
    assert_eq!(
        store
            .stream_version(&stream("user-2"))
            .await
            .expect("version"),
        2
    );
    let acme = store.for_tenant("acme").expect("acme");
    assert_eq!(
        acme.stream_version(&stream("user-1"))
            .await
            .expect("version"),
        2
    );
    assert!(
        store
            .snapshots()
            .load(&stream("user-2"), None)
            .await
            .expect("load")
            .is_some()
    );
    assert_eq!(
        store.load_checkpoint("directory").await.expect("load"),
        Some(LogPosition::new(3, 4))
    );
    assert_eq!(store.dead_letters().list(10).await.expect("list").len(), 1);
    // It goes on: positions continue, and globex may now have a user-1.
    let globex = store.for_tenant("globex").expect("globex");
    let appended = globex
        .append(&stream("user-1"), ExpectedVersion::NoStream, vec![event(9)])
        .await
        .expect("globex's user-1");
    assert_eq!(appended.position.sequence, 5);
}
