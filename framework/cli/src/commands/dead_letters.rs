//! `annals dead-letters list | show | discard`.

use annals::store::EventQuery;
use annals::subscription::dead_letter::DeadLetter;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::arguments::DeadLettersCommand;
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

fn letter_json(letter: &DeadLetter) -> Value {
    json!({
        "id": letter.id,
        "handler": letter.handler,
        "event_id": letter.event_id,
        "stream_id": letter.stream_id.as_str(),
        "version": letter.version,
        "event_type": letter.event_type,
        "error": letter.error,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at,
        "retry_requested_at": letter.retry_requested_at,
    })
}

pub(crate) async fn run(
    connection: &Connection,
    command: DeadLettersCommand,
    format: Format,
) -> Result<(), Failure> {
    let letters = connection.store.dead_letters();
    match command {
        DeadLettersCommand::List { limit } => {
            let list = letters.list(limit).await?;
            match format {
                Format::Json => {
                    output::json(&json!(list.iter().map(letter_json).collect::<Vec<_>>()))
                }
                Format::Human if list.is_empty() => output::line("no dead letters"),
                Format::Human => {
                    let mut table = output::table([
                        "id",
                        "handler",
                        "stream",
                        "version",
                        "type",
                        "attempts",
                        "failed at",
                        "retry",
                        "error",
                    ]);
                    for letter in &list {
                        table.add_row([
                            letter.id.to_string(),
                            letter.handler.clone(),
                            letter.stream_id.to_string(),
                            letter.version.to_string(),
                            letter.event_type.clone(),
                            letter.attempts.to_string(),
                            output::time(letter.failed_at),
                            letter
                                .retry_requested_at
                                .map_or_else(String::new, |_| "requested".to_owned()),
                            letter.error.clone(),
                        ]);
                    }
                    output::line(table)
                }
            }
        }
        DeadLettersCommand::Show { id } => {
            let letter = find(connection, id).await?;
            let event = connection
                .store
                .query(&EventQuery::new().event_id(letter.event_id).limit(1))
                .await?
                .events
                .into_iter()
                .next();
            match format {
                Format::Json => {
                    let mut value = letter_json(&letter);
                    value["event"] = match &event {
                        Some(event) => output::event_json(event)?,
                        None => Value::Null,
                    };
                    output::json(&value)
                }
                Format::Human => {
                    output::line(format!("dead letter     {}", letter.id))?;
                    output::line(format!("handler         {}", letter.handler))?;
                    output::line(format!("attempts        {}", letter.attempts))?;
                    output::line(format!(
                        "failed at       {}",
                        output::time(letter.failed_at)
                    ))?;
                    output::line(format!("error           {}", letter.error))?;
                    match &event {
                        Some(event) => output::line(output::event_detail(event)?),
                        None => output::line(format!(
                            "event           {} (not readable through this handle)",
                            letter.event_id
                        )),
                    }
                }
            }
        }
        DeadLettersCommand::Retry { id } => {
            if !letters.request_retry(id).await? {
                return Err(not_found(connection, id));
            }
            match format {
                Format::Json => output::json(&json!({ "retry_requested": id })),
                Format::Human => output::line(format!(
                    "asked for dead letter {id} to be retried: the subscription running its handler does when next caught up"
                )),
            }
        }
        DeadLettersCommand::Discard { id } => {
            if !letters.delete(id).await? {
                return Err(not_found(connection, id));
            }
            match format {
                Format::Json => output::json(&json!({ "discarded": id })),
                Format::Human => output::line(format!("discarded dead letter {id}")),
            }
        }
    }
}

async fn find(connection: &Connection, id: Uuid) -> Result<DeadLetter, Failure> {
    connection
        .store
        .dead_letters()
        .get(id)
        .await?
        .ok_or_else(|| not_found(connection, id))
}

fn not_found(connection: &Connection, id: Uuid) -> Failure {
    Failure::NotFound(format!("no dead letter {id} in {}", connection.description))
}
