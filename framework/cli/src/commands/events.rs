//! `annals events` (a query, or `--follow` tailing the log) and
//! `annals event <id>`.

use std::time::Duration;

use annals::store::{EventQuery, LogFilter};
use serde_json::json;
use uuid::Uuid;

use super::readers::log_head;
use crate::arguments::EventsArgs;
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

/// How long a follower waits for a wake-up before reading anyway (another
/// process's SQLite appends send none).
const FOLLOW_POLL: Duration = Duration::from_millis(250);

pub(crate) async fn run(
    connection: &Connection,
    arguments: EventsArgs,
    format: Format,
) -> Result<(), Failure> {
    if arguments.follow {
        return follow(connection, arguments, format).await;
    }
    let mut query = EventQuery::new().limit(arguments.limit);
    for event_type in arguments.event_types {
        query = query.event_type(event_type);
    }
    if let Some(since) = arguments.since {
        query = query.recorded_from(since);
    }
    if let Some(until) = arguments.until {
        query = query.recorded_until(until);
    }
    if let Some(id) = arguments.correlation_id {
        query = query.correlation_id(id);
    }
    if let Some(key) = &arguments.correlation_key {
        query = query.correlation_key(key);
    }
    if let Some(tenant) = connection.store.tenant() {
        query = query.tenant(tenant);
    }
    for tag in arguments.tags {
        query = query.tag(tag);
    }
    let page = connection.store.query(&query).await?;
    match format {
        Format::Json => output::json(&json!(
            page.events
                .iter()
                .map(output::event_json)
                .collect::<Result<Vec<_>, _>>()?
        )),
        Format::Human if page.events.is_empty() => output::line("no events match"),
        Format::Human => {
            output::line(output::events_table(&page.events))?;
            if page.events.len() == arguments.limit {
                output::line(format!(
                    "(the first {}; --limit shows more)",
                    arguments.limit
                ))?;
            }
            Ok(())
        }
    }
}

/// Prints every event committed after the start position, one per line,
/// until interrupted.
async fn follow(
    connection: &Connection,
    arguments: EventsArgs,
    format: Format,
) -> Result<(), Failure> {
    let store = connection.store.as_ref();
    let filter = if arguments.event_types.is_empty() {
        LogFilter::all()
    } else {
        LogFilter::event_types(arguments.event_types)
    };
    let mut watch = store.watch_log().await;
    let mut after = match arguments.after {
        Some(after) => after,
        None => log_head(store).await?,
    };
    if format == Format::Human {
        eprintln!(
            "following {} after {after} (Ctrl-C stops)",
            connection.description
        );
    }
    loop {
        watch.mark_seen();
        let page = store
            .read_log(after, arguments.limit.max(1), &filter)
            .await?;
        for event in &page.events {
            match format {
                Format::Json => output::line(
                    serde_json::to_string(&output::event_json(event)?)
                        .map_err(|error| Failure::io("cannot format JSON", error))?,
                )?,
                Format::Human => output::line(format!(
                    "{:<12} {} v{} {} {}",
                    event.position.to_string(),
                    event.stream_id,
                    event.version,
                    event.event_type,
                    output::time(event.recorded_at)
                ))?,
            }
        }
        after = page.read_to.max(after);
        if page.at_head() {
            watch.changed(FOLLOW_POLL).await;
        }
    }
}

/// `annals event <id>`.
pub(crate) async fn show(connection: &Connection, id: Uuid, format: Format) -> Result<(), Failure> {
    let page = connection
        .store
        .query(&EventQuery::new().event_id(id).limit(1))
        .await?;
    let Some(event) = page.events.first() else {
        return Err(Failure::NotFound(format!(
            "no event {id} in {}",
            connection.description
        )));
    };
    match format {
        Format::Json => output::json(&output::event_json(event)?),
        Format::Human => output::line(output::event_detail(event)?),
    }
}
