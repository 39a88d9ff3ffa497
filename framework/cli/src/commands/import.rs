//! `annals import`: write an export's events into this store, in one
//! transaction (see [`crate::export_file`]).

use std::io::{BufReader, Read};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::arguments::ImportArgs;
use crate::connection::Connection;
use crate::export_file::ExportReader;
use crate::failure::Failure;
use crate::output::{self, Format};

/// Events read ahead of the store.
const LINES_IN_FLIGHT: usize = 1024;

pub(crate) async fn run(
    connection: &Connection,
    arguments: ImportArgs,
    format: Format,
) -> Result<(), Failure> {
    let path = arguments.file.as_path();
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = if path == Path::new("-") {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => {
                Failure::NotFound(format!("no export file at {}", path.display()))
            }
            _ => Failure::io(format!("cannot open {}", path.display()), error),
        })?;
        let size = file.metadata().ok().map(|metadata| metadata.len());
        (Box::new(file), size)
    };
    let bar = match (arguments.no_progress, size) {
        (true, _) => ProgressBar::hidden(),
        (false, Some(size)) => ProgressBar::new(size),
        (false, None) => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "importing {bar:40} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
        )
        .map_err(|error| Failure::io("cannot draw the progress bar", error))?,
    );
    let wrapped = BufReader::new(bar.wrap_read(input));
    let reader = tokio::task::spawn_blocking(move || ExportReader::open(wrapped))
        .await
        .map_err(|error| Failure::io("the file reader stopped", error))?
        .map_err(|reason| Failure::Usage(format!("{}: {reason}", path.display())))?;
    let source = reader.header().source.clone();
    let file = path.display().to_string();
    // The file is read as the import goes, line by line, on a thread of
    // its own (a slow pipe never blocks Ctrl-C); the first bad line ends
    // the import, and the store then rolls everything back. Dropping the
    // receiver (an interrupted or failed import) stops the reader.
    let (sender, receiver) = tokio::sync::mpsc::channel(LINES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        for item in reader {
            let item = item.map_err(|reason| annals::Error::InvalidInput {
                field: "export file",
                reason: format!("{file}: {reason}"),
            });
            if sender.blocking_send(item).is_err() {
                break;
            }
        }
    });
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let report = connection
        .import_log(events)
        .await
        .map_err(|failure| match failure {
            Failure::Store(error) => Failure::Import(error),
            other => other,
        })?;
    bar.finish_and_clear();
    match format {
        Format::Json => output::json(&json!({
            "events": report.events,
            "streams": report.streams,
            "subject_keys": report.subject_keys,
            "last_position": report.last_position.map(|position| position.to_string()),
            "source": source,
        })),
        Format::Human => output::line(format!(
            "imported {} events of {} streams and {} subject keys (exported from {source}) into {}",
            report.events, report.streams, report.subject_keys, connection.description
        )),
    }
}
