//! Tenants: create, rename, suspend, reactivate. A suspended tenant refuses
//! every command for its roles and users; the proof that a tenant is active
//! is an [`ActiveTenant`], which only a loaded, active [`Tenant`] hands out.

use annals::prelude::*;

use crate::error::IamError;

/// Everything that happens to a tenant.
#[event]
pub enum TenantEvent {
    /// A tenant was created.
    #[event(name = "iam.tenant.created")]
    Created {
        /// Display name.
        name: String,
    },
    /// A tenant was renamed.
    #[event(name = "iam.tenant.renamed")]
    Renamed {
        /// The new display name.
        name: String,
    },
    /// A tenant was suspended: its commands are refused until reactivated.
    #[event(name = "iam.tenant.suspended")]
    Suspended {
        /// Why.
        reason: String,
    },
    /// A suspended tenant was reactivated.
    #[event(name = "iam.tenant.reactivated")]
    Reactivated,
}

/// A tenant's state.
#[aggregate(name = "tenant", events(TenantEvent))]
#[derive(Default, Debug, Clone)]
pub struct Tenant {
    /// Display name, once created.
    pub name: Option<String>,
    /// Whether suspended.
    pub suspended: bool,
}

impl Apply<TenantEvent> for Tenant {
    fn apply(&mut self, event: &TenantEvent) {
        match event {
            TenantEvent::Created { name } | TenantEvent::Renamed { name } => {
                self.name = Some(name.clone());
            }
            TenantEvent::Suspended { .. } => self.suspended = true,
            TenantEvent::Reactivated => self.suspended = false,
        }
    }
}

/// Proof, for commands on roles and users, that a tenant exists and is
/// active. Only [`Tenant::active`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveTenant(String);

impl ActiveTenant {
    /// The tenant id.
    pub fn id(&self) -> &str {
        &self.0
    }
}

impl Tenant {
    /// The proof that tenant `id` (this state) exists and is active.
    pub fn active(&self, id: &str) -> Result<ActiveTenant, IamError> {
        match (&self.name, self.suspended) {
            (None, _) => Err(IamError::not_found(format!("tenant {id}"))),
            (Some(_), true) => Err(IamError::TenantSuspended {
                tenant: id.to_owned(),
            }),
            (Some(_), false) => Ok(ActiveTenant(id.to_owned())),
        }
    }
}

/// Create a tenant.
#[derive(Debug, Clone)]
pub struct CreateTenant {
    /// Its id (also its stream: `tenant-{id}`).
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Rename a tenant.
#[derive(Debug, Clone)]
pub struct RenameTenant(pub String);

/// Suspend a tenant.
#[derive(Debug, Clone)]
pub struct SuspendTenant {
    /// Why.
    pub reason: String,
}

/// Reactivate a suspended tenant.
#[derive(Debug, Clone)]
pub struct ReactivateTenant;

fn check_name(name: &str) -> Result<(), IamError> {
    if name.trim().is_empty() {
        return Err(IamError::invalid("tenant name", "it is empty"));
    }
    Ok(())
}

#[commands]
impl Tenant {
    fn create_tenant(&self, command: CreateTenant) -> Result<Vec<TenantEvent>, IamError> {
        check_name(&command.name)?;
        match self.name {
            Some(_) => Err(IamError::exists(format!("tenant {}", command.id))),
            None => Ok(vec![TenantEvent::Created { name: command.name }]),
        }
    }

    fn suspend_tenant(&self, command: SuspendTenant) -> Result<Vec<TenantEvent>, IamError> {
        match (&self.name, self.suspended) {
            (None, _) => Err(IamError::not_found("tenant")),
            (Some(_), true) => Ok(vec![]),
            (Some(_), false) => Ok(vec![TenantEvent::Suspended {
                reason: command.reason,
            }]),
        }
    }

    fn reactivate_tenant(&self, _: ReactivateTenant) -> Result<Vec<TenantEvent>, IamError> {
        match (&self.name, self.suspended) {
            (None, _) => Err(IamError::not_found("tenant")),
            (Some(_), false) => Ok(vec![]),
            (Some(_), true) => Ok(vec![TenantEvent::Reactivated]),
        }
    }

    fn rename(&self, RenameTenant(name): RenameTenant) -> Result<Vec<TenantEvent>, IamError> {
        check_name(&name)?;
        match &self.name {
            None => Err(IamError::not_found("tenant")),
            Some(current) if *current == name => Ok(vec![]),
            Some(_) => Ok(vec![TenantEvent::Renamed { name }]),
        }
    }
}
