//! `annals status`: is the store healthy, how busy is it, and where is
//! every reader.

use annals::observability::health::HealthReport;
use annals::store::EventQuery;
use chrono::{Duration, Utc};
use serde_json::json;

use super::readers::{ReaderKind, ReaderRow, log_head, reader_rows, readers_table};
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

/// How many dead letters the status counts before it says "at least".
const DEAD_LETTERS_COUNTED: usize = 10_000;

pub(crate) async fn run(connection: &Connection, format: Format) -> Result<(), Failure> {
    let store = connection.store.as_ref();
    // The same probe the application's health report makes, with its
    // round trip.
    let health = HealthReport::check(store, None).await;
    let schema = connection.schema_status().await?;
    let now = Utc::now();
    let total = store.count(&EventQuery::new()).await?;
    let last_minute = store
        .count(&EventQuery::new().recorded_from(now - Duration::minutes(1)))
        .await?;
    let last_hour = store
        .count(&EventQuery::new().recorded_from(now - Duration::hours(1)))
        .await?;
    let head = log_head(store).await?;
    let readers = reader_rows(store, head).await?;
    let dead_letters = store.dead_letters().list(DEAD_LETTERS_COUNTED).await?.len();
    let dead_letters_text = if dead_letters >= DEAD_LETTERS_COUNTED {
        format!("at least {dead_letters}")
    } else {
        dead_letters.to_string()
    };
    let per_second = last_minute as f64 / 60.0;
    match format {
        Format::Json => output::json(&json!({
            "healthy": health.is_healthy(),
            "store": {
                "backend": store.backend(),
                "check": health.store.to_string(),
                "location": connection.description,
                "schema_version": schema.version(),
            },
            "events": {
                "total": total,
                "last_minute": last_minute,
                "last_hour": last_hour,
                "per_second": per_second,
                "head": head.to_string(),
            },
            "readers": readers.iter().map(ReaderRow::to_json).collect::<Vec<_>>(),
            "dead_letters": dead_letters,
        })),
        Format::Human => {
            output::line(format!(
                "store          {}: {}",
                connection.description, health.store
            ))?;
            output::line(format!(
                "schema         version {} (current)",
                schema.version()
            ))?;
            output::line(format!(
                "events         {total} in all, {last_hour} in the last hour, {last_minute} in the last minute ({per_second:.1}/s)"
            ))?;
            output::line(format!("log head       {head}"))?;
            output::line(format!("dead letters   {dead_letters_text}"))?;
            for kind in [ReaderKind::Projection, ReaderKind::Subscription] {
                let rows: Vec<&ReaderRow> = readers.iter().filter(|row| row.kind == kind).collect();
                let title = match kind {
                    ReaderKind::Projection => "projections",
                    ReaderKind::Subscription => "subscriptions",
                };
                if rows.is_empty() {
                    output::line(format!("{title:<14} none"))?;
                } else {
                    output::line(title)?;
                    output::line(readers_table(rows))?;
                }
            }
            Ok(())
        }
    }
}
