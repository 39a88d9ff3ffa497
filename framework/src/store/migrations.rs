//! The SQL schema of each backend, embedded from the crate's `migrations/`
//! at build time (the build script lists the files; `cargo xtask schema`
//! writes them).
//!
//! Migrations are numbered and append-only. Each backend applies the missing
//! ones on connect in one transaction and records them in
//! `annals_schema_history`; a database that records a migration newer than
//! this build knows is refused with [`Error::SchemaTooNew`](crate::Error::SchemaTooNew).

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Its number; applied in increasing order.
    pub(crate) version: i64,
    /// A short name, recorded in the history table.
    pub(crate) name: &'static str,
    /// The SQL, possibly several statements.
    pub(crate) sql: &'static str,
}

/// Where a store's schema stands: what its history table records and what
/// this build would apply (see
/// [`SqliteEventStore::schema_status`](crate::store::SqliteEventStore::schema_status)
/// and
/// [`PostgresEventStore::schema_status`](crate::store::PostgresEventStore::schema_status)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaStatus {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The migrations the database records, oldest first (empty for a
    /// database Annals never touched).
    pub applied: Vec<AppliedMigration>,
    /// The migrations this build would apply, oldest first, with their SQL
    /// for this store's table prefix.
    pub pending: Vec<PendingMigration>,
    /// The newest migration this build knows.
    pub supported: i64,
}

impl SchemaStatus {
    /// The newest migration the database records (0: none).
    pub fn version(&self) -> i64 {
        self.applied.last().map_or(0, |migration| migration.version)
    }

    /// Whether the database records a migration newer than this build
    /// knows (a newer release upgraded it): this build refuses it.
    pub fn is_ahead(&self) -> bool {
        self.version() > self.supported
    }

    /// Whether nothing is pending and the database is not ahead.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && !self.is_ahead()
    }

    pub(crate) fn new(
        backend: &'static str,
        all: &'static [Migration],
        applied: Vec<AppliedMigration>,
        render: impl Fn(&'static str) -> String,
    ) -> Self {
        let version = applied.last().map_or(0, |migration| migration.version);
        let first_pending = all.partition_point(|migration| migration.version <= version);
        SchemaStatus {
            backend,
            pending: all[first_pending..]
                .iter()
                .map(|migration| PendingMigration {
                    version: migration.version,
                    name: migration.name,
                    sql: render(migration.sql),
                })
                .collect(),
            applied,
            supported: all.last().map_or(0, |migration| migration.version),
        }
    }
}

/// A migration a database records as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its number.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// When it was applied (RFC 3339, as recorded).
    pub applied_at: String,
}

/// A migration this build would apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMigration {
    /// Its number.
    pub version: i64,
    /// Its name.
    pub name: &'static str,
    /// Its SQL, with this store's table prefix.
    pub sql: String,
}

/// Creates the history table. Idempotent.
pub(crate) const HISTORY_TABLE: &str = "CREATE TABLE IF NOT EXISTS annals_schema_history (
    version    BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_at TEXT   NOT NULL
)";

// `POSTGRES` and `SQLITE`: every file of `migrations/postgres` and
// `migrations/sqlite`, in order, listed by the build script.
include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The migrations after `applied`, or the error for a database that is ahead.
pub(crate) fn pending(
    backend: &'static str,
    all: &'static [Migration],
    applied: i64,
) -> crate::Result<&'static [Migration]> {
    let supported = all.last().map_or(0, |migration| migration.version);
    if applied > supported {
        return Err(crate::Error::SchemaTooNew {
            backend,
            found: applied,
            supported,
        });
    }
    let first_pending = all.partition_point(|migration| migration.version <= applied);
    Ok(&all[first_pending..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Migration] = &[
        Migration {
            version: 1,
            name: "a",
            sql: "",
        },
        Migration {
            version: 2,
            name: "b",
            sql: "",
        },
    ];

    #[test]
    fn pending_returns_only_newer_migrations() {
        assert_eq!(pending("sqlite", ALL, 0).map(<[_]>::len).ok(), Some(2));
        assert_eq!(pending("sqlite", ALL, 1).map(|m| m[0].name).ok(), Some("b"));
        assert_eq!(pending("sqlite", ALL, 2).map(<[_]>::len).ok(), Some(0));
    }

    #[test]
    fn a_newer_database_is_refused_naming_both_versions() {
        let error = pending("postgres", ALL, 5).expect_err("database is ahead");
        let message = error.to_string();
        assert!(message.contains("schema version 5"), "{message}");
        assert!(message.contains("up to version 2"), "{message}");
    }
}
