//! The tenant directory: tenants with their status and user counts, users
//! with their (personal) contact data, and the email index the application
//! checks before registering a user.
//!
//! # Email uniqueness, honestly
//!
//! "An email is unique within a tenant" spans many `User` aggregates, so no
//! single aggregate can enforce it. The application checks this read model
//! first ([`email_owner`]), which refuses every duplicate it can see. Two
//! registrations with the same address that race within the projection's
//! lag can both pass that check; the projection then keeps the first owner
//! in `iam_user_emails` and records the later user in
//! `iam_email_conflicts`, which the application reports (the example prints
//! their count) for an operator or a process to resolve, e.g. by asking the
//! later user to change address. Closing the window completely would take a
//! reservation stream per address appended in the same transaction as the
//! registration; this example shows the read-model check the issue asks for
//! and makes the remaining race visible instead of silent.

use annals::RecordedEvent;
use annals::prelude::*;
use annals::projection::sql_read_model::{SqlConnection, SqlValue};
use annals::registry::ColumnType;

use crate::ids::aggregate_id;
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
    ),
    table(
        name = "iam_user_emails",
        columns(tenant_id = "text", email = "text", user_id = "text"),
        primary_key(tenant_id, email),
    ),
    table(
        name = "iam_email_conflicts",
        columns(
            tenant_id = "text",
            email = "text",
            user_id = "text",
            detected_at = "timestamp"
        ),
        primary_key(tenant_id, email, user_id),
    )
)]
impl TenantDirectory {
    async fn tenant(
        &mut self,
        event: &TenantEvent,
        envelope: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> annals::Result<()> {
        let tenant = aggregate_id(envelope);
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
        let user = aggregate_id(envelope);
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
                claim_email(db, tenant, email, user, envelope).await?;
            }
            UserEvent::EmailChanged { email, .. } => {
                let Some((tenant, old)) = tenant_and_email(db, user).await? else {
                    return Ok(());
                };
                db.execute(
                    "DELETE FROM iam_user_emails WHERE tenant_id = $1 AND email = $2 AND user_id = $3",
                    &[(&tenant).into(), old.into(), user.into()],
                )
                .await?;
                db.execute(
                    "UPDATE iam_users SET email = $2 WHERE user_id = $1",
                    &[user.into(), email.into()],
                )
                .await?;
                claim_email(db, &tenant, email, user, envelope).await?;
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

async fn tenant_and_email(
    db: &mut dyn SqlConnection,
    user: &str,
) -> annals::Result<Option<(String, String)>> {
    let rows = db
        .fetch_all(
            "SELECT tenant_id, email FROM iam_users WHERE user_id = $1",
            &[user.into()],
            &[ColumnType::Text, ColumnType::Text],
        )
        .await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| match row.as_slice() {
            [SqlValue::Text(tenant), SqlValue::Text(email)] => {
                Some((tenant.clone(), email.clone()))
            }
            _ => None,
        }))
}

/// Records `user` as the owner of `email`, or, when another user already
/// owns it (a registration that raced the check), records the conflict.
async fn claim_email(
    db: &mut dyn SqlConnection,
    tenant: &str,
    email: &str,
    user: &str,
    envelope: &RecordedEvent,
) -> annals::Result<()> {
    let claimed = db
        .execute(
            "INSERT INTO iam_user_emails (tenant_id, email, user_id) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, email) DO NOTHING",
            &[tenant.into(), email.into(), user.into()],
        )
        .await?;
    if claimed == 0 && email_owner(db, tenant, email).await?.as_deref() != Some(user) {
        db.execute(
            "INSERT INTO iam_email_conflicts (tenant_id, email, user_id, detected_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, email, user_id) DO NOTHING",
            &[tenant.into(), email.into(), user.into(), envelope.recorded_at.into()],
        )
        .await?;
    }
    Ok(())
}

/// The user who owns `email` in `tenant`, as far as the directory has seen.
pub async fn email_owner(
    db: &mut dyn SqlConnection,
    tenant: &str,
    email: &str,
) -> annals::Result<Option<String>> {
    let owners = db
        .fetch_column(
            "SELECT user_id FROM iam_user_emails WHERE tenant_id = $1 AND email = $2",
            &[tenant.into(), email.into()],
            ColumnType::Text,
        )
        .await?;
    Ok(owners.into_iter().next().and_then(SqlValue::into_text))
}

/// Registrations that raced the email check: `(tenant, user)` pairs.
pub async fn email_conflicts(db: &mut dyn SqlConnection) -> annals::Result<Vec<(String, String)>> {
    let rows = db
        .fetch_all(
            "SELECT tenant_id, user_id FROM iam_email_conflicts ORDER BY tenant_id, user_id",
            &[],
            &[ColumnType::Text, ColumnType::Text],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [SqlValue::Text(tenant), SqlValue::Text(user)] => Some((tenant.clone(), user.clone())),
            _ => None,
        })
        .collect())
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
    let rows = db
        .fetch_all(
            "SELECT tenant_id, name, suspended, users FROM iam_tenants ORDER BY tenant_id LIMIT $1",
            &[limit.into()],
            &[
                ColumnType::Text,
                ColumnType::Text,
                ColumnType::Boolean,
                ColumnType::Integer,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [
                SqlValue::Text(tenant_id),
                SqlValue::Text(name),
                SqlValue::Boolean(suspended),
                SqlValue::Integer(users),
            ] => Some(TenantRow {
                tenant_id: tenant_id.clone(),
                name: name.clone(),
                suspended: *suspended,
                users: *users,
            }),
            _ => None,
        })
        .collect())
}
