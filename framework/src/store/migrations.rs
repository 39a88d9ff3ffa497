//! The SQL schema of each backend, embedded from `migrations/` at build time.
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

/// PostgreSQL migrations.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_log",
        sql: include_str!("../../../migrations/postgres/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "snapshots",
        sql: include_str!("../../../migrations/postgres/0002_snapshots.sql"),
    },
    Migration {
        version: 3,
        name: "checkpoints",
        sql: include_str!("../../../migrations/postgres/0003_checkpoints.sql"),
    },
    Migration {
        version: 4,
        name: "dead_letters",
        sql: include_str!("../../../migrations/postgres/0004_dead_letters.sql"),
    },
    Migration {
        version: 5,
        name: "append_notify",
        sql: include_str!("../../../migrations/postgres/0005_append_notify.sql"),
    },
    Migration {
        version: 6,
        name: "query_indexes",
        sql: include_str!("../../../migrations/postgres/0006_query_indexes.sql"),
    },
    Migration {
        version: 7,
        name: "hash_chain",
        sql: include_str!("../../../migrations/postgres/0007_hash_chain.sql"),
    },
    Migration {
        version: 8,
        name: "subject_keys",
        sql: include_str!("../../../migrations/postgres/0008_subject_keys.sql"),
    },
    Migration {
        version: 9,
        name: "tenant_isolation",
        sql: include_str!("../../../migrations/postgres/0009_tenant_isolation.sql"),
    },
    Migration {
        version: 10,
        name: "fail_closed_tenancy",
        sql: include_str!("../../../migrations/postgres/0010_fail_closed_tenancy.sql"),
    },
    Migration {
        version: 11,
        name: "tenant_checkpoints",
        sql: include_str!("../../../migrations/postgres/0011_tenant_checkpoints.sql"),
    },
    Migration {
        version: 12,
        name: "tenant_snapshots",
        sql: include_str!("../../../migrations/postgres/0012_tenant_snapshots.sql"),
    },
    Migration {
        version: 13,
        name: "tenant_subject_keys",
        sql: include_str!("../../../migrations/postgres/0013_tenant_subject_keys.sql"),
    },
    Migration {
        version: 14,
        name: "tenant_log_order",
        sql: include_str!("../../../migrations/postgres/0014_tenant_log_order.sql"),
    },
    Migration {
        version: 15,
        name: "chain_coverage",
        sql: include_str!("../../../migrations/postgres/0015_chain_coverage.sql"),
    },
    Migration {
        version: 16,
        name: "tenant_streams",
        sql: include_str!("../../../migrations/postgres/0016_tenant_streams.sql"),
    },
];

/// SQLite migrations.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_log",
        sql: include_str!("../../../migrations/sqlite/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "snapshots",
        sql: include_str!("../../../migrations/sqlite/0002_snapshots.sql"),
    },
    Migration {
        version: 3,
        name: "checkpoints",
        sql: include_str!("../../../migrations/sqlite/0003_checkpoints.sql"),
    },
    Migration {
        version: 4,
        name: "dead_letters",
        sql: include_str!("../../../migrations/sqlite/0004_dead_letters.sql"),
    },
    Migration {
        version: 5,
        name: "query_indexes",
        sql: include_str!("../../../migrations/sqlite/0005_query_indexes.sql"),
    },
    Migration {
        version: 6,
        name: "hash_chain",
        sql: include_str!("../../../migrations/sqlite/0006_hash_chain.sql"),
    },
    Migration {
        version: 7,
        name: "subject_keys",
        sql: include_str!("../../../migrations/sqlite/0007_subject_keys.sql"),
    },
    Migration {
        version: 8,
        name: "tenant_subject_keys",
        sql: include_str!("../../../migrations/sqlite/0008_tenant_subject_keys.sql"),
    },
    Migration {
        version: 9,
        name: "chain_coverage",
        sql: include_str!("../../../migrations/sqlite/0009_chain_coverage.sql"),
    },
];

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
