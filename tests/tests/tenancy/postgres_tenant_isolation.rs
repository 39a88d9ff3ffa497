//! Tenant isolation on PostgreSQL: handles from `for_tenant`, connected as
//! an ordinary application role, are confined by row-level security to
//! their tenant's rows through every API: stream reads, the global log,
//! queries (including one crafted with another tenant's stream id or
//! correlation id), counts, replays and repository loads, snapshots,
//! checkpoints, dead letters, hash-chain verification, crypto-shredding
//! keys, appends and caches. The unscoped store still sees everything.

use std::sync::Arc;

use annals::Error;
use annals::aggregate::snapshot::Snapshot;
use annals::cache::{CachingEventStore, InProcessCache};
use annals::pii::{StoredSubjectKey, SubjectKeyStore};
use annals::prelude::*;
use annals::replay::Replays;
use annals::store::PostgresEventStore;
use annals::subscription::dead_letter::DeadLetter;
use annals_codegen::{Dialect, Partitioning, StoreLayout, store_migrations};
use annals_tests::backends::{
    application_role_store, fresh_postgres_store, postgres_url, postgres_url_as,
};
use annals_tests::domain::{Tenant, TenantCreated, TenantDirectory};
use uuid::Uuid;

/// The schema's tables, migrated by the superuser `fresh_postgres_store`
/// connects as, and a store on them connected as a new application role
/// (neither superuser nor BYPASSRLS) granted access by
/// `grant_tenant_access`.
async fn app_store() -> (PostgresEventStore, PostgresEventStore) {
    let owner = fresh_postgres_store().await;
    let app = application_role_store(&owner).await;
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
        retry_requested_at: None,
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
    acme.snapshots()
        .save(snapshot(&acme_stream))
        .await
        .expect("acme snapshot");
    acme.save_checkpoint("directory", LogPosition::new(1, 1))
        .await
        .expect("acme checkpoint");
    let acme_letter = dead_letter(&acme_stream);
    acme.dead_letters()
        .save(acme_letter.clone())
        .await
        .expect("acme dead letter");
    acme.create_subject_key(Some("acme"), "user-1", vec![7; 60])
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
            .snapshots()
            .load(&acme_stream, None)
            .await
            .expect("snapshot")
            .is_none()
    );
    assert_eq!(
        globex
            .snapshots()
            .delete_stream(&acme_stream)
            .await
            .expect("delete"),
        0
    );
    assert!(
        acme.snapshots()
            .load(&acme_stream, None)
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
            .dead_letters()
            .list(10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert!(
        !globex
            .dead_letters()
            .delete(acme_letter.id)
            .await
            .expect("delete")
    );
    assert_eq!(
        acme.dead_letters()
            .list(10)
            .await
            .expect("dead letters")
            .len(),
        1
    );
    // Not even by naming acme: row-level security hides acme's keys.
    assert_eq!(
        globex
            .load_subject_key(Some("acme"), "user-1")
            .await
            .expect("key"),
        None
    );
    assert_eq!(
        globex
            .load_subject_key(Some("globex"), "user-1")
            .await
            .expect("key"),
        None
    );
    assert!(matches!(
        acme.load_subject_key(Some("acme"), "user-1")
            .await
            .expect("key"),
        Some(StoredSubjectKey::Wrapped(_))
    ));
    // Nor by listing them, as an export does.
    assert!(
        globex
            .list_subject_keys(None, 10)
            .await
            .expect("list keys")
            .is_empty()
    );
    assert_eq!(
        acme.list_subject_keys(None, 10)
            .await
            .expect("list keys")
            .iter()
            .map(|record| record.order_key())
            .collect::<Vec<_>>(),
        [("acme", "user-1")]
    );
    let chain = globex.verify_log().await.expect("verify");
    assert!(chain.is_intact());
    assert_eq!(
        chain
            .heads
            .keys()
            .map(|stream| (stream.tenant_id.as_deref(), stream.stream_id.as_str()))
            .collect::<Vec<_>>(),
        vec![(Some("globex"), "tenant-g1")]
    );

    // The same stream id in globex is globex's own stream: no refusal, no
    // sign of acme's, and acme's stream is untouched.
    globex
        .append(
            &acme_stream,
            ExpectedVersion::NoStream,
            vec![created("Globex's own", Uuid::now_v7())],
        )
        .await
        .expect("globex has a stream of the same id");
    assert_eq!(
        globex.stream_version(&acme_stream).await.expect("version"),
        1
    );
    let globex_own = globex.read_stream(&acme_stream, 1, 10).await.expect("read");
    assert_eq!(globex_own.len(), 1);
    assert_eq!(globex_own[0].metadata.tenant_id.as_deref(), Some("globex"));
    let acme_own = acme.read_stream(&acme_stream, 1, 10).await.expect("read");
    assert_eq!(acme_own.len(), 1);
    assert_eq!(acme_own[0].metadata.tenant_id.as_deref(), Some("acme"));
    // The owner's unscoped store cannot tell which is meant.
    for outcome in [
        owner.read_stream(&acme_stream, 1, 10).await.map(drop),
        owner.stream_version(&acme_stream).await.map(drop),
    ] {
        match outcome {
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!(field, "stream id");
                assert!(reason.contains("2 tenants"), "{reason}");
            }
            other => panic!("expected an ambiguous stream id, got {other:?}"),
        }
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

    // The unscoped store of the owner sees every event; the application
    // role without a tenant sees nothing (fail-closed).
    assert_eq!(read_log(&owner, 3).await.len(), 3);
    assert!(
        app.read_all(LogPosition::START, 1_000)
            .await
            .expect("read_all")
            .is_empty()
    );
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

/// Tags and append conditions keep to their tenant. Through the API,
/// globex registering the address acme registered is not refused. As an
/// attacker in a SQL session of the application role with globex set, the
/// tag index shows none of acme's tags, the condition check run by hand
/// with acme's tenant finds nothing, and a tag row forged in acme's name is
/// refused.
#[tokio::test]
async fn tags_and_conditions_tell_no_tenant_of_another() {
    use annals::store::{AppendCondition, Criterion};
    let (_owner, app) = app_store().await;
    let registration = |id: &str| {
        StreamAppend::new(
            stream(id),
            ExpectedVersion::NoStream,
            vec![created("Ada", Uuid::now_v7()).with_tags(["email:ada@example.test"])],
        )
        .with_condition(AppendCondition::none_match(Criterion::tagged([
            "email:ada@example.test",
        ])))
    };
    let acme = app.for_tenant("acme").await.expect("acme handle");
    let globex = app.for_tenant("globex").await.expect("globex handle");
    acme.append_batch(vec![registration("user-a")])
        .await
        .expect("acme registers");
    globex
        .append_batch(vec![registration("user-g")])
        .await
        .expect("acme's registration does not count for globex");
    assert!(matches!(
        acme.append_batch(vec![registration("user-a2")]).await,
        Err(Error::AppendConditionFailed { .. })
    ));

    let mut tx = app.pool().begin().await.expect("begin");
    sqlx::query("SELECT set_config('annals.tenant', 'globex', true)")
        .execute(&mut *tx)
        .await
        .expect("set the tenant");
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant_key FROM annals_event_tags")
            .fetch_all(&mut *tx)
            .await
            .expect("read the tag index");
    assert_eq!(tenants, ["globex"]);
    let probe: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM annals_check_append_conditions(\
             ARRAY[1]::int8[], ARRAY[false], ARRAY[0], ARRAY['x'], ARRAY[0], ARRAY['acme'], \
             ARRAY['[\"email:ada@example.test\"]'], ARRAY['[]'], ARRAY[0]::int8[], ARRAY[0]::int8[])",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("run the check by hand");
    assert_eq!(probe, 0, "the check sees no other tenant's event");
    let forged = sqlx::query(
        "INSERT INTO annals_event_tags (tag, tenant_id, transaction_id, position, event_type) \
         VALUES ('email:bob@example.test', 'acme', pg_current_xact_id(), 1, 't')",
    )
    .execute(&mut *tx)
    .await
    .expect_err("a tag row for another tenant is refused");
    assert!(
        forged.to_string().contains("row-level security"),
        "{forged}"
    );
    drop(tx);

    // A second entry for one of globex's own events and tags (under another
    // transaction id) is refused as well, so a query by tag lists each
    // event once.
    let mut tx = app.pool().begin().await.expect("begin");
    sqlx::query("SELECT set_config('annals.tenant', 'globex', true)")
        .execute(&mut *tx)
        .await
        .expect("set the tenant");
    let (tag, position): (String, i64) =
        sqlx::query_as("SELECT tag, position FROM annals_event_tags LIMIT 1")
            .fetch_one(&mut *tx)
            .await
            .expect("globex's tag entry");
    let duplicate = sqlx::query(
        "INSERT INTO annals_event_tags (tag, tenant_id, transaction_id, position, event_type) \
         VALUES ($1, 'globex', pg_current_xact_id(), $2, 't')",
    )
    .bind(&tag)
    .bind(position)
    .execute(&mut *tx)
    .await
    .expect_err("a second entry for one event and tag is refused");
    assert!(
        duplicate.to_string().contains("event_tags_by_position"),
        "{duplicate}"
    );
    drop(tx);
    let page = globex
        .query(&EventQuery::new().tag(tag))
        .await
        .expect("query by tag");
    assert_eq!(page.events.len(), 1);
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
    // A BYPASSRLS role, even granted only the application role's access.
    let bypass = format!("bypass_{}", Uuid::now_v7().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {bypass} LOGIN BYPASSRLS"
    )))
    .execute(owner.pool())
    .await
    .expect("a BYPASSRLS role");
    owner.grant_tenant_access(&bypass).await.expect("grant");
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(owner.pool())
        .await
        .expect("schema");
    let bypassing = PostgresEventStore::builder(postgres_url_as(&bypass))
        .schema(schema)
        .migrate(false)
        .connect()
        .await
        .expect("connect as the BYPASSRLS role");
    match bypassing.for_tenant("acme").await {
        Err(Error::Config(message)) => {
            assert!(message.contains("BYPASSRLS"), "{message}");
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

/// Each layout the store runs on: the tables it migrates itself, and the
/// generated ones (schema and prefix; partitioned by stream and by tenant)
/// applied by the superuser as a migration tool would. Returns the owner's
/// store (the superuser: cross-tenant) on them.
async fn owner_in_layout(layout: &str) -> PostgresEventStore {
    let (partitioning, prefix) = match layout {
        "embedded" => return fresh_postgres_store().await,
        "schema and prefix" => (Partitioning::None, "iam_"),
        "partitioned by stream" => (Partitioning::ByStreamHash { partitions: 3 }, "iam_"),
        "partitioned by tenant" => (Partitioning::ByTenant { partitions: 3 }, "annals_"),
        other => panic!("unknown layout {other}"),
    };
    let schema = format!("g_{}", Uuid::now_v7().simple());
    let generated = StoreLayout::default()
        .schema(&schema)
        .and_then(|generated| generated.table_prefix(prefix))
        .expect("layout")
        .partitioning(partitioning);
    let admin = sqlx::PgPool::connect(&postgres_url())
        .await
        .expect("connect");
    for migration in store_migrations::migrations(Dialect::Postgres, &generated) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql.clone()))
            .execute(&admin)
            .await
            .unwrap_or_else(|error| panic!("{} does not apply: {error}", migration.file_name()));
    }
    admin.close().await;
    PostgresEventStore::builder(postgres_url())
        .schema(schema)
        .table_prefix(prefix)
        .connect()
        .await
        .expect("connect to the generated schema")
}

/// Every table of Annals' in the store's schema (partitions and the side
/// table of a partitioned layout included), but the schema history.
async fn annals_tables(owner: &PostgresEventStore) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
           AND starts_with(c.relname::text, $1) AND c.relname::text <> $1 || 'schema_history'
         ORDER BY 1",
    )
    .bind(owner.table_prefix())
    .fetch_all(owner.pool())
    .await
    .expect("list tables")
}

/// A SQLSTATE of a refused statement.
fn sqlstate(error: &sqlx::Error) -> String {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
        .unwrap_or_else(|| format!("not a database error: {error}"))
}

/// Fail-closed in every layout: a plain SQL session of the application role
/// (granted what `grant_tenant_access` grants, and, as a generous DBA
/// might, `SELECT` on every partition) reads no row of any Annals table
/// without a tenant, writes none, cannot widen a tenant transaction by
/// clearing the setting, reads only its tenant's rows from a partition
/// queried directly, and cannot touch the side table of global keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_sees_and_writes_nothing_without_a_tenant_in_every_layout() {
    for layout in [
        "embedded",
        "schema and prefix",
        "partitioned by stream",
        "partitioned by tenant",
    ] {
        let owner = owner_in_layout(layout).await;
        let app = application_role_store(&owner).await;
        let prefix = owner.table_prefix().to_owned();
        let tables = annals_tables(&owner).await;
        let partitions: Vec<&String> = tables
            .iter()
            .filter(|table| table.starts_with(&format!("{prefix}events_p")))
            .collect();
        let app_role: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(app.pool())
            .await
            .expect("role");
        for partition in &partitions {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "GRANT SELECT ON {partition} TO {app_role}"
            )))
            .execute(owner.pool())
            .await
            .expect("grant a partition");
        }

        // Rows of two tenants and of none, in every tenant table.
        for tenant in ["acme", "globex"] {
            let handle = app.for_tenant(tenant).await.expect("tenant handle");
            let stream_id = stream(&format!("tenant-{tenant}"));
            handle
                .append(
                    &stream_id,
                    ExpectedVersion::NoStream,
                    vec![created(tenant, Uuid::now_v7())],
                )
                .await
                .expect("append");
            handle
                .snapshots()
                .save(snapshot(&stream_id))
                .await
                .expect("snapshot");
            handle
                .save_checkpoint(&format!("{tenant}-directory"), LogPosition::new(1, 1))
                .await
                .expect("checkpoint");
            handle
                .dead_letters()
                .save(dead_letter(&stream_id))
                .await
                .expect("dead letter");
            handle
                .create_subject_key(Some(tenant), &format!("{tenant}-user"), vec![7; 60])
                .await
                .expect("subject key");
        }
        owner
            .append(
                &stream("tenant-none"),
                ExpectedVersion::NoStream,
                vec![created("none", Uuid::now_v7())],
            )
            .await
            .expect("append without a tenant");
        assert_eq!(read_log(&owner, 3).await.len(), 3, "{layout}");

        // No tenant: every table reads empty (or is not granted at all).
        let mut counted = 0;
        for table in &tables {
            let query = format!("SELECT count(*) FROM {table}");
            match sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query))
                .fetch_one(app.pool())
                .await
            {
                Ok(rows) => {
                    assert_eq!(rows, 0, "{layout}: {table} without a tenant");
                    counted += 1;
                }
                Err(error) => assert_eq!(sqlstate(&error), "42501", "{layout}: {table}: {error}"),
            }
        }
        assert!(
            counted >= 6 + partitions.len(),
            "{layout}: {counted} of {tables:?} readable"
        );
        // Nor through the store: the unscoped application role sees nothing.
        assert!(
            app.read_all(LogPosition::START, 100)
                .await
                .expect("read_all")
                .is_empty()
        );
        assert_eq!(
            app.stream_version(&stream("tenant-acme"))
                .await
                .expect("version"),
            0
        );

        // No tenant: no write lands, whatever tenant the row names.
        for tenant in ["'acme'", "NULL"] {
            let insert = format!(
                "INSERT INTO {prefix}events (event_id, stream_id, version, event_type, schema_version, payload, tenant_id) \
                 VALUES (gen_random_uuid(), 'tenant-forged', 1, 't', 1, '{{}}', {tenant})"
            );
            let refused = sqlx::query(sqlx::AssertSqlSafe(insert))
                .execute(app.pool())
                .await
                .expect_err("a write without a tenant is refused");
            assert_eq!(sqlstate(&refused), "42501", "{layout}: {refused}");
        }
        let insert = format!(
            "INSERT INTO {prefix}checkpoints (name, commit_id, sequence) VALUES ('forged', 1, 1)"
        );
        let refused = sqlx::query(sqlx::AssertSqlSafe(insert))
            .execute(app.pool())
            .await
            .expect_err("a checkpoint without a tenant is refused");
        assert_eq!(sqlstate(&refused), "42501", "{layout}: {refused}");

        // A tenant transaction that clears its tenant sees nothing, not all.
        let mut tx = app.pool().begin().await.expect("begin");
        sqlx::query("SELECT set_config('annals.tenant', 'acme', true)")
            .execute(&mut *tx)
            .await
            .expect("set tenant");
        let count_events = format!("SELECT count(*) FROM {prefix}events");
        let mine: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_events.clone()))
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(mine, 1, "{layout}");
        // Partitions queried directly show acme's rows alone.
        let mut in_partitions = 0;
        for partition in &partitions {
            let tenants: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT tenant_id FROM {partition}"
            )))
            .fetch_all(&mut *tx)
            .await
            .expect("read a partition");
            assert!(
                tenants
                    .iter()
                    .all(|tenant| tenant.as_deref() == Some("acme")),
                "{layout}: {partition} shows {tenants:?}"
            );
            in_partitions += tenants.len();
        }
        if !partitions.is_empty() {
            assert_eq!(in_partitions, 1, "{layout}");
        }
        for cleared in ["''", "NULL"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT set_config('annals.tenant', {cleared}, true)"
            )))
            .execute(&mut *tx)
            .await
            .expect("clear tenant");
            let seen: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_events.clone()))
                .fetch_one(&mut *tx)
                .await
                .expect("count");
            assert_eq!(seen, 0, "{layout}: cleared to {cleared}");
        }
        tx.rollback().await.expect("rollback");

        // The side table of a partitioned layout is out of reach: no stream
        // id of another tenant is listed, no blocking row planted.
        if tables.contains(&format!("{prefix}event_keys")) {
            let mut tx = app.pool().begin().await.expect("begin");
            sqlx::query("SELECT set_config('annals.tenant', 'acme', true)")
                .execute(&mut *tx)
                .await
                .expect("set tenant");
            let listed = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT stream_id FROM {prefix}event_keys"
            )))
            .fetch_all(&mut *tx)
            .await
            .expect_err("the side table is not readable, even with a tenant set");
            assert_eq!(sqlstate(&listed), "42501", "{layout}: {listed}");
            tx.rollback().await.expect("rollback");
            let mut tx = app.pool().begin().await.expect("begin");
            sqlx::query("SELECT set_config('annals.tenant', 'acme', true)")
                .execute(&mut *tx)
                .await
                .expect("set tenant");
            let planted = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {prefix}event_keys (event_id, stream_id, version, tenant_id) \
                 VALUES (gen_random_uuid(), 'tenant-globex', 2, 'acme')"
            )))
            .execute(&mut *tx)
            .await
            .expect_err("no row is planted in the side table");
            assert_eq!(sqlstate(&planted), "42501", "{layout}: {planted}");
            tx.rollback().await.expect("rollback");
            // Its rows carry their tenant, and globex appends on.
            let keyed: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT tenant_id FROM {prefix}event_keys ORDER BY stream_id"
            )))
            .fetch_all(owner.pool())
            .await
            .expect("keys");
            assert_eq!(
                keyed,
                [Some("acme".to_owned()), Some("globex".to_owned()), None],
                "{layout}"
            );
            let globex = app.for_tenant("globex").await.expect("globex");
            globex
                .append(
                    &stream("tenant-globex"),
                    ExpectedVersion::Exact(1),
                    vec![created("g", Uuid::now_v7())],
                )
                .await
                .expect("globex appends on");
        }
    }
}

/// The explicit cross-tenant path is the owner role, by role and not by a
/// setting: an owner that is no superuser (so only its own policy lets it
/// through) migrates, writes and reads every tenant's rows unscoped, and
/// cannot make tenant handles, which it would not confine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_role_is_the_cross_tenant_path_and_makes_no_tenant_handles() {
    let superuser = fresh_postgres_store().await;
    let owner_role = format!("owner_{}", Uuid::now_v7().simple());
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(superuser.pool())
        .await
        .expect("database");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {owner_role} LOGIN; GRANT CREATE ON DATABASE {database} TO {owner_role};"
    )))
    .execute(superuser.pool())
    .await
    .expect("an owner role");
    let owner = PostgresEventStore::builder(postgres_url_as(&owner_role))
        .schema(format!("o_{}", Uuid::now_v7().simple()))
        .connect()
        .await
        .expect("the owner migrates its schema");
    let app = application_role_store(&owner).await;

    let acme = app.for_tenant("acme").await.expect("acme");
    acme.append(
        &stream("tenant-a1"),
        ExpectedVersion::NoStream,
        vec![created("Acme", Uuid::now_v7())],
    )
    .await
    .expect("acme appends");
    owner
        .append(
            &stream("tenant-g1"),
            ExpectedVersion::NoStream,
            vec![
                created("Globex", Uuid::now_v7())
                    .with_metadata(Metadata::new().with_tenant("globex")),
            ],
        )
        .await
        .expect("the owner appends for globex");
    owner
        .save_checkpoint("cross-tenant", LogPosition::new(1, 1))
        .await
        .expect("the owner saves a checkpoint");
    let log = read_log(&owner, 2).await;
    let tenants: Vec<Option<&str>> = log
        .iter()
        .map(|event| event.metadata.tenant_id.as_deref())
        .collect();
    assert_eq!(tenants, [Some("acme"), Some("globex")]);
    assert_eq!(
        app.for_tenant("globex")
            .await
            .expect("globex")
            .stream_version(&stream("tenant-g1"))
            .await
            .expect("version"),
        1
    );
    match owner.for_tenant("acme").await {
        Err(Error::Config(message)) => {
            assert!(message.contains("owner role"), "{message}");
            assert!(message.contains(&owner_role), "{message}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    // The SQL `grant_tenant_access` applies, for a DBA to review.
    let grants = owner.tenant_access_sql("iam_app").await.expect("sql");
    assert!(grants.contains("GRANT SELECT, INSERT ON o_"), "{grants}");
    assert!(matches!(
        owner.tenant_access_sql("Robert'); DROP TABLE x").await,
        Err(Error::InvalidInput { field: "role", .. })
    ));
}

/// Two tenants, and the owner's unscoped store, keep checkpoints of the same
/// name apart: no error tells one of the other's, and each reads its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_names_belong_to_their_tenant() {
    let (owner, app) = app_store().await;
    let acme = app.for_tenant("acme").await.expect("acme");
    let globex = app.for_tenant("globex").await.expect("globex");
    acme.save_checkpoint("directory", LogPosition::new(5, 1))
        .await
        .expect("acme saves");
    globex
        .save_checkpoint("directory", LogPosition::new(7, 2))
        .await
        .expect("globex saves the same name");
    owner
        .save_checkpoint("directory", LogPosition::new(9, 3))
        .await
        .expect("the owner saves the same name");
    acme.save_checkpoint("directory", LogPosition::new(6, 1))
        .await
        .expect("acme moves its own");
    let load = |store: PostgresEventStore| async move {
        store.load_checkpoint("directory").await.expect("load")
    };
    assert_eq!(load(acme).await, Some(LogPosition::new(6, 1)));
    assert_eq!(load(globex).await, Some(LogPosition::new(7, 2)));
    assert_eq!(load(owner).await, Some(LogPosition::new(9, 3)));
}

/// Counts each tenant's events into a table, one row per event: a second
/// application of an event would collide on the key.
#[derive(Default, Debug)]
struct TenantLedger;

#[annals::projection(name = "test_tenant_ledger")]
impl TenantLedger {
    async fn created(
        &mut self,
        _event: &TenantCreated,
        envelope: &RecordedEvent,
        db: &mut sqlx::PgConnection,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO tenant_ledger (tenant, stream_id, version) VALUES ($1, $2, $3)")
            .bind(envelope.metadata.tenant_id.as_deref())
            .bind(envelope.stream_id.as_str())
            .bind(i64::try_from(envelope.version).unwrap_or(i64::MAX))
            .execute(&mut *db)
            .await?;
        Ok(())
    }
}

/// One projection run per tenant over tenant handles, side by side, each
/// with a read model `for_store` of its handle: each applies every event of
/// its tenant exactly once (they used to share one checkpoint row and skip
/// part of their events while reporting no error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_projection_runners_see_each_of_their_events_once() {
    use annals::projection::runner::{PostgresReadModel, ProjectionRunner};
    let (owner, app) = app_store().await;
    let app_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(app.pool())
        .await
        .expect("role");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE tenant_ledger (tenant text, stream_id text, version bigint, \
                                     PRIMARY KEY (stream_id, version));
         GRANT SELECT, INSERT ON tenant_ledger TO {app_role};"
    )))
    .execute(owner.pool())
    .await
    .expect("ledger table");
    let tenants = ["acme", "globex"];
    let mut runners = Vec::new();
    for tenant in tenants {
        let handle = app.for_tenant(tenant).await.expect("handle");
        let runner = ProjectionRunner::new(
            Arc::new(handle.clone()),
            PostgresReadModel::for_store(&handle),
        )
        .batch_size(3)
        .poll_interval(std::time::Duration::from_millis(20))
        .start(TenantLedger);
        runners.push(runner);
    }
    // Interleaved appends of both tenants while the runners run.
    for n in 0..20 {
        for tenant in tenants {
            let handle = app.for_tenant(tenant).await.expect("handle");
            handle
                .append(
                    &stream(&format!("tenant-{tenant}-{n}")),
                    ExpectedVersion::NoStream,
                    vec![
                        created(tenant, Uuid::now_v7()),
                        created(tenant, Uuid::now_v7()),
                    ],
                )
                .await
                .expect("append");
        }
    }
    for runner in &runners {
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            runner.wait_until(std::time::Duration::from_secs(30), |status| {
                status.applied >= 40
            }),
        )
        .await
        .expect("caught up in time")
        .expect("status");
    }
    for runner in runners {
        let status = runner.status();
        assert_eq!(status.applied, 40, "{status:?}");
        runner.stop().await.expect("stop");
    }
    let counts: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT tenant, count(*) FROM tenant_ledger GROUP BY tenant ORDER BY tenant",
    )
    .fetch_all(owner.pool())
    .await
    .expect("counts");
    assert_eq!(
        counts,
        [
            (Some("acme".to_owned()), 40),
            (Some("globex".to_owned()), 40)
        ]
    );
}

/// A tenant cannot snapshot another tenant's stream through the API; a
/// snapshot the application role plants by SQL in its own tenant's name is
/// never loaded for the victim or by the unscoped store, and does not stop
/// the victim from snapshotting that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_forge_or_block_another_tenants_snapshot() {
    let (owner, app) = app_store().await;
    let acme = app.for_tenant("acme").await.expect("acme");
    let globex = app.for_tenant("globex").await.expect("globex");
    let victim = stream("tenant-a1");
    acme.append(
        &victim,
        ExpectedVersion::NoStream,
        vec![created("Acme", Uuid::now_v7())],
    )
    .await
    .expect("acme appends");

    // Through the API: refused, naming the stream and the tenant's view.
    let forged = Snapshot {
        data: br#"{"created":true,"name":"Forged","suspended":false}"#.to_vec(),
        ..snapshot(&victim)
    };
    match globex.snapshots().save(forged.clone()).await {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "stream id");
            assert!(
                reason.contains("\"globex\"") && reason.contains("tenant-a1"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // By plain SQL as the application role, in globex's name.
    let mut tx = app.pool().begin().await.expect("begin");
    sqlx::query("SELECT set_config('annals.tenant', 'globex', true)")
        .execute(&mut *tx)
        .await
        .expect("tenant");
    sqlx::query(
        "INSERT INTO annals_snapshots (stream_id, version, snapshot_version, encoding, data) \
         VALUES ('tenant-a1', 1, 1, 0, $1)",
    )
    .bind(&forged.data)
    .execute(&mut *tx)
    .await
    .expect("the role may write its own tenant's rows");
    tx.commit().await.expect("commit");

    // The unscoped store and acme never load it; acme snapshots version 1.
    assert!(
        owner
            .snapshots()
            .load(&victim, None)
            .await
            .expect("load")
            .is_none()
    );
    assert!(
        acme.snapshots()
            .load(&victim, None)
            .await
            .expect("load")
            .is_none()
    );
    let tenants: Repository<Tenant> = Repository::new(Arc::new(owner.clone()));
    assert_eq!(tenants.load("a1").await.expect("load").state.name, "Acme");
    acme.snapshots()
        .save(snapshot(&victim))
        .await
        .expect("acme snapshots the version the plant names");
    let mine = acme
        .snapshots()
        .load(&victim, None)
        .await
        .expect("load")
        .expect("acme's snapshot");
    assert_eq!(mine.data, snapshot(&victim).data);
    // Each namespace is its own: globex's plant stays globex's alone.
    assert_eq!(
        globex
            .snapshots()
            .load(&victim, None)
            .await
            .expect("load")
            .map(|s| s.data),
        Some(forged.data)
    );
}

/// Crypto-shredding through tenant handles: globex stores personal data of
/// its own subject `1` after acme used `1` (it used to find the id taken
/// and fail), and acme forgetting its `1` leaves globex's readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keep_personal_data_of_subjects_with_the_same_id() {
    use annals::pii::{MasterKey, PiiEventStore};
    use annals_tests::pii::{MemberJoined, joined};
    let (_owner, app) = app_store().await;
    let master = MasterKey::generate();
    let mut stores = Vec::new();
    for tenant in ["acme", "globex"] {
        let handle = Arc::new(app.for_tenant(tenant).await.expect("handle"));
        let pii = PiiEventStore::new(handle.clone(), handle, master.clone());
        // Stream ids are still global: each tenant its own stream.
        pii.append(
            &stream(&format!("member-1-{tenant}")),
            ExpectedVersion::Any,
            vec![
                NewEvent::from_event(&joined("1", &format!("one@{tenant}.test"))).expect("encode"),
            ],
        )
        .await
        .unwrap_or_else(|error| panic!("{tenant} stores its subject 1: {error}"));
        stores.push((tenant, pii));
    }
    let email = |pii: &PiiEventStore, stream_id: &str| {
        let pii = pii.clone();
        let stream_id = stream(stream_id);
        async move {
            let events = pii.read_stream(&stream_id, 1, 10).await.expect("read");
            let member: MemberJoined = events[0].decode().expect("decode");
            member.email
        }
    };
    let (_, acme) = &stores[0];
    let (_, globex) = &stores[1];
    assert_eq!(email(acme, "member-1-acme").await, "one@acme.test");
    assert_eq!(email(globex, "member-1-globex").await, "one@globex.test");
    // Personal data naming another tenant is refused before any key is made.
    let naming_globex = NewEvent::from_event(&joined("2", "two@globex.test"))
        .expect("encode")
        .with_metadata(Metadata::new().with_tenant("globex"));
    assert!(matches!(
        acme.append(
            &stream("member-2-acme"),
            ExpectedVersion::Any,
            vec![naming_globex]
        )
        .await,
        Err(Error::InvalidInput {
            field: "tenant id",
            ..
        })
    ));
    let forgotten = acme.forget("1").await.expect("acme forgets its 1");
    assert_eq!(forgotten.tenant.as_deref(), Some("acme"));
    assert_eq!(email(acme, "member-1-acme").await, "[redacted]");
    assert_eq!(email(globex, "member-1-globex").await, "one@globex.test");
    assert!(matches!(
        acme.forget_in_tenant(Some("globex"), "1").await,
        Err(Error::InvalidInput {
            field: "tenant id",
            ..
        })
    ));
}

/// Collects the events a subscription delivers.
#[derive(Default)]
struct Collected(Vec<RecordedEvent>);

#[async_trait::async_trait]
impl annals::subscription::EventSink for Collected {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
        self.0.push(event.clone());
        Ok(())
    }
}

/// Two subscriptions of one name over two tenants' handles each deliver
/// exactly their tenant's events, and each resumes from its own checkpoint
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_subscriptions_deliver_each_of_their_events_once() {
    use annals::subscription::Subscription;
    let (_owner, app) = app_store().await;
    let tenants = ["acme", "globex"];
    let append_round = |round: usize| {
        let app = app.clone();
        async move {
            for tenant in tenants {
                let handle = app.for_tenant(tenant).await.expect("handle");
                for n in 0..5 {
                    handle
                        .append(
                            &stream(&format!("tenant-{tenant}-{round}-{n}")),
                            ExpectedVersion::NoStream,
                            vec![created(tenant, Uuid::now_v7())],
                        )
                        .await
                        .expect("append");
                }
            }
        }
    };
    let mut delivered: Vec<Vec<RecordedEvent>> = vec![Vec::new(), Vec::new()];
    for round in 0..2 {
        let mut running = Vec::new();
        for tenant in tenants {
            let handle = Arc::new(app.for_tenant(tenant).await.expect("handle"));
            running.push(
                Subscription::new(handle, "mailer")
                    .batch_size(3)
                    .poll_interval(std::time::Duration::from_millis(20))
                    .start(Collected::default()),
            );
        }
        append_round(round).await;
        for (index, subscription) in running.into_iter().enumerate() {
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                subscription.wait_until(std::time::Duration::from_secs(30), |status| {
                    status.delivered >= 5 && status.caught_up
                }),
            )
            .await
            .expect("caught up in time")
            .expect("status");
            delivered[index].extend(subscription.stop().await.expect("stop").0);
        }
    }
    for (tenant, events) in tenants.iter().zip(&delivered) {
        assert_eq!(events.len(), 10, "{tenant}: {events:?}");
        let mut ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10, "{tenant}: each event once");
        assert!(
            events
                .iter()
                .all(|event| event.metadata.tenant_id.as_deref() == Some(*tenant)),
            "{tenant}"
        );
    }
}

/// Stream ids belong to their tenant, in every layout: acme and globex each
/// have a `user-1` (its own versions, snapshots and chain), neither learns
/// of the other's through an append, a conflict or a read, and the owner's
/// unscoped store, which addresses streams by id alone, refuses to guess.
#[tokio::test]
async fn stream_ids_belong_to_their_tenant_in_every_layout() {
    for layout in [
        "embedded",
        "schema and prefix",
        "partitioned by stream",
        "partitioned by tenant",
    ] {
        let owner = owner_in_layout(layout).await;
        let app = application_role_store(&owner).await;
        let acme = app.for_tenant("acme").await.expect("acme");
        let globex = app.for_tenant("globex").await.expect("globex");
        let user = stream("user-1");
        acme.append(
            &user,
            ExpectedVersion::NoStream,
            vec![
                created("Ada", Uuid::now_v7()),
                created("Ada L.", Uuid::now_v7()),
            ],
        )
        .await
        .expect("acme's user-1");
        // Before stream ids were per tenant this was refused, naming the
        // stream as another tenant's.
        globex
            .append(
                &user,
                ExpectedVersion::NoStream,
                vec![created("Grace", Uuid::now_v7())],
            )
            .await
            .unwrap_or_else(|error| panic!("{layout}: globex's own user-1: {error:?}"));

        assert_eq!(
            acme.stream_version(&user).await.expect("version"),
            2,
            "{layout}"
        );
        assert_eq!(
            globex.stream_version(&user).await.expect("version"),
            1,
            "{layout}"
        );
        let theirs = globex.read_stream(&user, 1, 10).await.expect("read");
        assert_eq!(theirs.len(), 1, "{layout}");
        assert_eq!(theirs[0].metadata.tenant_id.as_deref(), Some("globex"));
        // A conflict tells globex its own version, nothing of acme's.
        match globex
            .append(
                &user,
                ExpectedVersion::Exact(2),
                vec![created("x", Uuid::now_v7())],
            )
            .await
        {
            Err(Error::VersionConflict { actual, .. }) => assert_eq!(actual, 1, "{layout}"),
            other => panic!("{layout}: expected globex's own conflict, got {other:?}"),
        }
        // Within a tenant a stream is still one stream.
        match acme
            .append(
                &user,
                ExpectedVersion::NoStream,
                vec![created("x", Uuid::now_v7())],
            )
            .await
        {
            Err(Error::VersionConflict { actual, .. }) => assert_eq!(actual, 2, "{layout}"),
            other => panic!("{layout}: expected acme's conflict, got {other:?}"),
        }

        // Snapshots of the same stream id and version, one per tenant.
        for (handle, name) in [(&acme, "acme"), (&globex, "globex")] {
            let mut taken = snapshot(&user);
            taken.data = name.as_bytes().to_vec();
            handle.snapshots().save(taken).await.expect("snapshot");
        }
        for (handle, name) in [(&acme, "acme"), (&globex, "globex")] {
            let loaded = handle
                .snapshots()
                .load(&user, None)
                .await
                .expect("load")
                .expect("a snapshot");
            assert_eq!(loaded.data, name.as_bytes(), "{layout}");
        }

        // The owner addresses a stream by id: an id two tenants use is
        // refused rather than mixed; its appends go to the tenant the
        // events name.
        match owner.read_stream(&user, 1, 10).await {
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!(field, "stream id");
                assert!(
                    reason.contains("user-1") && reason.contains("2 tenants"),
                    "{reason}"
                );
            }
            other => panic!("{layout}: expected an ambiguous id, got {other:?}"),
        }
        let initech = created("Initech's", Uuid::now_v7())
            .with_metadata(Metadata::new().with_tenant("initech"));
        owner
            .append(&user, ExpectedVersion::NoStream, vec![initech])
            .await
            .expect("the owner appends to initech's user-1");
        let initech_handle = app.for_tenant("initech").await.expect("initech");
        assert_eq!(initech_handle.stream_version(&user).await.expect("v"), 1);

        let chain = owner.verify_log().await.expect("verify");
        assert!(chain.is_intact(), "{layout}: {:?}", chain.first_break);
        let mut tenants: Vec<Option<&str>> = chain
            .heads
            .keys()
            .filter(|stream| stream.stream_id == "user-1")
            .map(|stream| stream.tenant_id.as_deref())
            .collect();
        tenants.sort();
        assert_eq!(
            tenants,
            [Some("acme"), Some("globex"), Some("initech")],
            "{layout}"
        );
        assert!(chain.head("user-1").is_none(), "three streams have that id");
        assert!(
            acme.verify_stream(&user)
                .await
                .expect("verify")
                .head("user-1")
                .is_some()
        );
    }
}

/// A stream belongs to one tenant: one append whose events name two tenants
/// is refused, naming both. A stream written before migration 0016 whose
/// events name different tenants (planted here as the unscoped store could
/// write it then) becomes one stream per tenant, and its hash chain reports
/// the first event whose predecessor was another tenant's.
#[tokio::test]
async fn a_stream_belongs_to_one_tenant() {
    let owner = fresh_postgres_store().await;
    let mixed = stream("mixed-1");
    let naming = |tenant: &str| {
        created("x", Uuid::now_v7()).with_metadata(Metadata::new().with_tenant(tenant))
    };
    match owner
        .append(
            &mixed,
            ExpectedVersion::NoStream,
            vec![naming("acme"), naming("globex")],
        )
        .await
    {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "tenant id");
            assert!(
                reason.contains("\"acme\"") && reason.contains("\"globex\""),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        owner.stream_version(&mixed).await.expect("version"),
        0,
        "nothing was written"
    );

    // The old shape: version 1 without a tenant, version 2 of acme chained
    // onto it, as the stream was one before migration 0016.
    owner
        .append(
            &mixed,
            ExpectedVersion::NoStream,
            vec![created("old", Uuid::now_v7())],
        )
        .await
        .expect("version 1");
    sqlx::query(
        "WITH head AS (SELECT version, hash FROM annals_events WHERE stream_id = 'mixed-1' \
                       ORDER BY version DESC LIMIT 1), \
              n AS (SELECT nextval('annals_events_position_seq'::regclass) AS position, \
                           pg_current_xact_id() AS txid, gen_random_uuid() AS event_id, \
                           now() AS at) \
         INSERT INTO annals_events (position, transaction_id, event_id, stream_id, version, \
                                    event_type, schema_version, payload, tenant_id, headers, \
                                    recorded_at, hash, chain_key) \
         OVERRIDING SYSTEM VALUE \
         SELECT n.position, n.txid, n.event_id, 'mixed-1', head.version + 1, 'test.tenant.created', \
                1, '{\"name\": \"y\"}'::jsonb, 'acme', '{}'::jsonb, n.at, \
                annals_keyed_chain_step(NULL, head.hash, annals_event_link_digest( \
                    n.event_id, 'mixed-1', head.version + 1, 'test.tenant.created', 1, \
                    '{\"name\": \"y\"}'::jsonb::text, 'acme', NULL, NULL, NULL, NULL, \
                    '{}'::jsonb::text, n.at, n.position, n.txid::text::int8), NULL, NULL), 0 \
         FROM head, n",
    )
    .execute(owner.pool())
    .await
    .expect("the old shape");
    let broken = owner
        .verify_log()
        .await
        .expect("verify")
        .first_break
        .expect("a break");
    assert_eq!(
        (
            broken.tenant_id.as_deref(),
            broken.stream_id.as_str(),
            broken.version
        ),
        (Some("acme"), "mixed-1", 2)
    );
}
