//! `annals verify`: recompute the hash chain of the whole log (or of one
//! stream) and report the first broken link.

use annals::hash_chain::ChainReport;
use annals::store::EventQuery;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::arguments::VerifyArgs;
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

/// The whole log's hash chain (this handle's tenant's), with a progress
/// bar on stderr unless `quiet`.
pub(super) async fn verify_log(
    connection: &Connection,
    quiet: bool,
) -> Result<ChainReport, Failure> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(connection.store.count(&EventQuery::new()).await?)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "verifying {bar:40} {human_pos}/{human_len} events ({per_sec}, {eta} left)",
        )
        .map_err(|error| Failure::io("cannot draw the progress bar", error))?,
    );
    let report = connection
        .verify_log_with_progress(|checked| bar.set_position(checked))
        .await?;
    bar.finish_and_clear();
    Ok(report)
}

pub(crate) async fn run(
    connection: &Connection,
    arguments: VerifyArgs,
    format: Format,
) -> Result<(), Failure> {
    let store = connection.store.as_ref();
    let report = match &arguments.stream {
        Some(stream) => {
            let (id, _) = super::streams::existing_stream(connection, stream).await?;
            store.verify_stream(&id).await?
        }
        None => verify_log(connection, arguments.no_progress || format == Format::Json).await?,
    };
    let streams = report.heads.len();
    match format {
        Format::Json => output::json(&json!({
            "intact": report.is_intact(),
            "events_checked": report.events_checked,
            "streams_checked": streams,
            "first_break": report.first_break.as_ref().map(|broken| json!({
                "stream_id": broken.stream_id,
                "tenant_id": broken.tenant_id,
                "version": broken.version,
                "reason": broken.reason.to_string(),
                "message": broken.to_string(),
            })),
        }))?,
        Format::Human => output::line(format!(
            "checked {} events in {streams} streams",
            report.events_checked
        ))?,
    }
    match &report.first_break {
        None => {
            if format == Format::Human {
                output::line("the hash chain is intact")?;
            }
            Ok(())
        }
        Some(broken) => Err(Failure::ChainBroken(format!(
            "the hash chain is broken: {broken}"
        ))),
    }
}
