//! The command line of a schema generator binary. A workspace links its
//! domain crates into a small binary whose `main` calls [`main`], so the
//! registry it reads holds exactly the workspace's types:
//!
//! ```no_run
//! // src/bin/schema.rs of the crate that links the domain
//! fn main() -> std::process::ExitCode {
//!     // Reference the domain crate so its registrations are linked in.
//!     // my_domain::link();
//!     annals_codegen::cli::main()
//! }
//! ```
//!
//! `cargo xtask schema` in the Annals workspace runs such a binary.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::dialect::Dialect;
use crate::error::CodegenError;
use crate::layout::{Partitioning, StoreLayout};
use crate::workspace::{self, Mode, Outcome};

const USAGE: &str = "\
Generates Annals' SQL migrations, JSON Schemas, read-model DDL and the event catalog.

Usage:
  schema [--root DIR] [--migrations DIR] [--check]
      Writes migrations/ and schema/ under DIR (default: the current folder)
      for the types registered in this program; --migrations puts the
      migrations elsewhere. With --check, changes nothing and exits with
      status 1, naming each stale file, if any file is not what would be
      generated.

  schema migrations --dialect postgres|sqlite --out DIR
         [--schema NAME] [--table-prefix PREFIX] [--partition-by none|tenant:N|stream:N] [--check]
      Writes the migrations of Annals' own tables for a custom layout into
      DIR, to be applied with `psql -1 -f` (PostgreSQL) or `sqlite3` before
      the application connects.

  --help  Shows this text.
";

/// Parses `std::env::args`, runs, prints the outcome, and returns the exit
/// status: 0 on success, 1 when `--check` finds stale files, 2 on errors.
pub fn main() -> ExitCode {
    match run(std::env::args().skip(1)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// [`main`] with explicit arguments (without the program name).
pub fn run(args: impl IntoIterator<Item = String>) -> Result<ExitCode, CodegenError> {
    let args: Vec<String> = args.into_iter().collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut options = Options::default();
    let mut rest = args.iter();
    let mut custom_migrations = false;
    while let Some(arg) = rest.next() {
        let mut value = |name: &'static str| {
            rest.next()
                .cloned()
                .ok_or_else(|| CodegenError::InvalidOption {
                    option: name,
                    reason: "needs a value".to_owned(),
                })
        };
        match arg.as_str() {
            "migrations" => custom_migrations = true,
            "--check" => options.check = true,
            "--root" => options.root = PathBuf::from(value("--root")?),
            "--migrations" => {
                options.migrations = Some(PathBuf::from(value("--migrations")?));
            }
            "--out" => options.out = Some(PathBuf::from(value("--out")?)),
            "--dialect" => {
                options.dialect = Some(match value("--dialect")?.as_str() {
                    "postgres" => Dialect::Postgres,
                    "sqlite" => Dialect::Sqlite,
                    other => {
                        return Err(CodegenError::InvalidOption {
                            option: "--dialect",
                            reason: format!("{other:?} is not `postgres` or `sqlite`"),
                        });
                    }
                });
            }
            "--schema" => options.layout = options.layout.schema(&value("--schema")?)?,
            "--table-prefix" => {
                options.layout = options.layout.table_prefix(&value("--table-prefix")?)?;
            }
            "--partition-by" => {
                let partitioning: Partitioning = value("--partition-by")?.parse()?;
                options.layout = options.layout.partitioning(partitioning);
            }
            other => {
                return Err(CodegenError::InvalidOption {
                    option: "argument",
                    reason: format!("unknown argument {other:?}; see --help"),
                });
            }
        }
    }
    let mode = if options.check {
        Mode::Check
    } else {
        Mode::Write
    };
    let outcome = if custom_migrations {
        let (Some(dialect), Some(out)) = (options.dialect, options.out.clone()) else {
            return Err(CodegenError::InvalidOption {
                option: "migrations",
                reason: "needs --dialect and --out".to_owned(),
            });
        };
        let mut outcome = Outcome::default();
        workspace::migrations_into(&out, &out, dialect, &options.layout, mode, &mut outcome)?;
        outcome
    } else {
        if !options.layout.is_default() || options.out.is_some() || options.dialect.is_some() {
            return Err(CodegenError::InvalidOption {
                option: "argument",
                reason: "--dialect, --out, --schema, --table-prefix and --partition-by belong to the `migrations` command".to_owned(),
            });
        }
        let migrations = options
            .migrations
            .clone()
            .unwrap_or_else(|| options.root.join("migrations"));
        workspace::run_with_migrations_in(&options.root, &migrations, mode)?
    };
    Ok(report(&outcome, mode))
}

fn report(outcome: &Outcome, mode: Mode) -> ExitCode {
    match mode {
        Mode::Write => {
            for file in &outcome.stale {
                println!("wrote {file}");
            }
            println!(
                "{} files written or removed, {} already current",
                outcome.stale.len(),
                outcome.current
            );
            ExitCode::SUCCESS
        }
        Mode::Check if outcome.stale.is_empty() => {
            println!("all {} generated files are current", outcome.current);
            ExitCode::SUCCESS
        }
        Mode::Check => {
            for file in &outcome.stale {
                eprintln!("stale: {file}");
            }
            eprintln!(
                "{} generated files are stale; run `cargo xtask schema` to regenerate them",
                outcome.stale.len()
            );
            ExitCode::from(1)
        }
    }
}

#[derive(Default)]
struct Options {
    check: bool,
    root: PathBuf,
    migrations: Option<PathBuf>,
    out: Option<PathBuf>,
    dialect: Option<Dialect>,
    layout: StoreLayout,
}
