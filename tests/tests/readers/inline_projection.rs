//! Inline projections run inside the append's transaction: the read model
//! changes exactly when the events are stored, and a projection failure
//! aborts the append.

use annals::prelude::*;
use annals::store::StreamAppend;
use annals_tests::backends::fresh_postgres_store;
use annals_tests::domain::{FlakyPostgresRoleCounts, FlakySqliteRoleCounts, UserEvent};

fn batch(stream: &str, roles: &[&str]) -> Vec<StreamAppend> {
    let events = roles
        .iter()
        .map(|role| {
            NewEvent::from_event(&UserEvent::RoleAssigned {
                role: (*role).into(),
            })
            .expect("encode")
        })
        .collect();
    vec![StreamAppend::new(
        StreamId::new(stream).expect("stream id"),
        ExpectedVersion::Any,
        events,
    )]
}

#[tokio::test]
async fn sqlite_inline_projection_commits_or_aborts_with_the_append() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .expect("open");
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(store.pool())
        .await
        .expect("table");
    let counts = || async {
        sqlx::query_as::<_, (String, i64)>("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(store.pool())
            .await
            .expect("counts")
    };

    let results = store
        .append_inline(
            batch("user-i1", &["admin", "auditor"]),
            &mut FlakySqliteRoleCounts::default(),
        )
        .await
        .expect("append");
    assert_eq!(results[0].last_version, 2);
    assert_eq!(
        counts().await,
        [("admin".into(), 1), ("auditor".into(), 1)],
        "visible as soon as the append returns"
    );

    let failed = store
        .append_inline(
            batch("user-i2", &["admin", "admin"]),
            &mut FlakySqliteRoleCounts::failing_once_on(2),
        )
        .await;
    assert!(
        matches!(failed, Err(Error::Projection { .. })),
        "{failed:?}"
    );
    let stream = StreamId::new("user-i2").expect("stream id");
    assert_eq!(
        store.stream_version(&stream).await.expect("version"),
        0,
        "the events were not stored"
    );
    assert_eq!(
        counts().await,
        [("admin".into(), 1), ("auditor".into(), 1)],
        "nor was the read model changed"
    );
}

#[tokio::test]
async fn postgres_inline_projection_commits_or_aborts_with_the_append() {
    let store = fresh_postgres_store().await;
    let pool = store.pool().clone();
    sqlx::query("CREATE TABLE role_counts (role text PRIMARY KEY, users bigint NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    let counts = || async {
        sqlx::query_as::<_, (String, i64)>("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pool)
            .await
            .expect("counts")
    };
    store
        .append_inline(
            batch("user-i1", &["admin", "admin", "auditor"]),
            &mut FlakyPostgresRoleCounts::default(),
        )
        .await
        .expect("append");
    assert_eq!(counts().await, [("admin".into(), 2), ("auditor".into(), 1)]);

    let failed = store
        .append_inline(
            batch("user-i2", &["auditor"]),
            &mut FlakyPostgresRoleCounts::failing_once_on(1),
        )
        .await;
    assert!(
        matches!(failed, Err(Error::Projection { .. })),
        "{failed:?}"
    );
    let stream = StreamId::new("user-i2").expect("stream id");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
    assert_eq!(counts().await, [("admin".into(), 2), ("auditor".into(), 1)]);

    // A conflict is still a conflict, and leaves the read model alone.
    let conflicting = vec![StreamAppend::new(
        StreamId::new("user-i1").expect("stream id"),
        ExpectedVersion::Exact(1),
        vec![
            NewEvent::from_event(&UserEvent::RoleAssigned {
                role: "admin".into(),
            })
            .expect("encode"),
        ],
    )];
    let conflict = store
        .append_inline(conflicting, &mut FlakyPostgresRoleCounts::default())
        .await;
    assert!(
        matches!(conflict, Err(Error::VersionConflict { actual: 3, .. })),
        "{conflict:?}"
    );
    assert_eq!(counts().await, [("admin".into(), 2), ("auditor".into(), 1)]);
}
