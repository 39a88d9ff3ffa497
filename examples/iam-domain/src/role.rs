//! Roles: a named set of permissions within one tenant.

use std::collections::BTreeSet;

use annals::prelude::*;

use crate::error::IamError;
use crate::tenant::ActiveTenant;

/// Everything that happens to a role.
#[event]
pub enum RoleEvent {
    /// A role was defined in a tenant with its first permissions.
    #[event(name = "iam.role.defined")]
    Defined {
        /// The tenant it belongs to.
        tenant: String,
        /// Display name.
        name: String,
        /// Its permissions, such as `users.read`.
        permissions: BTreeSet<String>,
    },
    /// A permission was granted to the role.
    #[event(name = "iam.role.permission_granted")]
    PermissionGranted {
        /// The permission.
        permission: String,
    },
    /// A permission was revoked from the role.
    #[event(name = "iam.role.permission_revoked")]
    PermissionRevoked {
        /// The permission.
        permission: String,
    },
}

/// A role's state.
#[aggregate(name = "role", events(RoleEvent), snapshot_every = 100)]
#[derive(Default, Debug, Clone)]
pub struct Role {
    /// Its tenant, once defined.
    pub tenant: Option<String>,
    /// Display name.
    pub name: String,
    /// Its permissions.
    pub permissions: BTreeSet<String>,
}

impl Apply<RoleEvent> for Role {
    fn apply(&mut self, event: &RoleEvent) {
        match event {
            RoleEvent::Defined {
                tenant,
                name,
                permissions,
            } => {
                self.tenant = Some(tenant.clone());
                self.name = name.clone();
                self.permissions = permissions.clone();
            }
            RoleEvent::PermissionGranted { permission } => {
                self.permissions.insert(permission.clone());
            }
            RoleEvent::PermissionRevoked { permission } => {
                self.permissions.remove(permission);
            }
        }
    }
}

/// What a user command needs to know of a role: its id and tenant, read
/// from the role's own state by [`Role::reference`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRef {
    /// The role id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
}

impl Role {
    /// The reference user commands take, if the role is defined.
    pub fn reference(&self, id: &str) -> Result<RoleRef, IamError> {
        let tenant = self
            .tenant
            .clone()
            .ok_or_else(|| IamError::not_found(format!("role {id}")))?;
        Ok(RoleRef {
            id: id.to_owned(),
            tenant,
        })
    }

    fn in_tenant(&self, tenant: &ActiveTenant) -> Result<(), IamError> {
        match &self.tenant {
            None => Err(IamError::not_found("role")),
            Some(own) if own != tenant.id() => Err(IamError::not_found(format!(
                "role in tenant {}",
                tenant.id()
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// Define a role in an active tenant.
#[derive(Debug, Clone)]
pub struct DefineRole {
    /// The tenant.
    pub tenant: ActiveTenant,
    /// Display name.
    pub name: String,
    /// Its first permissions.
    pub permissions: BTreeSet<String>,
}

/// Grant a permission to a role.
#[derive(Debug, Clone)]
pub struct GrantPermission {
    /// The role's tenant, active.
    pub tenant: ActiveTenant,
    /// The permission.
    pub permission: String,
}

/// Revoke a permission from a role.
#[derive(Debug, Clone)]
pub struct RevokePermission {
    /// The role's tenant, active.
    pub tenant: ActiveTenant,
    /// The permission.
    pub permission: String,
}

/// Permissions are `area.action`: lowercase letters, digits, `_` and one dot.
pub fn check_permission(permission: &str) -> Result<(), IamError> {
    let valid = permission.split_once('.').is_some_and(|(area, action)| {
        let part = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        part(area) && part(action)
    });
    if valid {
        Ok(())
    } else {
        Err(IamError::invalid(
            "permission",
            format!("{permission:?} is not of the form area.action"),
        ))
    }
}

#[commands]
impl Role {
    fn define_role(&self, command: DefineRole) -> Result<Vec<RoleEvent>, IamError> {
        if self.tenant.is_some() {
            return Err(IamError::exists(format!("role {}", command.name)));
        }
        command
            .permissions
            .iter()
            .try_for_each(|p| check_permission(p))?;
        Ok(vec![RoleEvent::Defined {
            tenant: command.tenant.id().to_owned(),
            name: command.name,
            permissions: command.permissions,
        }])
    }

    fn grant_permission(&self, command: GrantPermission) -> Result<Vec<RoleEvent>, IamError> {
        self.in_tenant(&command.tenant)?;
        check_permission(&command.permission)?;
        if self.permissions.contains(&command.permission) {
            return Ok(vec![]);
        }
        Ok(vec![RoleEvent::PermissionGranted {
            permission: command.permission,
        }])
    }

    fn revoke_permission(&self, command: RevokePermission) -> Result<Vec<RoleEvent>, IamError> {
        self.in_tenant(&command.tenant)?;
        if !self.permissions.contains(&command.permission) {
            return Ok(vec![]);
        }
        Ok(vec![RoleEvent::PermissionRevoked {
            permission: command.permission,
        }])
    }
}
