//! The DDL of the SQL read-model tables that `#[projection(table(...))]`
//! declares.
//!
//! ```
//! use annals::registry::{ColumnType, ReadModelColumn, ReadModelTable};
//! use annals_codegen::{Dialect, read_model_ddl};
//!
//! let table = ReadModelTable {
//!     name: "user_permissions",
//!     columns: &[
//!         ReadModelColumn { name: "user_id", column_type: ColumnType::Text, nullable: false },
//!         ReadModelColumn { name: "permission", column_type: ColumnType::Text, nullable: false },
//!         ReadModelColumn { name: "granted_at", column_type: ColumnType::Timestamp, nullable: true },
//!     ],
//!     primary_key: &["user_id", "permission"],
//!     indexes: &[&["permission"]],
//! };
//! let sql = read_model_ddl::create_table(Dialect::Postgres, &table);
//! assert!(sql.contains("granted_at timestamptz,"));
//! assert!(sql.contains("PRIMARY KEY (user_id, permission)"));
//! assert!(sql.contains("CREATE INDEX IF NOT EXISTS user_permissions_by_permission ON user_permissions (permission);"));
//! ```

use std::fmt::Write as _;

use annals::registry::{ColumnType, ProjectionDescriptor, ReadModelTable};

use crate::dialect::Dialect;

/// The SQL type of a portable column type.
pub fn sql_type(dialect: Dialect, column_type: ColumnType) -> &'static str {
    match (dialect, column_type) {
        (Dialect::Postgres, ColumnType::Text) => "text",
        (Dialect::Postgres, ColumnType::Integer) => "bigint",
        (Dialect::Postgres, ColumnType::Real) => "double precision",
        (Dialect::Postgres, ColumnType::Boolean) => "boolean",
        (Dialect::Postgres, ColumnType::Uuid) => "uuid",
        (Dialect::Postgres, ColumnType::Timestamp) => "timestamptz",
        (Dialect::Postgres, ColumnType::Json) => "jsonb",
        (Dialect::Postgres, ColumnType::Bytes) => "bytea",
        (Dialect::Sqlite, ColumnType::Integer | ColumnType::Boolean) => "INTEGER",
        (Dialect::Sqlite, ColumnType::Real) => "REAL",
        (Dialect::Sqlite, ColumnType::Bytes) => "BLOB",
        // Text, UUIDs, RFC 3339 timestamps and JSON are stored as text.
        (Dialect::Sqlite, _) => "TEXT",
    }
}

/// `CREATE TABLE IF NOT EXISTS` and its indexes, for one table. Idempotent,
/// so a read model may run it at start-up.
pub fn create_table(dialect: Dialect, table: &ReadModelTable) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (\n", table.name);
    for column in table.columns {
        let not_null = if column.nullable { "" } else { " NOT NULL" };
        let _ = writeln!(
            sql,
            "    {} {}{not_null},",
            column.name,
            sql_type(dialect, column.column_type)
        );
    }
    let _ = writeln!(
        sql,
        "    PRIMARY KEY ({})\n);",
        table.primary_key.join(", ")
    );
    for index in table.indexes {
        let _ = writeln!(
            sql,
            "CREATE INDEX IF NOT EXISTS {}_by_{} ON {} ({});",
            table.name,
            index.join("_"),
            table.name,
            index.join(", ")
        );
    }
    sql
}

/// The DDL of every table a projection declares, with a comment naming it.
pub fn for_projection(dialect: Dialect, projection: &ProjectionDescriptor) -> String {
    let mut sql = String::new();
    for table in projection.tables {
        let _ = writeln!(
            sql,
            "-- Read model of projection `{}` v{} ({}).",
            projection.name, projection.version, projection.rust_type
        );
        sql.push_str(&create_table(dialect, table));
        sql.push('\n');
    }
    sql
}
