//! The PostgreSQL role model behind tenant isolation (migrations 0009 and
//! 0010): which roles row-level security confines, and the privileges the
//! application role needs.
//!
//! - The **owner role** applies Annals' migrations. Every table carries a
//!   `cross_tenant` policy for it alone: the unscoped store connected as
//!   the owner is the explicit cross-tenant path (projections and
//!   publishing across tenants, administration, migrations).
//! - The **application role** is any other role, granted access with
//!   [`PostgresEventStore::grant_tenant_access`](super::PostgresEventStore::grant_tenant_access).
//!   It sees and writes only the rows of the tenant its transaction set in
//!   `annals.tenant`, and nothing when no tenant is set: the policies fail
//!   closed. Tenant handles ([`for_tenant`](super::PostgresEventStore::for_tenant))
//!   run as this role.
//! - Superusers and `BYPASSRLS` roles pass every policy by, as PostgreSQL
//!   does; like the owner, they cannot make tenant handles.

use sqlx::postgres::PgPool;

use super::table_names::{TableNames, is_plain_identifier};
use crate::error::{Error, Result};

/// Tables the application role reads and writes, through their policies.
const TENANT_TABLES: [&str; 5] = [
    "snapshots",
    "checkpoints",
    "dead_letters",
    "subject_keys",
    "subject_streams",
];

/// Who the pool's connections run as, and why row-level security would not
/// confine them, if it would not.
#[derive(Debug, Clone)]
pub(crate) struct PoolRole {
    /// `current_user`.
    pub(crate) name: String,
    /// `Some(reason)` when the policies pass this role by.
    pub(crate) unconfined: Option<&'static str>,
}

impl PoolRole {
    /// Reads the pool's role: superuser, `BYPASSRLS`, or a member of a role
    /// that the events table's cross-tenant policy names (the owner).
    pub(crate) async fn read(pool: &PgPool, tables: &TableNames) -> Result<PoolRole> {
        let (name, superuser, bypass, cross_tenant): (String, bool, bool, bool) = sqlx::query_as(
            "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, EXISTS (
                 SELECT 1 FROM pg_policy p, unnest(p.polroles) AS target(role)
                 WHERE p.polrelid = to_regclass($1) AND p.polname = $2
                   AND (target.role = 0 OR pg_has_role(r.oid, target.role, 'MEMBER')))
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .bind(tables.rename("annals_events").as_ref())
        .bind(tables.rename("annals_cross_tenant").as_ref())
        .fetch_one(pool)
        .await
        .map_err(super::row::failed("postgres", "read the connection's role"))?;
        let unconfined = if superuser {
            Some("a superuser")
        } else if bypass {
            Some("a BYPASSRLS role")
        } else if cross_tenant {
            Some("the owner role, whose cross-tenant policy sees every tenant")
        } else {
            None
        };
        Ok(PoolRole { name, unconfined })
    }
}

/// The schema holding this store's events table, as the pool sees it.
pub(crate) async fn home_schema(pool: &PgPool, tables: &TableNames) -> Result<String> {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = to_regclass($1)",
    )
    .bind(tables.rename("annals_events").as_ref())
    .fetch_one(pool)
    .await
    .map_err(super::row::failed("postgres", "find the events table"))?
    .ok_or_else(|| {
        Error::Config(format!(
            "no table {} on the connection's search path: migrate first",
            tables.rename("annals_events")
        ))
    })
}

/// The statements that let `role` use Annals' tables in `schema` as the
/// application role: through the policies, and never the side table of a
/// partitioned layout.
pub(crate) fn application_grants(schema: &str, tables: &TableNames, role: &str) -> Result<String> {
    if !is_plain_identifier(role, 63) {
        return Err(Error::invalid(
            "role",
            format!(
                "{role:?} must be 1 to 63 lowercase letters, digits or underscores, not starting with a digit"
            ),
        ));
    }
    if !is_plain_identifier(schema, 63) {
        return Err(Error::Config(format!(
            "Annals' tables live in schema {schema:?}, which cannot be named without quoting; \
             grant access by hand"
        )));
    }
    let prefix = tables.prefix();
    let mut sql = format!(
        "GRANT USAGE ON SCHEMA {schema} TO {role};\n\
         GRANT SELECT ON {schema}.{prefix}schema_history TO {role};\n\
         GRANT SELECT, INSERT ON {schema}.{prefix}events TO {role};\n\
         GRANT SELECT, INSERT ON {schema}.{prefix}event_tags TO {role};\n\
         GRANT USAGE ON SEQUENCE {schema}.{prefix}events_position_seq TO {role};\n"
    );
    for table in TENANT_TABLES {
        sql.push_str(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.{prefix}{table} TO {role};\n"
        ));
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_name_every_tenant_table_and_refuse_odd_names() {
        let tables = TableNames::new("iam_").expect("prefix");
        let sql = application_grants("app", &tables, "iam_app").expect("grants");
        assert!(sql.contains("GRANT SELECT, INSERT ON app.iam_events TO iam_app;"));
        assert!(sql.contains("GRANT SELECT, INSERT ON app.iam_event_tags TO iam_app;"));
        assert!(sql.contains("GRANT USAGE ON SEQUENCE app.iam_events_position_seq TO iam_app;"));
        assert!(sql.contains("ON app.iam_subject_streams TO iam_app;"));
        assert!(!sql.contains("event_keys"));
        assert!(application_grants("app", &tables, "x; DROP TABLE y").is_err());
        assert!(application_grants("Odd Schema", &tables, "iam_app").is_err());
    }
}
