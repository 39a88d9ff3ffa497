//! Projections and subscriptions: the checkpointed readers of the log, as
//! their checkpoint rows show them (position, lease, owner).

use annals::LogPosition;
use annals::checkpoint::Checkpoint;
use annals::store::{EventStore, LogFilter};
use chrono::Utc;
use serde_json::{Value, json};

use crate::arguments::{ProjectionsCommand, SubscriptionsCommand};
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

/// The name prefix of projection checkpoints (`projection:NAME:vN`).
const PROJECTION_PREFIX: &str = "projection:";

/// Which readers a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReaderKind {
    Projection,
    Subscription,
}

impl ReaderKind {
    fn of(name: &str) -> Self {
        if name.starts_with(PROJECTION_PREFIX) {
            ReaderKind::Projection
        } else {
            ReaderKind::Subscription
        }
    }

    fn label(self) -> &'static str {
        match self {
            ReaderKind::Projection => "projection",
            ReaderKind::Subscription => "subscription",
        }
    }
}

/// One reader as an operator sees it.
pub(crate) struct ReaderRow {
    pub(crate) kind: ReaderKind,
    pub(crate) checkpoint: Checkpoint,
    /// About how many events lie beyond its position: the positions between
    /// it and the head (a rolled back append leaves unused positions, so
    /// this can overstate; nothing counts the log).
    pub(crate) lag_events: u64,
}

impl ReaderRow {
    /// Who owns it: a live lease's holder, an expired one, or nobody.
    pub(crate) fn ownership(&self) -> String {
        let checkpoint = &self.checkpoint;
        match (&checkpoint.owner, checkpoint.lease_expires_at) {
            (Some(owner), Some(expires)) if expires > Utc::now() => {
                format!("{owner} (until {})", output::time(expires))
            }
            (Some(owner), Some(expires)) => {
                format!("none: {owner}'s lease expired {}", output::time(expires))
            }
            _ => "none".to_owned(),
        }
    }

    /// `paused`, `rebuild requested` or `active`.
    pub(crate) fn state(&self) -> &'static str {
        if self.checkpoint.paused {
            "paused"
        } else if self.checkpoint.rebuild_requested {
            "rebuild requested"
        } else {
            "active"
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let checkpoint = &self.checkpoint;
        json!({
            "kind": self.kind.label(),
            "name": checkpoint.name,
            "position": checkpoint.position.to_string(),
            "lag_events": self.lag_events,
            "owner": checkpoint.owner,
            "paused": checkpoint.paused,
            "rebuild_requested": checkpoint.rebuild_requested,
            "owned": checkpoint.owner.is_some()
                && checkpoint.lease_expires_at.is_some_and(|expires| expires > Utc::now()),
            "generation": checkpoint.generation,
            "renewed_at": checkpoint.renewed_at,
            "lease_expires_at": checkpoint.lease_expires_at,
        })
    }
}

/// The last event of the log this handle sees (`0/0` for an empty log).
pub(crate) async fn log_head(store: &dyn EventStore) -> Result<LogPosition, Failure> {
    let nothing = LogFilter::event_types(Vec::<String>::new()).without_metadata();
    Ok(store.read_log(LogPosition::START, 1, &nothing).await?.head)
}

/// Every reader with its lag behind `head`.
pub(crate) async fn reader_rows(
    store: &dyn EventStore,
    head: LogPosition,
) -> Result<Vec<ReaderRow>, Failure> {
    Ok(store
        .checkpoints()
        .list()
        .await?
        .into_iter()
        .map(|checkpoint| ReaderRow {
            kind: ReaderKind::of(&checkpoint.name),
            lag_events: head.sequence.saturating_sub(checkpoint.position.sequence),
            checkpoint,
        })
        .collect())
}

/// The readers of one kind as a table.
pub(crate) fn readers_table<'r>(rows: impl IntoIterator<Item = &'r ReaderRow>) -> String {
    let mut table = output::table([
        "name",
        "state",
        "position",
        "lag (events)",
        "owner",
        "generation",
    ]);
    for row in rows {
        table.add_row([
            row.checkpoint.name.clone(),
            row.state().to_owned(),
            row.checkpoint.position.to_string(),
            row.lag_events.to_string(),
            row.ownership(),
            row.checkpoint.generation.to_string(),
        ]);
    }
    table.to_string()
}

async fn print_status(
    connection: &Connection,
    kind: ReaderKind,
    format: Format,
) -> Result<(), Failure> {
    let store = connection.store.as_ref();
    let head = log_head(store).await?;
    let rows: Vec<ReaderRow> = reader_rows(store, head)
        .await?
        .into_iter()
        .filter(|row| row.kind == kind)
        .collect();
    match format {
        Format::Json => output::json(&json!({
            "head": head.to_string(),
            "readers": rows.iter().map(ReaderRow::to_json).collect::<Vec<_>>(),
        })),
        Format::Human if rows.is_empty() => output::line(format!(
            "no {}s have a checkpoint in {}",
            kind.label(),
            connection.description
        )),
        Format::Human => {
            output::line(format!("log head: {head}"))?;
            output::line(readers_table(&rows))
        }
    }
}

/// `annals projections ...`
pub(crate) async fn projections(
    connection: &Connection,
    command: ProjectionsCommand,
    format: Format,
) -> Result<(), Failure> {
    match command {
        ProjectionsCommand::Status => {
            print_status(connection, ReaderKind::Projection, format).await
        }
        ProjectionsCommand::Pause { name } => {
            let name = projection_checkpoint(connection, &name).await?;
            set_paused(connection, &name, true, format).await
        }
        ProjectionsCommand::Resume { name } => {
            let name = projection_checkpoint(connection, &name).await?;
            set_paused(connection, &name, false, format).await
        }
        ProjectionsCommand::Rebuild { name } => {
            let name = projection_checkpoint(connection, &name).await?;
            connection
                .store
                .checkpoints()
                .request_rebuild(&name, true)
                .await?;
            match format {
                Format::Json => output::json(&json!({ "name": name, "rebuild_requested": true })),
                Format::Human => output::line(format!(
                    "asked {name} to rebuild: its owner empties its tables and starts over within a lease renewal (5 s by default)"
                )),
            }
        }
    }
}

/// The checkpoint name of a projection given by its name (the one
/// version with a checkpoint) or by its checkpoint name.
async fn projection_checkpoint(connection: &Connection, name: &str) -> Result<String, Failure> {
    let names: Vec<String> = connection
        .store
        .checkpoints()
        .list()
        .await?
        .into_iter()
        .map(|checkpoint| checkpoint.name)
        .filter(|candidate| {
            candidate == name
                || candidate
                    .strip_prefix(PROJECTION_PREFIX)
                    .and_then(|rest| rest.rsplit_once(":v"))
                    .is_some_and(|(bare, _)| bare == name)
        })
        .filter(|candidate| ReaderKind::of(candidate) == ReaderKind::Projection)
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::NotFound(format!(
            "no projection named {name:?} has a checkpoint in {}",
            connection.description
        ))),
        several => Err(Failure::Usage(format!(
            "{name:?} names several projection versions ({}): give the one you mean",
            several.join(", ")
        ))),
    }
}

/// Pauses or resumes the reader `name`.
async fn set_paused(
    connection: &Connection,
    name: &str,
    paused: bool,
    format: Format,
) -> Result<(), Failure> {
    let checkpoints = connection.store.checkpoints();
    let Some(row) = checkpoints.load(name).await? else {
        return Err(Failure::NotFound(format!(
            "no reader named {name:?} has a checkpoint in {}",
            connection.description
        )));
    };
    checkpoints.set_paused(name, paused).await?;
    let word = if paused { "paused" } else { "resumed" };
    match format {
        Format::Json => output::json(&json!({ "name": name, "paused": paused })),
        Format::Human if row.owner.is_none() && row.generation == 0 => output::line(format!(
            "{word} {name}; it has never had an owner: a reader without a lease is not paused"
        )),
        Format::Human => output::line(format!(
            "{word} {name}; its owner notices within a lease renewal (5 s by default)"
        )),
    }
}

/// `annals subscriptions ...`
pub(crate) async fn subscriptions(
    connection: &Connection,
    command: SubscriptionsCommand,
    format: Format,
) -> Result<(), Failure> {
    match command {
        SubscriptionsCommand::Status => {
            print_status(connection, ReaderKind::Subscription, format).await
        }
        SubscriptionsCommand::Pause { name } => {
            refuse_projection(&name)?;
            set_paused(connection, &name, true, format).await
        }
        SubscriptionsCommand::Resume { name } => {
            refuse_projection(&name)?;
            set_paused(connection, &name, false, format).await
        }
        SubscriptionsCommand::Reset { name, to, create } => {
            if ReaderKind::of(&name) == ReaderKind::Projection {
                return Err(Failure::Usage(format!(
                    "{name} is a projection: moving its checkpoint would apply events to its read model twice (or skip them)"
                )));
            }
            let checkpoints = connection.store.checkpoints();
            let before = match checkpoints.load(&name).await? {
                Some(before) => Some(before.position),
                None if create => None,
                None => {
                    return Err(Failure::NotFound(format!(
                        "no subscription named {name:?} has a checkpoint in {} (--create makes one)",
                        connection.description
                    )));
                }
            };
            let head = log_head(connection.store.as_ref()).await?;
            if to > head {
                return Err(Failure::Usage(format!(
                    "position {to} is beyond the head of the log ({head})"
                )));
            }
            checkpoints.save(&name, to).await?;
            match format {
                Format::Json => output::json(&json!({
                    "name": name,
                    "from": before.map(|position| position.to_string()),
                    "to": to.to_string(),
                })),
                Format::Human => output::line(match before {
                    Some(before) => format!(
                        "moved {name} from {before} to {to}; a running owner resumes there at its next commit"
                    ),
                    None => format!("created {name}'s checkpoint at {to}: it starts after it"),
                }),
            }
        }
    }
}

/// `annals subscriptions pause|resume` names subscriptions only.
fn refuse_projection(name: &str) -> Result<(), Failure> {
    if ReaderKind::of(name) == ReaderKind::Projection {
        return Err(Failure::Usage(format!(
            "{name} is a projection: use `annals projections pause|resume`"
        )));
    }
    Ok(())
}
