//! One module per command; [`run`] opens the store and dispatches.

mod dead_letters;
mod events;
mod forget;
mod migrate;
mod readers;
mod status;
mod streams;
mod verify;

use crate::arguments::{Cli, Command, StoreOptions};
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::Format;

/// Runs the command the line names.
pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    let format = if cli.json {
        Format::Json
    } else {
        Format::Human
    };
    let store = &cli.store;
    match cli.command {
        Command::Migrate(command) => migrate::run(store, command, format).await,
        Command::Status => status::run(&open(store).await?, format).await,
        Command::Streams(command) => streams::run(&open(store).await?, command, format).await,
        Command::Events(arguments) => events::run(&open(store).await?, arguments, format).await,
        Command::Event { id } => events::show(&open(store).await?, id, format).await,
        Command::Projections(command) => {
            readers::projections(&open(store).await?, command, format).await
        }
        Command::Subscriptions(command) => {
            readers::subscriptions(&open(store).await?, command, format).await
        }
        Command::DeadLetters(command) => {
            dead_letters::run(&open(store).await?, command, format).await
        }
        Command::Verify(arguments) => verify::run(&open(store).await?, arguments, format).await,
        Command::Forget { subject } => forget::run(&open(store).await?, &subject, format).await,
    }
}

/// Opens the store, which must hold the schema this build knows.
async fn open(options: &StoreOptions) -> Result<Connection, Failure> {
    let connection = Connection::open(options, false).await?;
    connection.require_current_schema().await?;
    Ok(connection)
}
