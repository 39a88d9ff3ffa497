//! The repository suite: loading, commands with retry on conflict, domain
//! rejections, metadata and cross-aggregate transactions, run against every
//! backend by [`repository_suite!`](crate::repository_suite).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use annals::aggregate::snapshot::{Snapshot, SnapshotCodec, SnapshotSettings};
use annals::cache::{CacheKey, EventCache, InProcessCache};
use annals::prelude::*;
use annals::{Aggregate, Handle, StreamId};
use serde_json::json;
use uuid::Uuid;

use crate::backends::TestStore;
use crate::domain::{
    AssignRole, CreateTenant, RegisterUser, RenameTenant, SlowTenantCounter, SuspendTenant, Tenant,
    TenantCreated, TenantDirectory, TenantError, TenantEvent, User, UserError, UserEvent, WELCOMED,
};

/// Expands to one `#[tokio::test]` per repository case for a backend.
#[macro_export]
macro_rules! repository_suite {
    ($backend:ident) => {
        $crate::repository_suite!(@cases $backend:
            commands_build_state_that_loads_back,
            rejected_commands_write_nothing,
            events_carry_the_command_metadata,
            a_conflict_is_retried_on_fresh_state,
            conflicts_beyond_the_attempt_limit_are_returned,
            concurrent_commands_on_one_aggregate_all_land,
            unit_of_work_is_all_or_nothing,
            older_schema_versions_are_upcast_on_load,
            snapshots_are_taken_every_n_events_and_used_on_load,
            unusable_snapshots_are_skipped,
            encrypted_snapshots_hide_the_state,
            loading_at_a_version_uses_an_older_snapshot,
            cached_state_is_used_and_kept_fresh,
            a_stale_cache_never_decides_a_command,
            a_command_on_a_stale_cache_is_decided_again_after_the_conflict,
            commands_decide_on_the_cached_state,
            a_cache_ahead_of_the_store_is_dropped_on_conflict,
            a_cache_ahead_of_the_store_is_never_served,
            loading_as_of_an_instant_ignores_later_events_and_snapshots,
            many_aggregates_load_in_order,
            replay_into_a_projection_reports_progress,
            replay_rebuilds_aggregates_without_running_handlers,
            a_replay_can_be_cancelled,
            a_retried_command_id_returns_the_first_outcome,
        );
    };
    (@cases $backend:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $crate::backends::TestStore::$backend().await;
                $crate::repository::$case(&store).await;
            }
        )*
    };
}

fn tenants(t: &TestStore) -> Repository<Tenant> {
    Repository::new(t.store.clone())
}

fn users(t: &TestStore) -> Repository<User> {
    Repository::new(t.store.clone())
}

/// Commands produce events, the state follows, and a fresh load agrees.
pub async fn commands_build_state_that_loads_back(t: &TestStore) {
    let repo = tenants(t);
    let created = repo
        .execute(
            "acme",
            &CreateTenant {
                name: "Acme".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("create");
    assert_eq!((created.version, created.attempts), (1, 1));
    assert_eq!(
        created.events,
        [TenantEvent::from(TenantCreated {
            name: "Acme".into()
        })]
    );
    repo.execute(
        "acme",
        &RenameTenant {
            name: "Acme Corp".into(),
        },
        Metadata::new(),
    )
    .await
    .expect("rename");
    let unchanged = repo
        .execute(
            "acme",
            &RenameTenant {
                name: "Acme Corp".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("rename to the same name");
    assert!(unchanged.events.is_empty(), "no events, no append");
    assert_eq!(unchanged.version, 2);

    let loaded = repo.load("acme").await.expect("load");
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.stream_id.as_str(), "tenant-acme");
    assert_eq!(
        loaded.state,
        Tenant {
            created: true,
            name: "Acme Corp".into(),
            suspended: false
        }
    );
    let missing = repo.load("nobody").await.expect("load missing");
    assert_eq!((missing.version, missing.state), (0, Tenant::default()));
}

/// A domain rejection is `CommandError::Rejected` and appends nothing.
pub async fn rejected_commands_write_nothing(t: &TestStore) {
    let repo = tenants(t);
    match repo.execute("ghost", &SuspendTenant, Metadata::new()).await {
        Err(CommandError::Rejected(TenantError::NotFound)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    match repo
        .execute("blank", &CreateTenant { name: " ".into() }, Metadata::new())
        .await
    {
        Err(error) => assert_eq!(error.rejection(), Some(&TenantError::EmptyName)),
        Ok(executed) => panic!("an empty name was accepted: {:?}", executed.events),
    }
    let stream = StreamId::new("tenant-blank").expect("stream id");
    assert_eq!(t.store.stream_version(&stream).await.expect("version"), 0);
}

/// Every event of a command records actor, tenant and correlation id.
pub async fn events_carry_the_command_metadata(t: &TestStore) {
    let request = Uuid::now_v7();
    let metadata = Metadata::new()
        .with_actor("admin@acme.test")
        .with_tenant("acme")
        .with_correlation_id(request);
    users(t)
        .execute(
            "ada",
            &RegisterUser {
                email: "ada@acme.test".into(),
            },
            metadata.clone(),
        )
        .await
        .expect("register");
    users(t)
        .execute(
            "ada",
            &AssignRole {
                role: "admin".into(),
            },
            metadata.clone(),
        )
        .await
        .expect("assign");
    let page = t
        .store
        .query(&EventQuery::new().correlation_id(request))
        .await
        .expect("query");
    assert_eq!(page.events.len(), 2);
    for event in &page.events {
        assert_eq!(event.metadata, metadata);
        assert_eq!(event.stream_id.as_str(), "user-ada");
    }
    assert_eq!(page.events[0].event_type, "test.user.registered");
    assert_eq!(page.events[0].schema_version, 2);
}

/// A command that, while deciding the first time, sees another writer
/// append to its aggregate (the interference is this command's own doing).
struct AssignRoleWhileInterfered {
    store: Arc<dyn EventStore>,
    decisions: AtomicUsize,
    interfere_times: usize,
}

impl Handle<AssignRoleWhileInterfered> for User {
    type Error = UserError;
    fn handle(&self, command: &AssignRoleWhileInterfered) -> Result<Vec<UserEvent>, UserError> {
        let decision = command.decisions.fetch_add(1, Ordering::SeqCst);
        if decision < command.interfere_times {
            let store = command.store.clone();
            let role = format!("interloper-{decision}");
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    let stream = StreamId::new("user-grace").expect("stream id");
                    let event =
                        NewEvent::from_event(&UserEvent::RoleAssigned { role }).expect("encode");
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await
                        .expect("interfering append");
                })
            });
        }
        Ok(vec![UserEvent::RoleAssigned {
            role: "auditor".into(),
        }])
    }
}

/// A version conflict makes the repository reload and decide again.
pub async fn a_conflict_is_retried_on_fresh_state(t: &TestStore) {
    let repo = users(t);
    repo.execute(
        "grace",
        &RegisterUser {
            email: "grace@acme.test".into(),
        },
        Metadata::new(),
    )
    .await
    .expect("register");
    let command = AssignRoleWhileInterfered {
        store: t.store.clone(),
        decisions: AtomicUsize::new(0),
        interfere_times: 2,
    };
    let executed = repo
        .execute("grace", &command, Metadata::new())
        .await
        .expect("retried");
    assert_eq!(executed.attempts, 3, "two conflicts, then success");
    assert_eq!(executed.version, 4);
    let roles: Vec<&str> = executed.state.roles.iter().map(String::as_str).collect();
    assert_eq!(roles, ["auditor", "interloper-0", "interloper-1"]);
    let loaded = repo.load("grace").await.expect("load");
    assert_eq!(loaded.state.roles, executed.state.roles);
}

/// With no attempts left, the conflict reaches the caller.
pub async fn conflicts_beyond_the_attempt_limit_are_returned(t: &TestStore) {
    let repo = users(t).with_max_attempts(2);
    repo.execute(
        "grace",
        &RegisterUser {
            email: "grace@acme.test".into(),
        },
        Metadata::new(),
    )
    .await
    .expect("register");
    let command = AssignRoleWhileInterfered {
        store: t.store.clone(),
        decisions: AtomicUsize::new(0),
        interfere_times: 5,
    };
    match repo.execute("grace", &command, Metadata::new()).await {
        Err(CommandError::Store(Error::VersionConflict { stream, .. })) => {
            assert_eq!(stream, "user-grace")
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_eq!(command.decisions.load(Ordering::SeqCst), 2);
    let loaded = repo.load("grace").await.expect("load");
    assert!(
        !loaded.state.roles.contains("auditor"),
        "the failed command wrote nothing"
    );
}

/// Many concurrent commands on one aggregate all land, thanks to retries.
pub async fn concurrent_commands_on_one_aggregate_all_land(t: &TestStore) {
    let repo = users(t).with_max_attempts(50);
    repo.execute(
        "busy",
        &RegisterUser {
            email: "busy@acme.test".into(),
        },
        Metadata::new(),
    )
    .await
    .expect("register");
    let tasks = (0..8).map(|n| {
        let repo = repo.clone();
        tokio::spawn(async move {
            repo.execute(
                "busy",
                &AssignRole {
                    role: format!("role-{n}"),
                },
                Metadata::new(),
            )
            .await
        })
    });
    for result in futures_util::future::join_all(tasks).await {
        result.expect("task").expect("every command lands");
    }
    let loaded = repo.load("busy").await.expect("load");
    assert_eq!(loaded.state.roles.len(), 8);
    assert_eq!(loaded.version, 9);
}

/// A unit of work across aggregates commits entirely or not at all.
pub async fn unit_of_work_is_all_or_nothing(t: &TestStore) {
    let metadata = Metadata::new().with_actor("onboarding");
    let mut work = UnitOfWork::new();
    work.append::<Tenant>(
        "globex",
        ExpectedVersion::NoStream,
        &[TenantCreated {
            name: "Globex".into(),
        }
        .into()],
        &metadata,
    )
    .expect("tenant events")
    .append::<User>(
        "hank",
        ExpectedVersion::Exact(3),
        &[UserEvent::Registered {
            email: "hank@globex.test".into(),
            display_name: "Hank".into(),
        }],
        &metadata,
    )
    .expect("user events");
    match work.commit(&*t.store).await {
        Err(Error::VersionConflict { stream, .. }) => assert_eq!(stream, "user-hank"),
        other => panic!("expected a conflict on user-hank, got {other:?}"),
    }
    assert_eq!(
        tenants(t).load("globex").await.expect("load").version,
        0,
        "nothing written"
    );

    let mut work = UnitOfWork::new();
    work.append::<Tenant>(
        "globex",
        ExpectedVersion::NoStream,
        &[TenantCreated {
            name: "Globex".into(),
        }
        .into()],
        &metadata,
    )
    .expect("tenant events")
    .append::<User>(
        "hank",
        ExpectedVersion::NoStream,
        &[UserEvent::Registered {
            email: "hank@globex.test".into(),
            display_name: "Hank".into(),
        }],
        &metadata,
    )
    .expect("user events");
    let results = work.commit(&*t.store).await.expect("commit");
    assert_eq!(
        results[0].position.commit, results[1].position.commit,
        "one transaction"
    );
    assert_eq!(
        tenants(t).load("globex").await.expect("load").state.name,
        "Globex"
    );
    assert_eq!(
        users(t).load("hank").await.expect("load").state.email,
        "hank@globex.test"
    );
}

/// Events stored at an older schema version are upcast when loaded (a JSON
/// upcast for tenants, a typed one for users).
pub async fn older_schema_versions_are_upcast_on_load(t: &TestStore) {
    let tenant = StreamId::new("tenant-initech").expect("stream id");
    let v1_rename = NewEvent::json("test.tenant.renamed", &json!({ "new_name": "Initech 2" }))
        .expect("event")
        .with_schema_version(1);
    let created = NewEvent::from_event(&TenantCreated {
        name: "Initech".into(),
    })
    .expect("event");
    t.store
        .append(&tenant, ExpectedVersion::NoStream, vec![created, v1_rename])
        .await
        .expect("append");
    let loaded = tenants(t).load("initech").await.expect("load");
    assert_eq!(loaded.state.name, "Initech 2");

    let user = StreamId::new("user-peter").expect("stream id");
    let v1_registered = NewEvent::json(
        "test.user.registered",
        &json!({ "email": "peter@initech.test" }),
    )
    .expect("event")
    .with_schema_version(1);
    t.store
        .append(&user, ExpectedVersion::NoStream, vec![v1_registered])
        .await
        .expect("append");
    let loaded = users(t).load("peter").await.expect("load");
    assert_eq!(loaded.state.email, "peter@initech.test");
    assert_eq!(loaded.state.display_name, "peter@initech.test");

    let bad_v1 = NewEvent::json("test.tenant.renamed", &json!({ "old": true }))
        .expect("event")
        .with_schema_version(1);
    t.store
        .append(&tenant, ExpectedVersion::Any, vec![bad_v1])
        .await
        .expect("append");
    match tenants(t).load("initech").await {
        Err(error @ Error::Decode { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("tenant-initech") && message.contains("new_name"),
                "{message}"
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

async fn user_with_roles(repo: &Repository<User>, id: &str, roles: usize) {
    repo.execute(
        id,
        &RegisterUser {
            email: format!("{id}@acme.test"),
        },
        Metadata::new(),
    )
    .await
    .expect("register");
    for n in 0..roles {
        repo.execute(
            id,
            &AssignRole {
                role: format!("role-{n}"),
            },
            Metadata::new(),
        )
        .await
        .expect("assign");
    }
}

/// Plants a snapshot whose state no event produced, to see whether loads use it.
async fn plant_snapshot(
    t: &TestStore,
    codec: &SnapshotCodec,
    id: &str,
    version: u64,
    shape: u32,
    roles: &[&str],
) {
    let stream = StreamId::new(format!("user-{id}")).expect("stream id");
    let state = Payload::from_serialize(&serde_json::json!({
        "email": format!("{id}@acme.test"),
        "display_name": "from a snapshot",
        "roles": roles,
        "deactivated": false,
    }))
    .expect("json");
    let (encoding, data) = codec
        .encode(&stream, version, shape, &state)
        .expect("encode");
    let taken_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
    let snapshot = Snapshot {
        stream_id: stream,
        version,
        snapshot_version: shape,
        encoding,
        data,
        taken_at,
    };
    t.store
        .snapshots()
        .save(snapshot)
        .await
        .expect("plant snapshot");
}

/// With snapshots on, one is taken each time a command crosses a multiple
/// of the interval, and loads start from the newest one.
pub async fn snapshots_are_taken_every_n_events_and_used_on_load(t: &TestStore) {
    let repo = users(t).with_snapshots(SnapshotSettings::new().every(3));
    user_with_roles(&repo, "snappy", 6).await; // versions 1..=7
    let stream = StreamId::new("user-snappy").expect("stream id");
    let newest = t
        .store
        .snapshots()
        .load(&stream, None)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!(newest.version, 6, "taken at 3 and 6");
    assert_eq!(
        t.store
            .snapshots()
            .load(&stream, Some(5))
            .await
            .expect("load")
            .map(|s| s.version),
        Some(3)
    );

    // A planted snapshot at the head proves loads start from it.
    plant_snapshot(
        t,
        &SnapshotCodec::new(),
        "snappy",
        7,
        User::SNAPSHOT_VERSION,
        &["planted"],
    )
    .await;
    let loaded = repo.load("snappy").await.expect("load");
    assert_eq!(loaded.version, 7);
    assert_eq!(loaded.state.roles.iter().collect::<Vec<_>>(), ["planted"]);

    // Newer events apply on top of it.
    repo.execute(
        "snappy",
        &AssignRole {
            role: "late".into(),
        },
        Metadata::new(),
    )
    .await
    .expect("assign");
    let loaded = repo.load("snappy").await.expect("load");
    assert_eq!(
        loaded.state.roles.iter().collect::<Vec<_>>(),
        ["late", "planted"]
    );

    // Without snapshots the same repository type reads every event.
    let plain = users(t).load("snappy").await.expect("load");
    assert_eq!(plain.state.roles.len(), 7);
}

/// A snapshot of another shape version, one that does not decode, and one
/// encrypted under another key are all skipped: the state comes from events.
pub async fn unusable_snapshots_are_skipped(t: &TestStore) {
    let repo = users(t).with_snapshots(SnapshotSettings::new());
    user_with_roles(&repo, "wary", 2).await; // versions 1..=3
    let expected: Vec<String> = vec!["role-0".into(), "role-1".into()];

    plant_snapshot(
        t,
        &SnapshotCodec::new(),
        "wary",
        3,
        User::SNAPSHOT_VERSION + 1,
        &["wrong shape"],
    )
    .await;
    let loaded = repo.load("wary").await.expect("load");
    assert_eq!(loaded.state.roles.into_iter().collect::<Vec<_>>(), expected);

    let other_key = SnapshotCodec::new().with_key(&[3u8; 32]).expect("key");
    plant_snapshot(
        t,
        &other_key,
        "wary",
        3,
        User::SNAPSHOT_VERSION,
        &["wrong key"],
    )
    .await;
    let loaded = repo.load("wary").await.expect("load");
    assert_eq!(loaded.state.roles.into_iter().collect::<Vec<_>>(), expected);

    let garbage = Snapshot {
        stream_id: StreamId::new("user-wary").expect("stream id"),
        version: 3,
        snapshot_version: User::SNAPSHOT_VERSION,
        encoding: annals::aggregate::snapshot::COMPRESSED,
        data: b"not zstd at all".to_vec(),
        taken_at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6),
    };
    t.store.snapshots().save(garbage).await.expect("plant");
    let loaded = repo.load("wary").await.expect("load");
    assert_eq!(
        (
            loaded.version,
            loaded.state.roles.into_iter().collect::<Vec<_>>()
        ),
        (3, expected)
    );
}

/// With a key, stored snapshots do not contain the state in clear, and they
/// still load.
pub async fn encrypted_snapshots_hide_the_state(t: &TestStore) {
    let codec = SnapshotCodec::new().with_key(&[0x5a; 32]).expect("key");
    let repo = users(t).with_snapshots(SnapshotSettings::new().codec(codec));
    user_with_roles(&repo, "secretive", 1).await;
    assert_eq!(repo.snapshot("secretive").await.expect("snapshot"), Some(2));
    let stream = StreamId::new("user-secretive").expect("stream id");
    let stored = t
        .store
        .snapshots()
        .load(&stream, None)
        .await
        .expect("load")
        .expect("found");
    assert_eq!(
        stored.encoding,
        annals::aggregate::snapshot::COMPRESSED | annals::aggregate::snapshot::ENCRYPTED
    );
    let raw = String::from_utf8_lossy(&stored.data);
    assert!(!raw.contains("secretive@acme.test") && !raw.contains("role-0"));
    plant_snapshot(
        t,
        &SnapshotCodec::new().with_key(&[0x5a; 32]).expect("key"),
        "secretive",
        2,
        User::SNAPSHOT_VERSION,
        &["via snapshot"],
    )
    .await;
    let loaded = repo.load("secretive").await.expect("load");
    assert!(loaded.state.roles.contains("via snapshot"));
    assert_eq!(users(t).snapshot("nobody").await.expect("snapshot"), None);
}

/// Loading at a version starts from the newest snapshot at or below it.
pub async fn loading_at_a_version_uses_an_older_snapshot(t: &TestStore) {
    let repo = users(t).with_snapshots(SnapshotSettings::new());
    user_with_roles(&repo, "history", 5).await; // versions 1..=6
    plant_snapshot(
        t,
        &SnapshotCodec::new(),
        "history",
        2,
        User::SNAPSHOT_VERSION,
        &["snap@2"],
    )
    .await;
    plant_snapshot(
        t,
        &SnapshotCodec::new(),
        "history",
        5,
        User::SNAPSHOT_VERSION,
        &["snap@5"],
    )
    .await;
    let at_4 = repo.load_at("history", 4).await.expect("load");
    assert_eq!(at_4.version, 4);
    let roles: Vec<&str> = at_4.state.roles.iter().map(String::as_str).collect();
    assert_eq!(
        roles,
        ["role-1", "role-2", "snap@2"],
        "snapshot 2, then events 3 and 4"
    );
    let at_6 = repo.load_at("history", 6).await.expect("load");
    assert_eq!(
        at_6.state
            .roles
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["role-4", "snap@5"]
    );
    let plain_at_4 = users(t).load_at("history", 4).await.expect("load");
    assert_eq!(
        plain_at_4.state.roles.len(),
        3,
        "role-0..2 from events alone"
    );
}

/// Loads start from the cached state; writes go through; events written
/// behind the cache's back are still seen.
pub async fn cached_state_is_used_and_kept_fresh(t: &TestStore) {
    let cache = Arc::new(InProcessCache::new());
    let repo = users(t).with_cache(cache.clone());
    user_with_roles(&repo, "cached", 2).await;
    let before = cache.stats();
    let loaded = repo.load("cached").await.expect("load");
    assert_eq!((loaded.version, loaded.state.roles.len()), (3, 2));
    assert_eq!(cache.stats().hits, before.hits + 1, "served from the cache");

    // Another writer appends behind the cache's back.
    let stream = StreamId::new("user-cached").expect("stream id");
    let event = NewEvent::from_event(&UserEvent::RoleAssigned {
        role: "behind".into(),
    })
    .expect("encode");
    t.store
        .append(&stream, ExpectedVersion::Exact(3), vec![event])
        .await
        .expect("append");
    let loaded = repo.load("cached").await.expect("load");
    assert_eq!(loaded.version, 4);
    assert!(loaded.state.roles.contains("behind"));

    repo.invalidate("cached").await.expect("invalidate");
    let misses = cache.stats().misses;
    repo.load("cached").await.expect("load");
    assert_eq!(cache.stats().misses, misses + 1, "invalidated");
    assert!(cache.stats().hit_rate() > 0.0);
}

/// A cache entry older than the store cannot make a command decide on old
/// state: the role assigned behind the cache's back is seen, and the
/// command produces nothing.
pub async fn a_stale_cache_never_decides_a_command(t: &TestStore) {
    let cache = Arc::new(InProcessCache::new());
    let repo = users(t).with_cache(cache);
    user_with_roles(&repo, "stale", 1).await; // cached at version 2
    let stream = StreamId::new("user-stale").expect("stream id");
    let event = NewEvent::from_event(&UserEvent::RoleAssigned {
        role: "auditor".into(),
    })
    .expect("encode");
    t.store
        .append(&stream, ExpectedVersion::Exact(2), vec![event])
        .await
        .expect("append");

    let executed = repo
        .execute(
            "stale",
            &AssignRole {
                role: "auditor".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("execute");
    assert!(
        executed.events.is_empty(),
        "already assigned: nothing to do"
    );
    assert_eq!(
        t.store.stream_version(&stream).await.expect("version"),
        3,
        "no duplicate event"
    );
}

/// A command decided on a cached state that another writer has since
/// passed loses the append's version check, and is decided again on the
/// store's state: both writers' events are kept, in order.
pub async fn a_command_on_a_stale_cache_is_decided_again_after_the_conflict(t: &TestStore) {
    let cache = Arc::new(InProcessCache::new());
    let repo = users(t).with_cache(cache);
    user_with_roles(&repo, "behind", 1).await; // cached at version 2
    let stream = StreamId::new("user-behind").expect("stream id");
    let event = NewEvent::from_event(&UserEvent::RoleAssigned {
        role: "auditor".into(),
    })
    .expect("encode");
    t.store
        .append(&stream, ExpectedVersion::Exact(2), vec![event])
        .await
        .expect("another writer");

    let executed = repo
        .execute(
            "behind",
            &AssignRole {
                role: "admin".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("execute");
    assert_eq!((executed.version, executed.attempts), (4, 1));
    assert!(executed.state.roles.contains("auditor") && executed.state.roles.contains("admin"));
    let stored = t.store.read_stream(&stream, 1, 10).await.expect("read");
    let versions: Vec<u64> = stored.iter().map(|event| event.version).collect();
    assert_eq!(versions, [1, 2, 3, 4], "nothing lost, nothing doubled");
}

/// With the state cached, each command decides on the cached state (the
/// append's version check is what keeps it honest, see the test above).
pub async fn commands_decide_on_the_cached_state(t: &TestStore) {
    let cache = Arc::new(InProcessCache::new());
    let repo = users(t).with_cache(cache.clone());
    user_with_roles(&repo, "hot", 1).await;
    let before = cache.stats();
    for role in ["a", "b", "c"] {
        repo.execute("hot", &AssignRole { role: role.into() }, Metadata::new())
            .await
            .expect("execute");
    }
    let after = cache.stats();
    assert_eq!(
        after.hits - before.hits,
        3,
        "every decision came from the cache"
    );
    assert_eq!(after.misses, before.misses, "and none went to the store");
    assert_eq!(repo.load("hot").await.expect("load").version, 5);
}

/// A cache that claims a version the store does not have (restored
/// database, wrong environment) is caught by the append's version check:
/// the entry is dropped and the command decides on the store's state.
pub async fn a_cache_ahead_of_the_store_is_dropped_on_conflict(t: &TestStore) {
    let cache = Arc::new(InProcessCache::new());
    let repo = users(t).with_cache(cache.clone());
    user_with_roles(&repo, "ahead", 0).await; // version 1
    let mut bogus = 10_u64.to_be_bytes().to_vec();
    bogus.extend_from_slice(
        br#"{"email":"ahead@acme.test","display_name":"x","roles":["ghost"],"deactivated":false}"#,
    );
    let key = CacheKey::new(
        None,
        "state",
        format!("user-ahead@{}", User::SNAPSHOT_VERSION),
    );
    cache.put(&key, bogus.into()).await.expect("plant");

    let executed = repo
        .execute(
            "ahead",
            &AssignRole {
                role: "real".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("execute");
    assert_eq!(
        (executed.attempts, executed.version),
        (1, 2),
        "caught by the append's version check, decided again on the store's state"
    );
    let roles: Vec<&str> = executed.state.roles.iter().map(String::as_str).collect();
    assert_eq!(roles, ["real"], "the ghost role from the cache is gone");
}

/// Time travel: the state at an instant, from events recorded by then and a
/// snapshot of a version reached by then.
pub async fn loading_as_of_an_instant_ignores_later_events_and_snapshots(t: &TestStore) {
    let repo = users(t).with_snapshots(SnapshotSettings::new().every(2));
    user_with_roles(&repo, "traveller", 1).await; // v1, v2 (snapshot at 2)
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let instant = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for role in ["late-1", "late-2"] {
        repo.execute(
            "traveller",
            &AssignRole { role: role.into() },
            Metadata::new(),
        )
        .await
        .expect("assign");
    } // v3, v4 (snapshot at 4)
    let then = repo.load_as_of("traveller", instant).await.expect("load");
    assert_eq!(then.version, 2);
    assert_eq!(
        then.state
            .roles
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["role-0"]
    );
    let before_everything = repo
        .load_as_of("traveller", instant - chrono::Duration::hours(1))
        .await
        .expect("load");
    assert_eq!(
        (
            before_everything.version,
            before_everything.state.email.as_str()
        ),
        (0, "")
    );
    let now = users(t)
        .load_as_of("traveller", chrono::Utc::now())
        .await
        .expect("load");
    assert_eq!(now.version, 4);
}

/// Batch loads keep the caller's order.
pub async fn many_aggregates_load_in_order(t: &TestStore) {
    let repo = users(t);
    for (n, id) in ["u3", "u1", "u2"].iter().enumerate() {
        user_with_roles(&repo, id, n).await;
    }
    let loaded = repo
        .load_many(["u1", "u2", "u3", "missing"], 2)
        .await
        .expect("load many");
    let summary: Vec<(&str, u64)> = loaded
        .iter()
        .map(|l| (l.stream_id.as_str(), l.version))
        .collect();
    assert_eq!(
        summary,
        [
            ("user-u1", 2),
            ("user-u2", 3),
            ("user-u3", 1),
            ("user-missing", 0)
        ]
    );
}

async fn create_tenants(t: &TestStore, count: usize) {
    let appends = (0..count)
        .map(|n| {
            let event = NewEvent::from_event(&TenantCreated {
                name: format!("Tenant {n}"),
            })
            .expect("encode");
            let stream = StreamId::new(format!("tenant-t{n}")).expect("stream id");
            annals::store::StreamAppend::new(stream, ExpectedVersion::NoStream, vec![event])
        })
        .collect();
    t.store.append_batch(appends).await.expect("append");
}

/// A projection replay applies exactly the matching events and reports
/// progress by id and as a stream of updates.
pub async fn replay_into_a_projection_reports_progress(t: &TestStore) {
    use futures_util::StreamExt;
    create_tenants(t, 1200).await;
    users(t)
        .execute(
            "noise",
            &RegisterUser {
                email: "n@acme.test".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("register");
    let replays = annals::replay::Replays::new();
    let handle = replays.project(
        t.store.clone(),
        TenantDirectory::default(),
        EventQuery::new(),
    );
    let id = handle.id();
    let updates = handle.updates();
    let (directory, summary) = handle.finish().await.expect("replay");
    assert_eq!(directory.names.len(), 1200);
    assert_eq!(directory.names["tenant-t7"], "Tenant 7");
    assert_eq!(summary.state, annals::replay::ReplayState::Completed);
    assert_eq!(
        (summary.done, summary.total),
        (1200, 1200),
        "user events are not the projection's"
    );
    assert!(summary.per_second > 0.0);
    let seen: Vec<_> = updates.collect().await;
    assert_eq!(
        seen.last().map(|p| p.state.clone()),
        Some(annals::replay::ReplayState::Completed)
    );
    assert_eq!(replays.status(id).map(|p| p.done), Some(1200));
    assert_eq!(replays.list().len(), 1);
}

/// Aggregates rebuild concurrently from the store; handlers do not run.
pub async fn replay_rebuilds_aggregates_without_running_handlers(t: &TestStore) {
    let repo = users(t);
    for n in 0..12 {
        user_with_roles(&repo, &format!("r{n}"), n % 3).await;
    }
    create_tenants(t, 3).await;
    let welcomed_before = WELCOMED.lock().map(|w| w.len()).unwrap_or(0);
    let replays = annals::replay::Replays::new();
    let (loaded, summary) = replays
        .aggregates(repo, EventQuery::new(), 4)
        .finish()
        .await
        .expect("replay");
    assert_eq!((summary.done, summary.total), (12, 12));
    assert_eq!(loaded.len(), 12);
    let r5 = loaded
        .iter()
        .find(|l| l.stream_id.as_str() == "user-r5")
        .expect("r5");
    assert_eq!((r5.version, r5.state.roles.len()), (3, 2));
    assert_eq!(
        WELCOMED.lock().map(|w| w.len()).unwrap_or(0),
        welcomed_before,
        "no handler ran"
    );
}

/// Cancelling stops a replay between pages and says so.
pub async fn a_replay_can_be_cancelled(t: &TestStore) {
    use futures_util::StreamExt;
    create_tenants(t, 1500).await;
    let replays = annals::replay::Replays::new();
    let handle = replays.project(
        t.store.clone(),
        SlowTenantCounter::default(),
        EventQuery::new(),
    );
    let mut progress = handle.updates();
    while let Some(update) = progress.next().await {
        if update.done > 0 {
            break;
        }
    }
    handle.request_stop();
    let (counter, summary) = handle.finish().await.expect("replay");
    assert_eq!(summary.state, annals::replay::ReplayState::Cancelled);
    assert!(
        summary.done < 1500 && summary.done == counter.count,
        "{summary:?}"
    );
    assert_eq!(summary.total, 1500);
    assert!(summary.eta.is_some());
}

/// A cached state at a version the store does not have is dropped by a
/// plain load too, which then answers from the store.
pub async fn a_cache_ahead_of_the_store_is_never_served(t: &TestStore) {
    let cache = Arc::new(InProcessCache::new());
    let repo = users(t).with_cache(cache.clone());
    user_with_roles(&repo, "restored", 1).await; // version 2
    let mut bogus = 10_u64.to_be_bytes().to_vec();
    bogus.extend_from_slice(
        br#"{"email":"x@acme.test","display_name":"x","roles":["ghost"],"deactivated":false}"#,
    );
    let key = CacheKey::new(
        None,
        "state",
        format!("user-restored@{}", User::SNAPSHOT_VERSION),
    );
    cache.put(&key, bogus.into()).await.expect("plant");

    let loaded = repo.load("restored").await.expect("load");
    assert_eq!(loaded.version, 2);
    assert_eq!(
        loaded
            .state
            .roles
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["role-0"]
    );
    let hits = cache.stats().hits;
    repo.load("restored").await.expect("load");
    assert_eq!(
        cache.stats().hits,
        hits + 1,
        "the store's state is cached again"
    );
}

/// A command executed again with the same command id (a retry after a lost
/// answer) returns its first outcome instead of being decided again: here,
/// a second suspension would be refused. An id used for another stream is
/// refused, naming it.
pub async fn a_retried_command_id_returns_the_first_outcome(t: &TestStore) {
    let repo = tenants(t);
    let tenant = t.store.tenant().unwrap_or("acme").to_owned();
    let metadata = || Metadata::new().with_tenant(tenant.clone());
    repo.execute(
        "idem",
        &CreateTenant {
            name: "Idem".into(),
        },
        metadata(),
    )
    .await
    .expect("create");
    let once = metadata().with_command_id("req-42");
    let first = repo
        .execute("idem", &SuspendTenant, once.clone())
        .await
        .expect("suspend");
    assert!(!first.repeated);
    let again = repo
        .execute("idem", &SuspendTenant, once.clone())
        .await
        .expect("the retry gets the first outcome");
    assert!(again.repeated);
    assert_eq!(
        (again.version, again.position, again.events.len()),
        (first.version, first.position, first.events.len())
    );
    let stream = StreamId::new("tenant-idem").expect("stream id");
    assert_eq!(t.store.stream_version(&stream).await.expect("version"), 2);
    // Without the id, the same command is decided again, and refused.
    assert!(matches!(
        repo.execute("idem", &SuspendTenant, metadata()).await,
        Err(CommandError::Rejected(_))
    ));

    repo.execute(
        "other",
        &CreateTenant {
            name: "Other".into(),
        },
        metadata(),
    )
    .await
    .expect("create");
    match repo.execute("other", &SuspendTenant, once).await {
        Err(CommandError::Store(Error::InvalidInput {
            field: "command id",
            reason,
        })) => {
            assert!(reason.contains("tenant-idem"), "{reason}")
        }
        other => panic!("the id of another stream's command was reused: {other:?}"),
    }
    match repo
        .execute("other", &SuspendTenant, metadata().with_command_id(""))
        .await
    {
        Err(CommandError::Store(Error::InvalidInput {
            field: "command id",
            ..
        })) => {}
        other => panic!("an empty command id was accepted: {other:?}"),
    }
}
