//! What can go wrong while generating or checking artefacts.

use std::path::PathBuf;

/// An error of `annals-codegen`, naming the file, option or registered item
/// at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodegenError {
    /// A layout option is out of range or malformed.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option, e.g. `table prefix`.
        option: &'static str,
        /// What is wrong with the value given.
        reason: String,
    },
    /// An existing migration differs from what the generator produces for
    /// its number. Migrations are append-only: a change to Annals' tables
    /// is a new migration, never an edit of an applied one.
    #[error(
        "{} differs from migration {version} as generated; migrations are append-only, so it must not be edited (restore it with `git checkout -- {}`)",
        path.display(),
        path.display()
    )]
    EditedMigration {
        /// The migration file.
        path: PathBuf,
        /// Its number.
        version: u32,
    },
    /// A numbered migration file the generator does not know.
    #[error(
        "{} is not a migration this version of annals-codegen knows (the last is {last}); it was added by hand or by a newer generator",
        path.display()
    )]
    UnknownMigration {
        /// The file.
        path: PathBuf,
        /// The newest migration the generator knows.
        last: u32,
    },
    /// Two projections declare the same read-model table.
    #[error("read-model table `{table}` is declared by both `{first}` and `{second}`")]
    DuplicateTable {
        /// The table name.
        table: &'static str,
        /// One projection (its Rust type).
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// The registry itself is inconsistent (duplicate names).
    #[error(transparent)]
    Registry(#[from] annals::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
