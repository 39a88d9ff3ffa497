//! Users: register, change email, assign and revoke roles, deactivate. The
//! email address and display name are personal data: `#[pii(subject =
//! user_id)]` encrypts them under the user's key when the store is an
//! `annals::pii::PiiEventStore`, and forgetting the user redacts them.

use std::collections::BTreeSet;

use annals::prelude::*;

use crate::error::IamError;
use crate::registration::EmailClaim;
use crate::role::RoleRef;
use crate::tenant::ActiveTenant;

/// Everything that happens to a user.
#[event]
pub enum UserEvent {
    /// Registered in a tenant. `email` and `display_name` are personal data;
    /// the event is tagged with the address's claim key (see
    /// [`crate::registration`]).
    #[event(name = "iam.user.registered", tags(email = email_key))]
    Registered {
        /// The tenant.
        tenant: String,
        /// The user: the data subject of the personal data below.
        #[serde(default)]
        user_id: String,
        /// Email address (lowercase). Personal data.
        #[pii(subject = user_id)]
        email: String,
        /// Display name. Personal data.
        #[pii(subject = user_id)]
        display_name: String,
        /// The address's claim key: a keyed digest, not personal data by
        /// itself, that survives forgetting the user.
        #[serde(default)]
        email_key: String,
    },
    /// The email address changed. Personal data. Tagged with the new
    /// address's claim key and the released one's.
    #[event(
        name = "iam.user.email_changed",
        tags(email = email_key, released = previous_key)
    )]
    EmailChanged {
        /// The user: the data subject.
        #[serde(default)]
        user_id: String,
        /// The new address (lowercase).
        #[pii(subject = user_id)]
        email: String,
        /// The new address's claim key.
        #[serde(default)]
        email_key: String,
        /// The claim key of the address it replaces.
        #[serde(default)]
        previous_key: String,
    },
    /// A role of the user's tenant was assigned.
    #[event(name = "iam.user.role_assigned")]
    RoleAssigned {
        /// The role id.
        role: String,
    },
    /// A role was revoked.
    #[event(name = "iam.user.role_revoked")]
    RoleRevoked {
        /// The role id.
        role: String,
    },
    /// The user was deactivated: no roles, no further commands.
    #[event(name = "iam.user.deactivated")]
    Deactivated,
}

/// A user's state.
#[aggregate(name = "user", events(UserEvent), snapshot_every = 50)]
#[derive(Default, Debug, Clone)]
pub struct User {
    /// The tenant, once registered.
    pub tenant: Option<String>,
    /// Email address.
    pub email: String,
    /// Its claim key.
    #[serde(default)]
    pub email_key: String,
    /// Display name.
    pub display_name: String,
    /// Assigned role ids.
    pub roles: BTreeSet<String>,
    /// Whether deactivated.
    pub deactivated: bool,
}

impl Apply<UserEvent> for User {
    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Registered {
                tenant,
                email,
                display_name,
                email_key,
                ..
            } => {
                self.tenant = Some(tenant.clone());
                self.email = email.clone();
                self.email_key = email_key.clone();
                self.display_name = display_name.clone();
            }
            UserEvent::EmailChanged {
                email, email_key, ..
            } => {
                self.email = email.clone();
                self.email_key = email_key.clone();
            }
            UserEvent::RoleAssigned { role } => {
                self.roles.insert(role.clone());
            }
            UserEvent::RoleRevoked { role } => {
                self.roles.remove(role);
            }
            UserEvent::Deactivated => {
                self.deactivated = true;
                self.roles.clear();
            }
        }
    }
}

/// Register a user in an active tenant. The address is unique in the
/// tenant when registered through [`crate::registration::EmailClaimed`].
#[derive(Debug, Clone)]
pub struct RegisterUser {
    /// The tenant.
    pub tenant: ActiveTenant,
    /// The user's id (the subject of its personal data).
    pub user_id: String,
    /// Email address, normalised (see [`EmailKeys::claim`](crate::registration::EmailKeys::claim)).
    pub email: EmailClaim,
    /// Display name.
    pub display_name: String,
}

/// Change a user's email address. The address is unique in the tenant when
/// changed through [`crate::registration::EmailClaimed`]; the events carry
/// the claim keys of the new and the released address, so claims decided
/// later see both. (The example's bulk import decides it on the user alone:
/// its addresses are unique by construction.)
#[derive(Debug, Clone)]
pub struct ChangeEmail {
    /// The user's tenant, active.
    pub tenant: ActiveTenant,
    /// The user's id (the subject of its personal data).
    pub user_id: String,
    /// The new address.
    pub email: EmailClaim,
}

/// Assign a role.
#[derive(Debug, Clone)]
pub struct AssignRole {
    /// The user's tenant, active.
    pub tenant: ActiveTenant,
    /// The role, as its own state describes it.
    pub role: RoleRef,
}

/// Revoke a role.
#[derive(Debug, Clone)]
pub struct RevokeRole {
    /// The user's tenant, active.
    pub tenant: ActiveTenant,
    /// The role id.
    pub role: String,
}

/// Deactivate a user.
#[derive(Debug, Clone)]
pub struct DeactivateUser {
    /// The user's tenant, active.
    pub tenant: ActiveTenant,
}

/// Lowercases and checks an email address.
pub fn normalise_email(email: &str) -> Result<String, IamError> {
    let email = email.trim().to_lowercase();
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(IamError::invalid("email", "expected name@domain.tld"))
    }
}

impl User {
    /// Checks the user is registered in `tenant` and still active.
    fn active_in(&self, tenant: &ActiveTenant) -> Result<(), IamError> {
        match &self.tenant {
            None => Err(IamError::not_found("user")),
            Some(own) if own != tenant.id() => Err(IamError::not_found(format!(
                "user in tenant {}",
                tenant.id()
            ))),
            Some(_) if self.deactivated => Err(IamError::UserDeactivated {
                user: self.email.clone(),
            }),
            Some(_) => Ok(()),
        }
    }
}

#[commands]
impl User {
    fn register_user(&self, command: RegisterUser) -> Result<Vec<UserEvent>, IamError> {
        if self.tenant.is_some() {
            return Err(IamError::exists("user"));
        }
        if command.display_name.trim().is_empty() {
            return Err(IamError::invalid("display name", "it is empty"));
        }
        Ok(vec![UserEvent::Registered {
            tenant: command.tenant.id().to_owned(),
            user_id: command.user_id,
            email: command.email.address,
            display_name: command.display_name,
            email_key: command.email.key,
        }])
    }

    fn change_email(&self, command: ChangeEmail) -> Result<Vec<UserEvent>, IamError> {
        self.active_in(&command.tenant)?;
        if command.email.address == self.email {
            return Ok(vec![]);
        }
        Ok(vec![UserEvent::EmailChanged {
            user_id: command.user_id,
            email: command.email.address,
            email_key: command.email.key,
            previous_key: self.email_key.clone(),
        }])
    }

    fn assign_role(&self, command: AssignRole) -> Result<Vec<UserEvent>, IamError> {
        self.active_in(&command.tenant)?;
        if command.role.tenant != command.tenant.id() {
            return Err(IamError::RoleOfAnotherTenant {
                role: command.role.id,
                role_tenant: command.role.tenant.clone(),
                user_tenant: command.tenant.id().to_owned(),
            });
        }
        if self.roles.contains(&command.role.id) {
            return Ok(vec![]);
        }
        Ok(vec![UserEvent::RoleAssigned {
            role: command.role.id,
        }])
    }

    fn revoke_role(&self, command: RevokeRole) -> Result<Vec<UserEvent>, IamError> {
        self.active_in(&command.tenant)?;
        if !self.roles.contains(&command.role) {
            return Ok(vec![]);
        }
        Ok(vec![UserEvent::RoleRevoked { role: command.role }])
    }

    fn deactivate_user(&self, command: DeactivateUser) -> Result<Vec<UserEvent>, IamError> {
        self.active_in(&command.tenant)?;
        Ok(vec![UserEvent::Deactivated])
    }
}
