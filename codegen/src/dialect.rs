//! The SQL dialects Annals generates DDL for.

use std::fmt;

/// A SQL backend of Annals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL 15 or newer.
    Postgres,
    /// SQLite 3.35 or newer.
    Sqlite,
}

impl Dialect {
    /// Both dialects, in the order their folders are written.
    pub const ALL: [Dialect; 2] = [Dialect::Postgres, Dialect::Sqlite];

    /// The folder name under `migrations/` and `schema/`: `postgres`, `sqlite`.
    pub fn folder(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::Sqlite => "SQLite",
        })
    }
}
