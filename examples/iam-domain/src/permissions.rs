//! Effective permissions: the read model that answers "may user U do P in
//! tenant T" with one primary-key lookup ([`may`]).
//!
//! The projection keeps roles' grants and users' roles in its own tables
//! and, after every change, recomputes the effective permissions of exactly
//! the users the change touches (one user for an assignment, the role's
//! users for a grant or revoke), so `iam_user_permissions` is always the
//! union of the permissions of each active user's roles.

use annals::RecordedEvent;
use annals::prelude::*;
use annals::projection::sql_read_model::SqlConnection;

use crate::role::RoleEvent;
use crate::user::UserEvent;

/// The effective-permissions projection (SQL).
#[derive(Debug, Default)]
pub struct UserPermissions;

#[projection(
    name = "iam_user_permissions",
    version = 1,
    table(
        name = "iam_perm_roles",
        columns(role_id = "text", tenant_id = "text"),
        primary_key(role_id),
    ),
    table(
        name = "iam_perm_role_grants",
        columns(role_id = "text", permission = "text"),
        primary_key(role_id, permission),
    ),
    table(
        name = "iam_perm_users",
        columns(user_id = "text", tenant_id = "text", active = "boolean"),
        primary_key(user_id),
    ),
    table(
        name = "iam_perm_user_roles",
        columns(user_id = "text", role_id = "text"),
        primary_key(user_id, role_id),
        index(role_id),
    ),
    table(
        name = "iam_user_permissions",
        columns(tenant_id = "text", user_id = "text", permission = "text"),
        primary_key(tenant_id, user_id, permission),
        index(user_id),
    )
)]
impl UserPermissions {
    async fn role(
        &mut self,
        event: &RoleEvent,
        envelope: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> annals::Result<()> {
        let role = envelope.aggregate_id();
        match event {
            RoleEvent::Defined {
                tenant,
                permissions,
                ..
            } => {
                db.execute(
                    "INSERT INTO iam_perm_roles (role_id, tenant_id) VALUES ($1, $2)",
                    &[role.into(), tenant.into()],
                )
                .await?;
                for permission in permissions {
                    grant(db, role, permission).await?;
                }
            }
            RoleEvent::PermissionGranted { permission } => grant(db, role, permission).await?,
            RoleEvent::PermissionRevoked { permission } => {
                db.execute(
                    "DELETE FROM iam_perm_role_grants WHERE role_id = $1 AND permission = $2",
                    &[role.into(), permission.into()],
                )
                .await?;
            }
        }
        recompute(
            db,
            "user_id IN (SELECT user_id FROM iam_perm_user_roles WHERE role_id = $1)",
            role,
        )
        .await
    }

    async fn user(
        &mut self,
        event: &UserEvent,
        envelope: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> annals::Result<()> {
        let user = envelope.aggregate_id();
        match event {
            UserEvent::Registered { tenant, .. } => {
                db.execute(
                    "INSERT INTO iam_perm_users (user_id, tenant_id, active) VALUES ($1, $2, $3)",
                    &[user.into(), tenant.into(), true.into()],
                )
                .await?;
                return Ok(());
            }
            UserEvent::EmailChanged { .. } => return Ok(()),
            UserEvent::RoleAssigned { role } => {
                db.execute(
                    "INSERT INTO iam_perm_user_roles (user_id, role_id) VALUES ($1, $2) \
                     ON CONFLICT (user_id, role_id) DO NOTHING",
                    &[user.into(), role.into()],
                )
                .await?;
            }
            UserEvent::RoleRevoked { role } => {
                db.execute(
                    "DELETE FROM iam_perm_user_roles WHERE user_id = $1 AND role_id = $2",
                    &[user.into(), role.into()],
                )
                .await?;
            }
            UserEvent::Deactivated => {
                db.execute(
                    "UPDATE iam_perm_users SET active = $2 WHERE user_id = $1",
                    &[user.into(), false.into()],
                )
                .await?;
                db.execute(
                    "DELETE FROM iam_perm_user_roles WHERE user_id = $1",
                    &[user.into()],
                )
                .await?;
            }
        }
        recompute(db, "user_id = $1", user).await
    }
}

async fn grant(db: &mut dyn SqlConnection, role: &str, permission: &str) -> annals::Result<()> {
    db.execute(
        "INSERT INTO iam_perm_role_grants (role_id, permission) VALUES ($1, $2) \
         ON CONFLICT (role_id, permission) DO NOTHING",
        &[role.into(), permission.into()],
    )
    .await
    .map(drop)
}

/// Rebuilds the effective permissions of the users `users_filter` selects
/// (a condition on `user_id` with `$1` bound to `key`).
async fn recompute(
    db: &mut dyn SqlConnection,
    users_filter: &'static str,
    key: &str,
) -> annals::Result<()> {
    db.execute(
        &format!("DELETE FROM iam_user_permissions WHERE {users_filter}"),
        &[key.into()],
    )
    .await?;
    db.execute(
        &format!(
            "INSERT INTO iam_user_permissions (tenant_id, user_id, permission) \
             SELECT DISTINCT u.tenant_id, u.user_id, g.permission \
             FROM iam_perm_users u \
             JOIN iam_perm_user_roles ur ON ur.user_id = u.user_id \
             JOIN iam_perm_roles r ON r.role_id = ur.role_id AND r.tenant_id = u.tenant_id \
             JOIN iam_perm_role_grants g ON g.role_id = ur.role_id \
             WHERE u.active = $2 AND u.{users_filter}"
        ),
        &[key.into(), true.into()],
    )
    .await
    .map(drop)
}

/// May `user` do `permission` in `tenant`? One primary-key lookup.
pub async fn may(
    db: &mut dyn SqlConnection,
    tenant: &str,
    user: &str,
    permission: &str,
) -> annals::Result<bool> {
    let found: Vec<String> = db
        .fetch_values(
            "SELECT permission FROM iam_user_permissions WHERE tenant_id = $1 AND user_id = $2 AND permission = $3",
            &[tenant.into(), user.into(), permission.into()],
        )
        .await?;
    Ok(!found.is_empty())
}

/// Every permission `user` has in `tenant`, sorted.
pub async fn of_user(
    db: &mut dyn SqlConnection,
    tenant: &str,
    user: &str,
) -> annals::Result<Vec<String>> {
    db.fetch_values(
        "SELECT permission FROM iam_user_permissions WHERE tenant_id = $1 AND user_id = $2 ORDER BY permission",
        &[tenant.into(), user.into()],
    )
    .await
}
