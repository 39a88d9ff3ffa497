//! `annals`: see and act on an Annals event store from a terminal.
//!
//! Works on a SQLite file and on PostgreSQL (`--database-url` or
//! `DATABASE_URL`). Human tables by default, `--json` for scripts. The exit
//! code says what happened (see [`failure::Failure::exit_code`]):
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | the operation failed (database unreachable, I/O error, ...) |
//! | 2 | bad usage or input (unknown option, malformed value or file) |
//! | 3 | not found (stream, event, dead letter, reader, SQLite file) |
//! | 4 | `verify` found a broken hash chain |
//! | 5 | the database's schema is missing, behind or ahead of this build |
//! | 130 | interrupted (Ctrl-C); nothing was left half-done |

mod arguments;
mod commands;
mod connection;
mod console;
mod export_file;
mod failure;
mod output;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::failure::Failure;

fn main() -> ExitCode {
    let cli = match arguments::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("annals: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = commands::run(cli) => outcome,
            _ = tokio::signal::ctrl_c() => Err(Failure::Interrupted),
        }
    });
    // Whatever was in flight is dropped with the runtime: every change is
    // one transaction, so it either committed or left nothing behind.
    runtime.shutdown_background();
    match outcome {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("annals: {}", failure.one_line());
            ExitCode::from(failure.exit_code())
        }
    }
}

/// `--help` and `--version` print and succeed; any other parse error is
/// one line and exit code 2, like every other bad input.
fn usage_error(error: &clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = error.render().to_string();
    let first = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("annals: {first} (see `annals --help`)");
    ExitCode::from(2)
}
