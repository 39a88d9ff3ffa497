//! One module per command; [`run`] opens the store and dispatches.

mod dead_letters;
mod events;
mod export;
mod forget;
mod import;
mod migrate;
pub(crate) mod readers;
mod restamp;
pub(crate) mod status;
pub(crate) mod streams;
mod verify;

use crate::arguments::{Cli, Command, ServeArgs, StoreOptions};
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
        Command::Restamp => restamp::run(store, format).await,
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
        Command::Export(arguments) => export::run(&open(store).await?, arguments, format).await,
        Command::Import(arguments) => import::run(&open(store).await?, arguments, format).await,
        Command::Serve(arguments) => serve(open(store).await?, arguments).await,
    }
}

/// `annals serve`: the token from its file or `ANNALS_CONSOLE_TOKEN`.
async fn serve(connection: Connection, arguments: ServeArgs) -> Result<(), Failure> {
    let token = match &arguments.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|error| {
                    Failure::io(
                        format!("cannot read the token file {}", path.display()),
                        error,
                    )
                })?
                .trim()
                .to_owned(),
        ),
        None => std::env::var(TOKEN_VAR).ok(),
    }
    .filter(|token| !token.is_empty());
    crate::console::serve(
        connection,
        crate::console::ServeOptions {
            listen: arguments.listen,
            token,
            read_only: arguments.read_only,
        },
    )
    .await
}

/// The variable holding the console's token when no file names it.
const TOKEN_VAR: &str = "ANNALS_CONSOLE_TOKEN";

/// Opens the store, which must hold the schema this build knows.
async fn open(options: &StoreOptions) -> Result<Connection, Failure> {
    let connection = Connection::open(options, false).await?;
    connection.require_current_schema().await?;
    Ok(connection)
}
