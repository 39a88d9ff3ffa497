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
    let status = command.status().context("cannot run cargo test")?;
    if !status.success() {
        drop(services);
        bail!("tests failed ({status})");
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
    drop(services);
    println!("xtask: all suites passed");
    Ok(())
}
