//! Tenant isolation on PostgreSQL: handles from `for_tenant`, connected as
//! an ordinary application role, are confined by row-level security to
//! their tenant's rows through every API: stream reads, the global log,
//! queries (including one crafted with another tenant's stream id or
//! correlation id), counts, replays and repository loads, snapshots,
//! checkpoints, dead letters, hash-chain verification, crypto-shredding
//! keys, appends and caches. The unscoped store still sees everything.

use std::sync::Arc;

use annals::Error;
use annals::cache::{CachingEventStore, InProcessCache};
use annals::dead_letter::DeadLetter;
use annals::pii::{StoredSubjectKey, SubjectKeyStore};
use annals::prelude::*;
use annals::replay::Replays;
use annals::snapshot::Snapshot;
use annals::store::PostgresEventStore;
use annals_tests::backends::{fresh_postgres_store, postgres_url};
use annals_tests::domain::{Tenant, TenantCreated, TenantDirectory};
use uuid::Uuid;

/// The schema's tables, migrated by the superuser `fresh_postgres_store`
/// connects as, and a store on them connected as a new role that is
/// neither superuser nor BYPASSRLS, with the privileges an application
/// needs.
async fn app_store() -> (PostgresEventStore, PostgresEventStore) {
    let owner = fresh_postgres_store().await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(owner.pool())
        .await
        .expect("schema");
    let role = format!("app_{}", Uuid::now_v7().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {schema} TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};"
    )))
    .execute(owner.pool())
    .await
    .expect("an application role");
    let base = postgres_url();
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    let app = PostgresEventStore::builder(format!("{scheme}://{role}@{host}"))
        .schema(&schema)
        .migrate(false)
        .connect()
        .await
        .expect("connect as the application role");
    (owner, app)
}

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("stream id")
}

fn created(name: &str, correlation: Uuid) -> NewEvent {
    NewEvent::from_event(&TenantCreated { name: name.into() })
        .expect("event")
        .with_metadata(Metadata::new().with_correlation_id(correlation))
}

fn snapshot(stream_id: &StreamId) -> Snapshot {
    Snapshot {
        stream_id: stream_id.clone(),
        version: 1,
        snapshot_version: 1,
        encoding: 0,
        data: b"{}".to_vec(),
        taken_at: chrono::Utc::now(),
    }
}

fn dead_letter(stream_id: &StreamId) -> DeadLetter {
    DeadLetter {
        id: Uuid::now_v7(),
        handler: "welcome".into(),
        event_id: Uuid::now_v7(),
        stream_id: stream_id.clone(),
        version: 1,
        event_type: "test.tenant.created".into(),
        error: "boom".into(),
        attempts: 3,
        failed_at: chrono::Utc::now(),
    }
}

/// Waits for `store`'s view of the log to hold `expected` events (the log
/// shows an event once no older transaction of the cluster is running).
async fn read_log(store: &dyn EventStore, expected: usize) -> Vec<RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let events = store
            .read_all(LogPosition::START, 1_000)
            .await
            .expect("read_all");
        if events.len() >= expected || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_scoped_handle_sees_and_changes_only_its_tenant() {
    let (owner, app) = app_store().await;
    let acme = app.for_tenant("acme").await.expect("acme handle");
    let globex = app.for_tenant("globex").await.expect("globex handle");
    assert_eq!(EventStore::tenant(&acme), Some("acme"));

    // Acme's aggregate, snapshot, checkpoint, dead letter and subject key.
    let acme_repository: Repository<Tenant> = Repository::new(Arc::new(acme.clone()));
    let acme_stream = stream("tenant-a1");
    let acme_correlation = Uuid::now_v7();
    acme.append(
        &acme_stream,
        ExpectedVersion::NoStream,
        vec![created("Acme", acme_correlation)],
    )
    .await
    .expect("acme appends");
    acme.save_snapshot(snapshot(&acme_stream))
        .await
        .expect("acme snapshot");
    acme.save_checkpoint("directory", LogPosition::new(1, 1))
        .await
        .expect("acme checkpoint");
    let acme_letter = dead_letter(&acme_stream);
    acme.save_dead_letter(acme_letter.clone())
        .await
        .expect("acme dead letter");
    acme.create_subject_key("user-1", vec![7; 60])
        .await
        .expect("acme subject key");
    let globex_stream = stream("tenant-g1");
    globex
        .append(
            &globex_stream,
            ExpectedVersion::NoStream,
            vec![created("Globex", Uuid::now_v7())],
        )
        .await
        .expect("globex appends");

    // Events are stamped with their handle's tenant.
    let own = acme.read_stream(&acme_stream, 1, 10).await.expect("read");
    assert_eq!(own[0].metadata.tenant_id.as_deref(), Some("acme"));

    // Reads of acme's stream by globex: empty, by every path.
    assert!(
        globex
            .read_stream(&acme_stream, 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        globex
            .read_stream_backward(&acme_stream, None, 10)
            .await
            .expect("read backward")
            .is_empty()
    );
    assert_eq!(
        globex.stream_version(&acme_stream).await.expect("version"),
        0
    );
    let log = read_log(&globex, 1).await;
    assert_eq!(
        log.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>(),
        vec!["tenant-g1"]
    );
    // Queries crafted to reach acme: by its tenant, its correlation id, its
    // event type.
    for crafted in [
        EventQuery::new().tenant("acme"),
        EventQuery::new().correlation_id(acme_correlation),
    ] {
        assert!(
            globex
                .query(&crafted)
                .await
                .expect("query")
                .events
                .is_empty()
        );
        assert_eq!(globex.count(&crafted).await.expect("count"), 0);
    }
    let by_type = globex
        .query(&EventQuery::new().event_type("test.tenant.created"))
        .await
        .expect("query by type");
    assert_eq!(by_type.events.len(), 1);
    assert_eq!(by_type.events[0].stream_id.as_str(), "tenant-g1");

    // Replays and repository loads.
    let globex_repository: Repository<Tenant> = Repository::new(Arc::new(globex.clone()));
    let loaded = globex_repository.load("a1").await.expect("load");
    assert_eq!((loaded.version, loaded.state.created), (0, false));
    let as_of = globex_repository
        .load_as_of("a1", chrono::Utc::now())
        .await
        .expect("load as of");
    assert_eq!(as_of.version, 0);
    assert!(
        acme_repository
            .load("a1")
            .await
            .expect("load")
            .state
            .created
    );
    let replayed = Replays::new()
        .project(
            Arc::new(globex.clone()),
            TenantDirectory::default(),
            EventQuery::new(),
        )
        .finish()
        .await
        .expect("replay")
        .0;
    assert_eq!(replayed.names.keys().collect::<Vec<_>>(), vec!["tenant-g1"]);

    // Snapshots, checkpoints, dead letters, keys, verification.
    assert!(
        globex
            .load_snapshot(&acme_stream, None)
            .await
            .expect("snapshot")
            .is_none()
    );
    assert_eq!(
        globex.delete_snapshots(&acme_stream).await.expect("delete"),
        0
    );
    assert!(
        acme.load_snapshot(&acme_stream, None)
            .await
            .expect("snapshot")
            .is_some()
    );
    assert_eq!(
        globex
            .load_checkpoint("directory")
            .await
            .expect("checkpoint"),
        None
    );
    assert!(
        globex
            .dead_letters(10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert!(
        !globex
            .delete_dead_letter(acme_letter.id)
            .await
            .expect("delete")
    );
    assert_eq!(acme.dead_letters(10).await.expect("dead letters").len(), 1);
    assert_eq!(globex.load_subject_key("user-1").await.expect("key"), None);
    assert!(matches!(
        acme.load_subject_key("user-1").await.expect("key"),
        Some(StoredSubjectKey::Wrapped(_))
    ));
    let chain = globex.verify_log().await.expect("verify");
    assert!(chain.is_intact());
    assert_eq!(chain.heads.keys().collect::<Vec<_>>(), vec!["tenant-g1"]);

    // Appends into acme's stream, or naming acme, are refused; nothing of
    // them is written.
    let into_theirs = globex
        .append(
            &acme_stream,
            ExpectedVersion::Any,
            vec![created("Hijack", Uuid::now_v7())],
        )
        .await;
    match into_theirs {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "stream id");
            assert!(
                reason.contains("tenant-a1") && reason.contains("globex"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let naming_acme = NewEvent::from_event(&TenantCreated { name: "x".into() })
        .expect("event")
        .with_metadata(Metadata::new().with_tenant("acme"));
    match globex
        .append(
            &stream("tenant-g2"),
            ExpectedVersion::NoStream,
            vec![naming_acme],
        )
        .await
    {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "tenant id");
            assert!(reason.contains("\"acme\""), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(acme.stream_version(&acme_stream).await.expect("version"), 1);
    assert_eq!(
        owner
            .stream_version(&stream("tenant-g2"))
            .await
            .expect("version"),
        0
    );

    // The unscoped store (and the unscoped application role) see both.
    assert_eq!(read_log(&owner, 2).await.len(), 2);
    assert_eq!(read_log(&app, 2).await.len(), 2);
}

/// The confinement is the database's: a plain SQL session of the
/// application role that sets the tenant sees only that tenant's rows.
#[tokio::test]
async fn row_level_security_is_enforced_by_postgresql() {
    let (_owner, app) = app_store().await;
    let acme = app.for_tenant("acme").await.expect("acme handle");
    acme.append(
        &stream("tenant-a1"),
        ExpectedVersion::NoStream,
        vec![created("Acme", Uuid::now_v7())],
    )
    .await
    .expect("append");
    let mut tx = app.pool().begin().await.expect("begin");
    sqlx::query("SELECT set_config('annals.tenant', 'globex', true)")
        .execute(&mut *tx)
        .await
        .expect("set the tenant");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM annals_events")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(seen, 0);
    let forged = sqlx::query(
        "INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version, payload, tenant_id) \
         VALUES (gen_random_uuid(), 'tenant-x', 1, 't', 1, '{}', 'acme')",
    )
    .execute(&mut *tx)
    .await
    .expect_err("a row for another tenant is refused");
    assert!(
        forged.to_string().contains("row-level security"),
        "{forged}"
    );
}

/// Handles for superusers would not be confined, so there are none; a bad
/// tenant id is refused too.
#[tokio::test]
async fn a_tenant_handle_refuses_a_role_that_bypasses_row_level_security() {
    let owner = fresh_postgres_store().await;
    match owner.for_tenant("acme").await {
        Err(Error::Config(message)) => {
            assert!(message.contains("row-level security"), "{message}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let (_owner, app) = app_store().await;
    for bad in ["", "a\u{7}b"] {
        assert!(matches!(
            app.for_tenant(bad).await,
            Err(Error::InvalidInput {
                field: "tenant id",
                ..
            })
        ));
    }
}

/// A cache in front of two tenants' handles keeps their entries apart: a
/// read of another tenant's stream id is not served from the cache.
#[tokio::test]
async fn caches_keep_tenants_apart() {
    let (_owner, app) = app_store().await;
    let cache = Arc::new(InProcessCache::new());
    let acme = CachingEventStore::new(
        Arc::new(app.for_tenant("acme").await.expect("acme")),
        cache.clone(),
    );
    let globex = CachingEventStore::new(
        Arc::new(app.for_tenant("globex").await.expect("globex")),
        cache.clone(),
    );
    let acme_stream = stream("tenant-a1");
    acme.append(
        &acme_stream,
        ExpectedVersion::NoStream,
        vec![created("Acme", Uuid::now_v7())],
    )
    .await
    .expect("append");
    assert_eq!(
        acme.read_stream(&acme_stream, 1, 10)
            .await
            .expect("read")
            .len(),
        1
    );
    assert!(
        globex
            .read_stream(&acme_stream, 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(EventStore::tenant(&globex), Some("globex"));

    // Repositories' state caches too: globex's repository, sharing acme's
    // cache, does not get acme's cached state for the same id.
    let acme_tenants: Repository<Tenant> =
        Repository::new(Arc::new(acme)).with_cache(cache.clone());
    let globex_tenants: Repository<Tenant> = Repository::new(Arc::new(globex)).with_cache(cache);
    assert!(
        acme_tenants
            .load_cached("a1")
            .await
            .expect("load")
            .state
            .created
    );
    let theirs = globex_tenants.load_cached("a1").await.expect("load");
    assert_eq!((theirs.version, theirs.state.created), (0, false));
}
