//! Snapshot tests of generated DDL: each layout's migrations and the
//! read-model DDL of a sample projection, compared with reviewed files in
//! `tests/snapshots/`. After an intended change, regenerate them with
//! `UPDATE_SNAPSHOTS=1 cargo test -p annals-codegen --test ddl_snapshots`
//! and review the diff. (The default layout is `framework/migrations/` itself, which
//! `cargo xtask schema --check` compares.)

use std::path::PathBuf;

use annals::registry;
use annals_codegen::{Dialect, Partitioning, StoreLayout, read_model_ddl, store_migrations};

#[annals::event(name = "snapshot.permission.granted")]
struct PermissionGranted {
    user_id: String,
    permission: String,
}

#[derive(Default)]
struct UserPermissions;

#[annals::projection(
    name = "user_permissions",
    version = 3,
    table(
        name = "user_permissions_v3",
        columns(
            tenant_id = "text",
            user_id = "uuid",
            permission = "text",
            granted_at = "timestamp",
            revoked = "boolean",
            grants = "integer",
            weight = "real",
            detail = "json?",
            signature = "bytes?",
        ),
        primary_key(tenant_id, user_id, permission),
        index(user_id),
        index(tenant_id, permission),
    )
)]
impl UserPermissions {
    fn granted(&mut self, _event: &PermissionGranted) {}
}

fn assert_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; create it with UPDATE_SNAPSHOTS=1 cargo test -p annals-codegen --test ddl_snapshots",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the generated DDL; if the change is intended, run \
         UPDATE_SNAPSHOTS=1 cargo test -p annals-codegen --test ddl_snapshots and review the diff.\n\
         --- generated ---\n{actual}",
        path.display()
    );
}

fn all_migrations(dialect: Dialect, layout: &StoreLayout) -> String {
    store_migrations::migrations(dialect, layout)
        .into_iter()
        .map(|migration| {
            format!(
                "-- ===== {} =====\n{}",
                migration.file_name(),
                migration.sql
            )
        })
        .collect()
}

#[test]
fn postgres_partitioned_by_stream_in_a_schema_with_a_prefix() {
    let layout = StoreLayout::default()
        .schema("iam")
        .and_then(|layout| layout.table_prefix("iam_"))
        .expect("valid layout")
        .partitioning(Partitioning::ByStreamHash { partitions: 4 });
    assert_snapshot(
        "postgres_stream_hash.sql",
        &all_migrations(Dialect::Postgres, &layout),
    );
}

#[test]
fn postgres_partitioned_by_tenant() {
    let layout = StoreLayout::default().partitioning(Partitioning::ByTenant { partitions: 2 });
    assert_snapshot(
        "postgres_tenant.sql",
        &all_migrations(Dialect::Postgres, &layout),
    );
}

#[test]
fn sqlite_with_a_prefix() {
    let layout = StoreLayout::default()
        .table_prefix("iam_")
        .expect("valid prefix");
    assert_snapshot(
        "sqlite_prefixed.sql",
        &all_migrations(Dialect::Sqlite, &layout),
    );
}

#[test]
fn read_model_tables_of_a_projection() {
    let projection = registry::projections()
        .find(|projection| projection.name == "user_permissions")
        .expect("registered");
    assert_snapshot(
        "read_model_postgres.sql",
        &read_model_ddl::for_projection(Dialect::Postgres, projection),
    );
    assert_snapshot(
        "read_model_sqlite.sql",
        &read_model_ddl::for_projection(Dialect::Sqlite, projection),
    );
}
