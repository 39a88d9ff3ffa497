//! `workspace::run` and the command line on a scratch workspace: writing,
//! checking, the append-only rule for migrations, and which JSON Schemas are
//! kept or removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use annals_codegen::workspace::{self, Mode, Staleness};
use annals_codegen::{CodegenError, cli};

/// Version 2 reads version 1 through an upcast: the v1 schema file, once
/// written, is history and stays.
#[annals::event(name = "ws.user.renamed", version = 2, upcast(from = 1, json = from_v1))]
struct UserRenamed {
    name: String,
}

fn from_v1(value: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "name": value["new_name"] })
}

fn check(root: &Path) -> Vec<(PathBuf, Staleness)> {
    workspace::run(root, Mode::Check)
        .expect("check runs")
        .stale
        .into_iter()
        .map(|file| (file.path, file.staleness))
        .collect()
}

#[test]
fn a_written_workspace_checks_clean_and_edits_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let written = workspace::run(root, Mode::Write).expect("write");
    assert!(written.stale.len() >= 9 + 4, "{:?}", written.stale);
    assert!(
        root.join("migrations/postgres/0001_event_log.sql")
            .is_file()
    );
    assert!(root.join("schema/events/ws.user.renamed.v2.json").is_file());
    assert_eq!(check(root), []);
    assert_eq!(cli::run(args(root, true)).ok(), Some(ExitCode::SUCCESS));

    fs::write(root.join("schema/catalog.md"), "hand-edited").expect("edit");
    fs::remove_file(root.join("schema/read_models/sqlite.sql")).expect("remove");
    assert_eq!(
        check(root),
        [
            (PathBuf::from("schema/catalog.md"), Staleness::Outdated),
            (
                PathBuf::from("schema/read_models/sqlite.sql"),
                Staleness::Missing
            ),
        ]
    );
    assert_eq!(cli::run(args(root, true)).ok(), Some(ExitCode::from(1)));
    workspace::run(root, Mode::Write).expect("rewrite");
    assert_eq!(check(root), []);
}

#[test]
fn migrations_are_never_rewritten_and_unknown_ones_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    workspace::run(root, Mode::Write).expect("write");
    let first = root.join("migrations/sqlite/0001_event_log.sql");
    let original = fs::read_to_string(&first).expect("read");
    fs::write(&first, original.replace("NOT NULL", "NULL")).expect("edit");
    for mode in [Mode::Check, Mode::Write] {
        match workspace::run(root, mode) {
            Err(CodegenError::EditedMigration { path, version: 1 }) => assert_eq!(path, first),
            other => panic!("expected EditedMigration, got {other:?}"),
        }
    }
    assert_ne!(
        fs::read_to_string(&first).expect("read"),
        original,
        "never rewritten"
    );
    fs::write(&first, &original).expect("restore");

    let stray = root.join("migrations/postgres/0099_hand_written.sql");
    fs::write(&stray, "DROP TABLE annals_events;").expect("stray");
    match workspace::run(root, Mode::Write) {
        Err(error @ CodegenError::UnknownMigration { .. }) => {
            assert!(
                error.to_string().contains("0099_hand_written.sql"),
                "{error}"
            );
        }
        other => panic!("expected UnknownMigration, got {other:?}"),
    }
}

#[test]
fn schemas_of_versions_still_read_are_kept_and_others_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    workspace::run(root, Mode::Write).expect("write");
    let events = root.join("schema/events");
    fs::write(events.join("ws.user.renamed.v1.json"), "{}\n").expect("old version");
    fs::write(events.join("ws.user.deleted.v1.json"), "{}\n").expect("gone event");
    assert_eq!(
        check(root),
        [(
            PathBuf::from("schema/events/ws.user.deleted.v1.json"),
            Staleness::Orphaned
        )]
    );
    workspace::run(root, Mode::Write).expect("write");
    assert!(
        events.join("ws.user.renamed.v1.json").is_file(),
        "upcast source kept"
    );
    assert!(
        !events.join("ws.user.deleted.v1.json").exists(),
        "orphan removed"
    );
}

#[test]
fn custom_layouts_are_written_by_the_migrations_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("pg");
    let code = cli::run(
        ["migrations", "--dialect", "postgres", "--out"]
            .into_iter()
            .map(String::from)
            .chain([out.display().to_string()])
            .chain(["--schema", "iam", "--partition-by", "tenant:8"].map(String::from)),
    )
    .expect("runs");
    assert_eq!(code, ExitCode::SUCCESS);
    let first = fs::read_to_string(out.join("0001_event_log.sql")).expect("written");
    assert!(first.contains("PARTITION BY HASH (tenant_id)"));
    assert!(first.contains("INSERT INTO iam.annals_schema_history"));

    let bad = cli::run(["migrations", "--dialect", "oracle"].map(String::from));
    assert_eq!(
        bad.err().map(|error| error.to_string()).as_deref(),
        Some("invalid --dialect: \"oracle\" is not `postgres` or `sqlite`")
    );
}

fn args(root: &Path, check: bool) -> Vec<String> {
    let mut args = vec!["--root".to_owned(), root.display().to_string()];
    if check {
        args.push("--check".to_owned());
    }
    args
}

/// `--migrations` puts Annals' own migrations in a folder of their own (the
/// Annals workspace keeps them inside the runtime crate); the schemas stay
/// under the root.
#[test]
fn the_migrations_folder_can_be_put_elsewhere() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let migrations = root.join("runtime").join("migrations");
    let code = cli::run(
        ["--root".to_owned(), root.display().to_string()]
            .into_iter()
            .chain(["--migrations".to_owned(), migrations.display().to_string()]),
    )
    .expect("runs");
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(migrations.join("postgres/0001_event_log.sql").is_file());
    assert!(migrations.join("sqlite/0001_event_log.sql").is_file());
    assert!(!root.join("migrations").exists());
    assert!(root.join("schema/catalog.md").is_file());
}
