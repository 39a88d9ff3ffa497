//! `annals status`: is the store healthy, how busy is it, and where is
//! every reader.

use annals::LogPosition;
use annals::observability::health::HealthReport;
use annals::store::{EventQuery, EventStore};
use chrono::{Duration, Utc};
use serde_json::json;

use super::readers::{ReaderKind, ReaderRow, log_head, reader_rows, readers_table};
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

/// How many dead letters the status counts before it says "at least".
const DEAD_LETTERS_COUNTED: usize = 10_000;

/// What `annals status` and the console's overview show of a store.
pub(crate) struct Figures {
    /// The same probe the application's health report makes.
    pub(crate) health: HealthReport,
    pub(crate) total: u64,
    pub(crate) last_minute: u64,
    pub(crate) last_hour: u64,
    pub(crate) head: LogPosition,
    pub(crate) readers: Vec<ReaderRow>,
    /// Dead letters, counted up to [`DEAD_LETTERS_COUNTED`].
    pub(crate) dead_letters: usize,
}

impl Figures {
    pub(crate) async fn gather(store: &dyn EventStore) -> Result<Figures, Failure> {
        let health = HealthReport::check(store, None).await;
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
        Ok(Figures {
            health,
            total,
            last_minute,
            last_hour,
            head,
            readers,
            dead_letters,
        })
    }

    /// Events per second over the last minute.
    pub(crate) fn per_second(&self) -> f64 {
        self.last_minute as f64 / 60.0
    }

    /// The dead letters counted, or "at least" that many.
    pub(crate) fn dead_letters_text(&self) -> String {
        if self.dead_letters >= DEAD_LETTERS_COUNTED {
            format!("at least {}", self.dead_letters)
        } else {
            self.dead_letters.to_string()
        }
    }
}

pub(crate) async fn run(connection: &Connection, format: Format) -> Result<(), Failure> {
    let store = connection.store.as_ref();
    let schema = connection.schema_status().await?;
    let figures = Figures::gather(store).await?;
    let Figures {
        health,
        total,
        last_minute,
        last_hour,
        head,
        readers,
        dead_letters,
    } = &figures;
    let dead_letters_text = figures.dead_letters_text();
    let per_second = figures.per_second();
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
