//! `annals streams list | show`.

use annals::StreamId;
use annals::store::StreamQuery;
use serde_json::json;

use crate::arguments::StreamsCommand;
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

pub(crate) async fn run(
    connection: &Connection,
    command: StreamsCommand,
    format: Format,
) -> Result<(), Failure> {
    let store = connection.store.as_ref();
    match command {
        StreamsCommand::List { prefix, limit } => {
            let mut query = StreamQuery::new().limit(limit);
            if let Some(prefix) = prefix {
                query = query.prefix(prefix);
            }
            let streams = store.list_streams(&query).await?;
            match format {
                Format::Json => output::json(&json!(
                    streams
                        .iter()
                        .map(|stream| json!({
                            "stream_id": stream.stream_id.as_str(),
                            "tenant_id": stream.tenant_id,
                            "version": stream.version,
                            "created_at": stream.created_at,
                            "updated_at": stream.updated_at,
                        }))
                        .collect::<Vec<_>>()
                )),
                Format::Human if streams.is_empty() => output::line("no streams"),
                Format::Human => {
                    let mut table =
                        output::table(["stream", "tenant", "version", "created", "updated"]);
                    for stream in &streams {
                        table.add_row([
                            stream.stream_id.to_string(),
                            stream.tenant_id.clone().unwrap_or_default(),
                            stream.version.to_string(),
                            output::time(stream.created_at),
                            output::time(stream.updated_at),
                        ]);
                    }
                    output::line(table)?;
                    if streams.len() == limit {
                        output::line(format!(
                            "(the first {limit}; --limit shows more, --prefix narrows)"
                        ))?;
                    }
                    Ok(())
                }
            }
        }
        StreamsCommand::Show {
            stream,
            from,
            limit,
        } => {
            let (id, version) = existing_stream(connection, &stream).await?;
            let events = store.read_stream(&id, from, limit).await?;
            match format {
                Format::Json => output::json(&json!({
                    "stream_id": stream,
                    "version": version,
                    "events": events
                        .iter()
                        .map(output::event_json)
                        .collect::<Result<Vec<_>, _>>()?,
                })),
                Format::Human => {
                    output::line(format!("stream {stream}, version {version}"))?;
                    output::line(output::events_table(&events))
                }
            }
        }
    }
}

/// The stream `stream` names and its version; not found if it has no
/// events in this store (or tenant).
pub(crate) async fn existing_stream(
    connection: &Connection,
    stream: &str,
) -> Result<(StreamId, u64), Failure> {
    let id = StreamId::new(stream)?;
    match connection.store.stream_version(&id).await? {
        0 => Err(Failure::NotFound(format!(
            "no stream {stream:?} in {}",
            connection.description
        ))),
        version => Ok((id, version)),
    }
}
