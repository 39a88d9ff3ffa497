//! `cargo xtask test`: every suite of the workspace against real servers.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::services::{DATABASE_URL_VAR, REDIS_URL_VAR, Services};

pub(crate) fn run(passthrough: &[&str]) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("annals-test-{}", std::process::id()));
    // Stopped on drop: on success, on test failure and on early error alike.
    let services = Services::start(&dir)?;
    crate::services::ensure_browser()?;
    println!("xtask: PostgreSQL at {}", services.database_url());
    println!("xtask: Redis at {}", services.redis_url());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(passthrough)
        .env(DATABASE_URL_VAR, services.database_url())
        .env(REDIS_URL_VAR, services.redis_url());
    println!("xtask: running {command:?}");
    // Where the deployment test writes its figures (its CARGO_TARGET_TMPDIR).
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        },
        std::path::PathBuf::from,
    );
    let figures = target.join("tmp").join("deployment-figures.txt");
    let _ = std::fs::remove_file(&figures);
    let status = command.status().context("cannot run cargo test")?;
    if !status.success() {
        drop(services);
        bail!("tests failed ({status})");
    }
    // The deployment test's figures (examples/iam-example/tests/deployment.rs).
    match std::fs::read_to_string(&figures) {
        Ok(text) => print!("xtask: {text}"),
        // Arguments may have filtered it out; a whole run must include it.
        Err(_) if !passthrough.is_empty() => {}
        Err(_) => bail!(
            "the deployment test left no figures in {}: did it run?",
            figures.display()
        ),
    }

    // The main job, end to end at full size: on a fresh SQLite file, and on
    // the PostgreSQL server with the Redis cache.
    let sqlite = format!("sqlite:{}", dir.join("iam-example.db").display());
    let runs = [
        vec!["--database-url".to_owned(), sqlite],
        vec![
            "--database-url".to_owned(),
            services.database_url(),
            "--redis-url".to_owned(),
            services.redis_url(),
        ],
    ];
    for arguments in runs {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut example = Command::new(cargo);
        example
            .args(["run", "--quiet", "-p", "iam-example", "--", "--no-progress"])
            .args(&arguments);
        println!(
            "xtask: running the IAM example with {}",
            arguments.join(" ")
        );
        let status = example.status().context("cannot run the IAM example")?;
        if !status.success() {
            drop(services);
            bail!(
                "the IAM example failed with {} ({status})",
                arguments.join(" ")
            );
        }
    }
    check_the_tool_on_the_example(&dir.join("iam-example.db"))?;
    drop(services);
    println!("xtask: all suites passed");
    Ok(())
}

/// The operations tool against the SQLite file the example just wrote: its
/// status shows the example's projections and handlers' subscription, all
/// caught up, and its streams list; what the README promises after
/// `cargo run -p iam-example`. Then exports it, imports the export into a
/// new file and exports that: the same events, subject keys and digest.
fn check_the_tool_on_the_example(file: &std::path::Path) -> Result<()> {
    let url = format!("sqlite:{}", file.display());
    let annals = |arguments: &[&str]| annals_on(&url, arguments);
    println!("xtask: the annals tool on the example's SQLite file");
    let status = annals(&["status"])?;
    let total = status["events"]["total"].as_u64().unwrap_or(0);
    let readers: Vec<(String, u64)> = status["readers"]
        .as_array()
        .map(|readers| {
            readers
                .iter()
                .map(|reader| {
                    (
                        reader["name"].as_str().unwrap_or("").to_owned(),
                        reader["lag_events"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<&str> = readers.iter().map(|(name, _)| name.as_str()).collect();
    for wanted in [
        "iam-handlers",
        "projection:iam_audit_trail:v1",
        "projection:iam_tenant_directory:v1",
        "projection:iam_user_permissions:v1",
    ] {
        if !names.contains(&wanted) {
            bail!("annals status does not show {wanted} on the example's file: {names:?}");
        }
    }
    if total < 100_000 || readers.iter().any(|(_, lag)| *lag != 0) {
        bail!("annals status on the example's file: {total} events, readers {readers:?}");
    }
    let streams = annals(&["streams", "list", "--prefix", "user-", "--limit", "5"])?;
    if streams.as_array().map_or(0, Vec::len) != 5 {
        bail!("annals streams list shows no user streams of the example: {streams}");
    }
    println!(
        "xtask: annals status shows {total} events and {} readers, all caught up",
        readers.len()
    );
    let directory = file.parent().unwrap_or(std::path::Path::new("."));
    round_trip_the_example(&url, directory)
}

/// Exports the example's file, imports the export into a new file, and
/// exports that: the copy holds the same events and subject keys, its own
/// chain holds, and its export has the same digest.
fn round_trip_the_example(url: &str, directory: &std::path::Path) -> Result<()> {
    let export = directory.join("iam-example.jsonl");
    let copy = directory.join("iam-example-copy.db");
    let copy_url = format!("sqlite:{}", copy.display());
    let export_path = export.display().to_string();
    let started = std::time::Instant::now();
    let original = annals_on(
        url,
        &["export", "--force", "--no-progress", "-o", &export_path],
    )?;
    let exported_in = started.elapsed();
    annals_on(&copy_url, &["migrate", "apply"])?;
    let started = std::time::Instant::now();
    let imported = annals_on(&copy_url, &["import", "--no-progress", &export_path])?;
    let imported_in = started.elapsed();
    let again = directory
        .join("iam-example-copy.jsonl")
        .display()
        .to_string();
    let copied = annals_on(
        &copy_url,
        &["export", "--force", "--no-progress", "-o", &again],
    )?;
    if imported["events"] != original["events"]
        || imported["subject_keys"] != original["subject_keys"]
        || copied["digest"] != original["digest"]
        || copied["events"] != original["events"]
    {
        bail!(
            "the example's log did not survive export and import: exported {original}, imported {imported}, exported again {copied}"
        );
    }
    println!(
        "xtask: annals export ({:.1} s) and import ({:.1} s) of the example: {} events and {} subject keys, the same digest after the round trip",
        exported_in.as_secs_f64(),
        imported_in.as_secs_f64(),
        original["events"],
        original["subject_keys"]
    );
    Ok(())
}

/// Runs `annals --database-url URL --json ARGUMENTS...` from the workspace
/// and parses its JSON.
fn annals_on(url: &str, arguments: &[&str]) -> Result<serde_json::Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "-p",
            "annals-cli",
            "--",
            "--database-url",
            url,
            "--json",
        ])
        .args(arguments)
        .output()
        .context("cannot run the annals tool")?;
    if !output.status.success() {
        bail!(
            "annals {} failed on {url}: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).context("the annals tool printed no JSON")
}
