//! `annals restamp`: re-stamp a PostgreSQL log restored from another
//! cluster (see `PostgresStoreBuilder::restamp_restored_log`).

use annals::store::redact_url;
use serde_json::json;

use crate::arguments::StoreOptions;
use crate::connection::{database_url, postgres_builder};
use crate::failure::Failure;
use crate::output::{self, Format};

pub(crate) async fn run(options: &StoreOptions, format: Format) -> Result<(), Failure> {
    let url = database_url(options)?;
    if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
        return Err(Failure::Usage(format!(
            "restamp repairs a PostgreSQL log restored from another cluster; {} is not PostgreSQL \
             (a SQLite file keeps its own commit numbers)",
            redact_url(url)
        )));
    }
    if options.tenant.is_some() {
        return Err(Failure::Usage(
            "restamp covers every tenant's events: run it without --tenant, as the tables' owner"
                .to_owned(),
        ));
    }
    let (_, report) = postgres_builder(url, options)?
        .restamp_restored_log()
        .await?;
    match format {
        Format::Json => output::json(&json!({
            "events": report.events,
            "commits": report.commits,
            "checkpoints": report.checkpoints,
            "ids_advanced": report.ids_advanced,
        })),
        Format::Human if report.events == 0 => {
            output::line("nothing to re-stamp: the log's transaction ids are this cluster's")
        }
        Format::Human => output::line(format!(
            "re-stamped {} events with {} commit ids of this cluster ({} checkpoints moved, \
             {} transaction ids advanced first); order, positions and the hash chain kept",
            report.events, report.commits, report.checkpoints, report.ids_advanced
        )),
    }
}
