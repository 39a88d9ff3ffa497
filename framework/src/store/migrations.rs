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
