//! `cargo xtask schema [--check]`: regenerates `framework/migrations/` and `schema/`
//! from the registry of the workspace's types, by running the IAM example's
//! schema generator (`iam-schema`, `annals-codegen`'s command line linked
//! with the IAM domain).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

pub(crate) fn run(check: bool) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent folder")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args([
            "run",
            "--quiet",
            "-p",
            "iam-example",
            "--bin",
            "iam-schema",
            "--",
        ])
        .arg("--root")
        .arg(root)
        // Annals' own migrations live in the runtime crate, which embeds
        // them (so that it can be packaged on its own).
        .arg("--migrations")
        .arg(root.join("framework").join("migrations"));
    if check {
        command.arg("--check");
    }
    let status = command
        .status()
        .context("cannot run the schema generator")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(1) if check => bail!("generated files are stale; run `cargo xtask schema`"),
        _ => bail!("the schema generator failed ({status})"),
    }
}
