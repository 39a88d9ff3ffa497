//! `annals export`: the log as JSON Lines (see [`crate::export_file`]).

use std::io::{BufWriter, Write};
use std::path::Path;

use annals::LogPosition;
use annals::store::EventQuery;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::arguments::ExportArgs;
use crate::connection::Connection;
use crate::export_file::{ExportWriter, FORMAT_VERSION, Header, Totals};
use crate::failure::Failure;
use crate::output::{self, Format};

/// Events read from the store per page.
const PAGE: usize = 1000;

pub(crate) async fn run(
    connection: &Connection,
    arguments: ExportArgs,
    format: Format,
) -> Result<(), Failure> {
    let target = arguments
        .output
        .as_deref()
        .filter(|path| *path != Path::new("-"));
    if let Some(path) = target
        && path.exists()
        && !arguments.force
    {
        return Err(Failure::Usage(format!(
            "{} exists: pass --force to replace it",
            path.display()
        )));
    }
    if !arguments.no_verify {
        let report = super::verify::verify_log(connection, arguments.no_progress).await?;
        if let Some(broken) = &report.first_break {
            return Err(Failure::ChainBroken(format!(
                "nothing exported: the hash chain is broken ({broken}); `annals verify` shows it, and --no-verify exports anyway"
            )));
        }
    }
    let header = Header {
        annals_export: FORMAT_VERSION,
        source: connection.store.backend().to_owned(),
        tenant: connection.store.tenant().map(str::to_owned),
        exported_at: chrono::Utc::now(),
    };
    // Every event committed when the export starts is in it (a gap-safe
    // read may reach them only once older open transactions end).
    let committed = connection.store.count(&EventQuery::new()).await?;
    let bar = if arguments.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(committed)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "exporting {bar:40} {human_pos}/{human_len} events ({per_sec}, {eta} left)",
        )
        .map_err(|error| Failure::io("cannot draw the progress bar", error))?,
    );
    let totals = match target {
        None => {
            let out = write_log(
                connection,
                BufWriter::new(std::io::stdout()),
                &header,
                committed,
                &bar,
            )
            .await;
            let (mut out, totals) = out.map_err(stdout_failure)?;
            out.flush().map_err(stdout_failure)?;
            totals
        }
        Some(path) => {
            // Written beside the target and renamed into place when whole:
            // an interrupted or failed export drops (deletes) the temporary
            // file and leaves whatever was at `path` untouched.
            let directory = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let file = tempfile::NamedTempFile::new_in(directory).map_err(|error| {
                Failure::io(
                    format!("cannot create a file in {}", directory.display()),
                    error,
                )
            })?;
            let writing = |error: std::io::Error| {
                Failure::io(format!("cannot write {}", path.display()), error)
            };
            let (out, totals) =
                write_log(connection, BufWriter::new(file), &header, committed, &bar)
                    .await
                    .map_err(|failure| match failure {
                        ExportFailure::Io(error) => writing(error),
                        other => other.into(),
                    })?;
            let file = out
                .into_inner()
                .map_err(|error| writing(error.into_error()))?;
            file.as_file().sync_all().map_err(writing)?;
            // Without --force, a file that appeared meanwhile is kept.
            let persisted = if arguments.force {
                file.persist(path)
            } else {
                file.persist_noclobber(path)
            };
            persisted.map_err(|error| writing(error.error))?;
            totals
        }
    };
    bar.finish_and_clear();
    let summary = json!({
        "events": totals.events,
        "streams": totals.streams,
        "subject_keys": totals.subject_keys,
        "digest": totals.digest,
        "file": target.map(|path| path.display().to_string()),
    });
    // On stdout the file is the output: the summary goes to stderr.
    match (format, target) {
        (Format::Json, Some(_)) => output::json(&summary),
        (Format::Human, Some(path)) => output::line(format!(
            "exported {} to {} (digest {})",
            counts(&totals),
            path.display(),
            totals.digest
        )),
        (_, None) => {
            eprintln!(
                "annals: exported {} (digest {})",
                counts(&totals),
                totals.digest
            );
            Ok(())
        }
    }
}

/// What an export holds, for a person.
fn counts(totals: &Totals) -> String {
    format!(
        "{} events of {} streams and {} subject keys",
        totals.events, totals.streams, totals.subject_keys
    )
}

/// Header, every event in log order, the subject keys, trailer. Pages
/// through the log in its order until it has at least the `committed`
/// events there were at the start and the log has no more: the log as it
/// stood when the export caught up with it. A gap-safe read stops short of
/// events that committed after an older transaction that is still open;
/// the export waits for it, up to [`HELD_BACK_LIMIT`].
async fn write_log<W: Write>(
    connection: &Connection,
    out: W,
    header: &Header,
    committed: u64,
    bar: &ProgressBar,
) -> Result<(W, Totals), ExportFailure> {
    let mut writer = ExportWriter::start(out, header)?;
    let mut after = LogPosition::START;
    let mut written = 0_u64;
    let mut held_back_since: Option<std::time::Instant> = None;
    loop {
        let page = connection.store.read_all(after, PAGE).await?;
        for event in &page {
            writer.event(event)?;
        }
        written += page.len() as u64;
        bar.inc(page.len() as u64);
        if let Some(last) = page.last() {
            after = last.position;
            held_back_since = None;
        }
        if page.len() == PAGE {
            continue;
        }
        if written >= committed {
            break;
        }
        let since = *held_back_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > HELD_BACK_LIMIT {
            return Err(ExportFailure::HeldBack {
                written,
                committed,
                after,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The keys that open the events' personal data, and the tombstones
    // of forgotten subjects.
    let keys = connection.subject_keys();
    let mut last_key = None;
    loop {
        let page = keys.list_subject_keys(last_key.as_ref(), PAGE).await?;
        for record in &page {
            writer.subject_key(record)?;
        }
        match page.into_iter().last() {
            Some(last) => last_key = Some(last),
            None => break,
        }
    }
    Ok(writer.finish()?)
}

/// How long an export waits for an open transaction that holds back the
/// events committed after it.
const HELD_BACK_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why writing the export stopped.
#[derive(Debug, thiserror::Error)]
enum ExportFailure {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] annals::Error),
    #[error(
        "only {written} of the {committed} events committed when the export started could be read in log order (up to {after}): a transaction open for over {} s holds the rest back; try again when it ends (no file was written; output on stdout has no trailer, so no import accepts it)",
        HELD_BACK_LIMIT.as_secs()
    )]
    HeldBack {
        written: u64,
        committed: u64,
        after: LogPosition,
    },
}

impl From<ExportFailure> for Failure {
    fn from(failure: ExportFailure) -> Failure {
        match failure {
            ExportFailure::Io(error) => Failure::io("cannot write the export", error),
            ExportFailure::Store(error) => Failure::Store(error),
            held @ ExportFailure::HeldBack { .. } => Failure::Io(held.to_string()),
        }
    }
}

/// A failure writing to stdout: a reader that went away ends the command
/// quietly.
fn stdout_failure(error: impl Into<ExportFailure>) -> Failure {
    match error.into() {
        ExportFailure::Io(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            Failure::OutputClosed
        }
        other => other.into(),
    }
}
