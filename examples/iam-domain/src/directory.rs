//! The tenant directory: tenants with their status and user counts, and
//! users with their (personal) contact data. Email uniqueness is not this
//! read model's business: registrations decide it on the events themselves
//! (`crate::registration`), with no window for a race.

use annals::RecordedEvent;
use annals::prelude::*;
use annals::projection::sql_read_model::SqlConnection;

use crate::tenant::TenantEvent;
use crate::user::UserEvent;

/// The directory projection (SQL).
#[derive(Debug, Default)]
pub struct TenantDirectory;

#[projection(
    name = "iam_tenant_directory",
    version = 1,
    table(
        name = "iam_tenants",
        columns(
            tenant_id = "text",
            name = "text",
            suspended = "boolean",
            users = "integer"
        ),
        primary_key(tenant_id),
    ),
    table(
        name = "iam_users",
        columns(
            user_id = "text",
            tenant_id = "text",
            email = "text",
            display_name = "text",
            active = "boolean"
        ),
        primary_key(user_id),
        index(tenant_id),
    )
)]
impl TenantDirectory {
    async fn tenant(
        &mut self,
        event: &TenantEvent,
        envelope: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> annals::Result<()> {
        let tenant = envelope.aggregate_id();
        match event {
            TenantEvent::Created { name } => {
                db.execute(
                    "INSERT INTO iam_tenants (tenant_id, name, suspended, users) VALUES ($1, $2, $3, 0)",
                    &[tenant.into(), name.into(), false.into()],
                )
                .await?;
            }
            TenantEvent::Renamed { name } => {
                db.execute(
                    "UPDATE iam_tenants SET name = $2 WHERE tenant_id = $1",
                    &[tenant.into(), name.into()],
                )
                .await?;
            }
            TenantEvent::Suspended { .. } | TenantEvent::Reactivated => {
                let suspended = matches!(event, TenantEvent::Suspended { .. });
                db.execute(
                    "UPDATE iam_tenants SET suspended = $2 WHERE tenant_id = $1",
                    &[tenant.into(), suspended.into()],
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn user(
        &mut self,
        event: &UserEvent,
        envelope: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> annals::Result<()> {
        let user = envelope.aggregate_id();
        match event {
            UserEvent::Registered {
                tenant,
                email,
                display_name,
                ..
            } => {
                db.execute(
                    "INSERT INTO iam_users (user_id, tenant_id, email, display_name, active) VALUES ($1, $2, $3, $4, $5)",
                    &[user.into(), tenant.into(), email.into(), display_name.into(), true.into()],
                )
                .await?;
                db.execute(
                    "UPDATE iam_tenants SET users = users + 1 WHERE tenant_id = $1",
                    &[tenant.into()],
                )
                .await?;
            }
            UserEvent::EmailChanged { email, .. } => {
                db.execute(
                    "UPDATE iam_users SET email = $2 WHERE user_id = $1",
                    &[user.into(), email.into()],
                )
                .await?;
            }
            UserEvent::Deactivated => {
                db.execute(
                    "UPDATE iam_users SET active = $2 WHERE user_id = $1",
                    &[user.into(), false.into()],
                )
                .await?;
            }
            UserEvent::RoleAssigned { .. } | UserEvent::RoleRevoked { .. } => {}
        }
        Ok(())
    }
}

/// One tenant of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// Its id.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// Whether suspended.
    pub suspended: bool,
    /// Registered users.
    pub users: i64,
}

/// The first `limit` tenants by id.
pub async fn tenants(db: &mut dyn SqlConnection, limit: i64) -> annals::Result<Vec<TenantRow>> {
    let rows: Vec<(String, String, bool, i64)> = db
        .fetch_rows(
            "SELECT tenant_id, name, suspended, users FROM iam_tenants ORDER BY tenant_id LIMIT $1",
            &[limit.into()],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant_id, name, suspended, users)| TenantRow {
            tenant_id,
            name,
            suspended,
            users,
        })
        .collect())
}
