//! `annals migrate status | apply | sql`.

use annals::store::SchemaStatus;
use serde_json::json;

use crate::arguments::{MigrateCommand, StoreOptions};
use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

pub(crate) async fn run(
    options: &StoreOptions,
    command: MigrateCommand,
    format: Format,
) -> Result<(), Failure> {
    match command {
        MigrateCommand::Status => {
            let connection = Connection::open(options, false).await?;
            let status = connection.schema_status().await?;
            print_status(&connection, &status, format)?;
            if status.is_ahead() {
                return Err(Failure::Schema(format!(
                    "the database is at schema version {}, newer than this build knows (up to {})",
                    status.version(),
                    status.supported
                )));
            }
            Ok(())
        }
        MigrateCommand::Apply => {
            let connection = Connection::open(options, true).await?;
            let before = connection.schema_status().await?;
            connection.migrate().await?;
            let after = connection.schema_status().await?;
            let applied: Vec<_> = before
                .pending
                .iter()
                .map(|m| json!({ "version": m.version, "name": m.name }))
                .collect();
            match format {
                Format::Json => output::json(&json!({
                    "applied": applied,
                    "version": after.version(),
                })),
                Format::Human if before.pending.is_empty() => output::line(format!(
                    "nothing to apply: {} is at schema version {}",
                    connection.description,
                    after.version()
                )),
                Format::Human => {
                    for migration in &before.pending {
                        output::line(format!(
                            "applied {:04} {}",
                            migration.version, migration.name
                        ))?;
                    }
                    output::line(format!(
                        "{} is at schema version {}",
                        connection.description,
                        after.version()
                    ))
                }
            }
        }
        MigrateCommand::Sql => {
            let connection = Connection::open(options, false).await?;
            let status = connection.schema_status().await?;
            match format {
                Format::Json => output::json(&json!(
                    status
                        .pending
                        .iter()
                        .map(|m| json!({ "version": m.version, "name": m.name, "sql": m.sql }))
                        .collect::<Vec<_>>()
                )),
                Format::Human if status.pending.is_empty() => output::line(format!(
                    "-- nothing pending: schema version {}",
                    status.version()
                )),
                Format::Human => {
                    for migration in &status.pending {
                        output::line(format!(
                            "-- migration {:04} {}\n{}",
                            migration.version,
                            migration.name,
                            migration.sql.trim_end()
                        ))?;
                    }
                    Ok(())
                }
            }
        }
    }
}

fn print_status(
    connection: &Connection,
    status: &SchemaStatus,
    format: Format,
) -> Result<(), Failure> {
    match format {
        Format::Json => output::json(&json!({
            "backend": status.backend,
            "version": status.version(),
            "supported": status.supported,
            "current": status.is_current(),
            "applied": status.applied.iter().map(|m| json!({
                "version": m.version, "name": m.name, "applied_at": m.applied_at,
            })).collect::<Vec<_>>(),
            "pending": status.pending.iter().map(|m| json!({
                "version": m.version, "name": m.name,
            })).collect::<Vec<_>>(),
        })),
        Format::Human => {
            let mut table = output::table(["version", "name", "applied at"]);
            for migration in &status.applied {
                table.add_row([
                    format!("{:04}", migration.version),
                    migration.name.clone(),
                    migration.applied_at.clone(),
                ]);
            }
            for migration in &status.pending {
                table.add_row([
                    format!("{:04}", migration.version),
                    migration.name.to_owned(),
                    "pending".to_owned(),
                ]);
            }
            output::line(format!(
                "{}: schema version {} of {}{}",
                connection.description,
                status.version(),
                status.supported,
                if status.is_current() {
                    " (current)"
                } else {
                    ""
                }
            ))?;
            output::line(table)
        }
    }
}
