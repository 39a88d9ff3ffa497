//! The IAM domain of the Annals example: tenants and users as aggregates,
//! written with the Annals macros, and a tenant directory projection. The
//! application (`iam-example`) and the schema generator (`iam-schema`) link it.

use std::collections::BTreeSet;

use annals::prelude::*;

/// A tenant was created.
#[event(name = "iam.tenant.created")]
pub struct TenantCreated {
    /// Display name.
    pub name: String,
}

/// A tenant was suspended: its users' commands are refused.
#[event(name = "iam.tenant.suspended")]
pub struct TenantSuspended {
    /// Why.
    pub reason: String,
}

/// A tenant.
#[aggregate(name = "tenant", events(TenantCreated, TenantSuspended))]
#[derive(Default, Debug)]
pub struct Tenant {
    /// Display name, once created.
    pub name: Option<String>,
    /// Whether suspended.
    pub suspended: bool,
}

impl Apply<TenantCreated> for Tenant {
    fn apply(&mut self, event: &TenantCreated) {
        self.name = Some(event.name.clone());
    }
}

impl Apply<TenantSuspended> for Tenant {
    fn apply(&mut self, _: &TenantSuspended) {
        self.suspended = true;
    }
}

/// Why a command is refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum IamError {
    /// Creating something that exists.
    #[error("already exists")]
    AlreadyExists,
    /// Acting on something that does not exist.
    #[error("not found")]
    NotFound,
    /// Acting in a suspended tenant.
    #[error("the tenant is suspended")]
    TenantSuspended,
}

/// Create a tenant.
pub struct CreateTenant(pub String);

/// Suspend a tenant.
pub struct SuspendTenant(pub String);

impl Handle<CreateTenant> for Tenant {
    type Error = IamError;
    fn handle(&self, CreateTenant(name): &CreateTenant) -> Result<Vec<TenantEvent>, IamError> {
        match self.name {
            Some(_) => Err(IamError::AlreadyExists),
            None => Ok(vec![TenantCreated { name: name.clone() }.into()]),
        }
    }
}

impl Handle<SuspendTenant> for Tenant {
    type Error = IamError;
    fn handle(&self, SuspendTenant(reason): &SuspendTenant) -> Result<Vec<TenantEvent>, IamError> {
        match (&self.name, self.suspended) {
            (None, _) => Err(IamError::NotFound),
            (Some(_), true) => Ok(vec![]),
            (Some(_), false) => Ok(vec![
                TenantSuspended {
                    reason: reason.clone(),
                }
                .into(),
            ]),
        }
    }
}

/// Everything that happens to a user. The email is personal data.
#[event]
pub enum UserEvent {
    /// Registered in a tenant.
    #[event(name = "iam.user.registered")]
    Registered {
        /// The tenant.
        tenant: String,
        /// Email address.
        email: String,
    },
    /// A role was assigned.
    #[event(name = "iam.user.role_assigned")]
    RoleAssigned {
        /// The role.
        role: String,
    },
}

/// A user.
#[aggregate(name = "user", events(UserEvent), snapshot_every = 50)]
#[derive(Default, Debug)]
pub struct User {
    /// Tenant, once registered.
    pub tenant: Option<String>,
    /// Email.
    pub email: String,
    /// Roles.
    pub roles: BTreeSet<String>,
}

impl Apply<UserEvent> for User {
    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Registered { tenant, email } => {
                self.tenant = Some(tenant.clone());
                self.email = email.clone();
            }
            UserEvent::RoleAssigned { role } => {
                self.roles.insert(role.clone());
            }
        }
    }
}

/// Register a user (the caller checks the tenant is active).
pub struct RegisterUser {
    /// The tenant.
    pub tenant: String,
    /// Email.
    pub email: String,
}

/// Assign a role.
pub struct AssignRole(pub String);

impl Handle<RegisterUser> for User {
    type Error = IamError;
    fn handle(&self, command: &RegisterUser) -> Result<Vec<UserEvent>, IamError> {
        match self.tenant {
            Some(_) => Err(IamError::AlreadyExists),
            None => Ok(vec![UserEvent::Registered {
                tenant: command.tenant.clone(),
                email: command.email.clone(),
            }]),
        }
    }
}

impl Handle<AssignRole> for User {
    type Error = IamError;
    fn handle(&self, AssignRole(role): &AssignRole) -> Result<Vec<UserEvent>, IamError> {
        match (&self.tenant, self.roles.contains(role)) {
            (None, _) => Err(IamError::NotFound),
            (Some(_), true) => Ok(vec![]),
            (Some(_), false) => Ok(vec![UserEvent::RoleAssigned { role: role.clone() }]),
        }
    }
}

/// Tenants by name, with their user counts.
#[derive(Default, Debug)]
pub struct TenantDirectory {
    /// Tenant stream id → (name, users, suspended).
    pub tenants: std::collections::BTreeMap<String, (String, u64, bool)>,
}

#[projection(name = "iam_tenant_directory")]
impl TenantDirectory {
    fn created(&mut self, event: &TenantCreated, envelope: &RecordedEvent) {
        self.tenants.insert(
            envelope.stream_id.to_string(),
            (event.name.clone(), 0, false),
        );
    }

    fn suspended(&mut self, _: &TenantSuspended, envelope: &RecordedEvent) {
        if let Some(entry) = self.tenants.get_mut(envelope.stream_id.as_str()) {
            entry.2 = true;
        }
    }

    fn user(&mut self, event: &UserEvent) {
        if let UserEvent::Registered { tenant, .. } = event
            && let Some(entry) = self.tenants.get_mut(&format!("tenant-{tenant}"))
        {
            entry.1 += 1;
        }
    }
}

/// Links this crate's registrations into a binary that names nothing else
/// from it (such as a schema generator): `inventory` only sees crates the
/// linker keeps.
pub fn link() {}
