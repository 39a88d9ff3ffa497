//! `#[projection]`: in-memory read models and SQL read models written in
//! the caller's transaction, fed through `annals::projection::project`.

use annals::prelude::*;
use annals::projection::project;
use annals::testing::recorded;
use annals_tests::domain::{
    RoleCounts, TenantCreated, TenantDirectory, TenantRenamed, TenantSuspended, UserEvent,
};
use sqlx::Connection;

#[tokio::test]
async fn in_memory_projection_handles_only_its_events() {
    let events = vec![
        recorded(
            &TenantCreated {
                name: "Acme".into(),
            },
            1,
            Metadata::new(),
        ),
        recorded(&UserEvent::Deactivated, 2, Metadata::new()),
        recorded(
            &TenantRenamed {
                name: "Acme Corp".into(),
                reason: "x".into(),
            },
            3,
            Metadata::new(),
        ),
        recorded(&TenantSuspended, 4, Metadata::new()),
    ];
    let mut directory = TenantDirectory::default();
    let handled = project(&mut directory, &events, &mut ())
        .await
        .expect("project");
    assert_eq!(handled, 3, "the user event is not the directory's");
    assert_eq!(directory.names["test-1"], "Acme Corp");
    assert!(directory.suspended.contains("test-1"));
    assert_eq!(
        <TenantDirectory as Projection>::NAME,
        "test_tenant_directory"
    );
    assert_eq!(<TenantDirectory as Projection>::VERSION, 3);
}

#[tokio::test]
async fn sql_projection_writes_in_the_callers_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("read.db").display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    sqlx::query("CREATE TABLE role_counts (role TEXT PRIMARY KEY, users INTEGER NOT NULL)")
        .execute(&mut connection)
        .await
        .expect("create");
    let events: Vec<RecordedEvent> = ["admin", "auditor", "admin"]
        .iter()
        .enumerate()
        .map(|(n, role)| {
            recorded(
                &UserEvent::RoleAssigned {
                    role: (*role).into(),
                },
                n as u64 + 1,
                Metadata::new(),
            )
        })
        .collect();

    // Rolled back: nothing stays.
    let mut tx = connection.begin().await.expect("begin");
    project(&mut RoleCounts, &events, &mut *tx)
        .await
        .expect("project");
    tx.rollback().await.expect("rollback");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM role_counts")
        .fetch_one(&mut connection)
        .await
        .expect("count");
    assert_eq!(count, 0);

    // Committed: the read model holds the counts.
    let mut tx = connection.begin().await.expect("begin");
    project(&mut RoleCounts, &events, &mut *tx)
        .await
        .expect("project");
    tx.commit().await.expect("commit");
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&mut connection)
            .await
            .expect("rows");
    assert_eq!(rows, [("admin".to_owned(), 2), ("auditor".to_owned(), 1)]);

    // A failing write surfaces as a projection error naming the event.
    sqlx::query("DROP TABLE role_counts")
        .execute(&mut connection)
        .await
        .expect("drop");
    match project(&mut RoleCounts, &events, &mut connection).await {
        Err(
            error @ Error::Projection {
                projection: "test_role_counts",
                version: 1,
                ..
            },
        ) => {
            assert!(
                error.to_string().contains("test.user.role_assigned"),
                "{error}"
            );
        }
        other => panic!("expected a projection error, got {other:?}"),
    }
}

/// `#[projection]` tells the runner whether a handler reads the envelope:
/// one that takes `&RecordedEvent` needs the metadata, one that takes only
/// the typed event is read without it.
#[test]
fn a_projection_reads_metadata_only_if_a_handler_takes_the_envelope() {
    use annals::projection::Projection;
    assert!(<annals_tests::domain::TenantDirectory as Projection>::reads_metadata());
    assert!(!<annals_tests::domain::RoleCounts as Projection>::reads_metadata());
}
