//! The rules that span aggregates, as decisions (`annals::decision`).
//!
//! - **An email address is held by one user per tenant.** Registering and
//!   changing an address ([`EmailClaimed`]) are decided on the user's own
//!   stream and on every event tagged with the address's claim key
//!   (registrations, and changes to and away from it), and appended on the
//!   condition that none arrived since: of two claims of one address
//!   racing, one wins and the other is refused with
//!   [`IamError::EmailTaken`]. No read model is involved and no race is
//!   left.
//! - **A role is assigned only within its own tenant.** Assigning reads the
//!   role's stream and the user's, and appends to the user's expecting the
//!   version read.
//!
//! The address is personal data (`#[pii]`), so events are not tagged with
//! it: a tag is stored in the clear and outlives forgetting the user. They
//! carry its *claim key*, an HMAC of the tenant and the address under the
//! application's secret ([`EmailKeys`]), which names the address without
//! revealing it to whoever reads the tags.

use annals::decision::Decision;
use annals::prelude::*;
use annals::store::{Criterion, EventCriteria};
use hmac::{KeyInit, Mac};

use crate::error::IamError;
use crate::role::{Role, RoleEvent};
use crate::tenant::ActiveTenant;
use crate::user::{AssignRole, ChangeEmail, RegisterUser, User, UserEvent, normalise_email};

const REGISTERED: &str = "iam.user.registered";
const EMAIL_CHANGED: &str = "iam.user.email_changed";

/// Turns addresses into claim keys under the application's secret.
#[derive(Clone)]
pub struct EmailKeys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for EmailKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmailKeys(..)")
    }
}

impl EmailKeys {
    /// Keys under `secret` (every instance of the application uses the same).
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        EmailKeys {
            secret: secret.into(),
        }
    }

    /// The claim of `email` in `tenant`: the normalised address and its key.
    pub fn claim(&self, tenant: &ActiveTenant, email: &str) -> Result<EmailClaim, IamError> {
        let address = normalise_email(email)?;
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.secret)
            .map_err(|_| IamError::invalid("email key secret", "not usable as an HMAC key"))?;
        mac.update(tenant.id().as_bytes());
        mac.update(&[0]);
        mac.update(address.as_bytes());
        let key = hex::encode(&mac.finalize().into_bytes()[..16]);
        Ok(EmailClaim { address, key })
    }
}

/// A normalised address and its claim key, made only by [`EmailKeys::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailClaim {
    /// The address, lowercase.
    pub(crate) address: String,
    /// Its claim key.
    pub(crate) key: String,
}

impl EmailClaim {
    /// What registering, changing to or away from the address is tagged with.
    fn criteria(&self) -> EventCriteria {
        EventCriteria::new()
            .or(Criterion::tagged([format!("email:{}", self.key)])
                .of_types([REGISTERED, EMAIL_CHANGED]))
            .or(Criterion::tagged([format!("released:{}", self.key)]).of_types([EMAIL_CHANGED]))
    }
}

/// A user and who else holds an address: the state of an [`EmailClaimed`].
#[derive(Debug, Default)]
pub struct ClaimState {
    /// The user deciding, from its own stream.
    pub user: User,
    /// Another user holding the address, from the events tagged with it.
    pub holder: Option<String>,
}

/// A user command that claims an address: registering, changing it.
pub trait ClaimsEmail: Send + Sync {
    /// The user, its tenant and the address claimed.
    fn claim(&self) -> (&str, &ActiveTenant, &EmailClaim);
}

impl ClaimsEmail for RegisterUser {
    fn claim(&self) -> (&str, &ActiveTenant, &EmailClaim) {
        (&self.user_id, &self.tenant, &self.email)
    }
}

impl ClaimsEmail for ChangeEmail {
    fn claim(&self) -> (&str, &ActiveTenant, &EmailClaim) {
        (&self.user_id, &self.tenant, &self.email)
    }
}

/// Runs a user command that claims an address ([`RegisterUser`],
/// [`ChangeEmail`]), unless another user of the tenant holds the address.
#[derive(Debug, Clone)]
pub struct EmailClaimed<C>(pub C);

impl<C: ClaimsEmail> Decision for EmailClaimed<C>
where
    User: Handle<C, Error = IamError>,
{
    type State = ClaimState;
    type Error = IamError;

    fn criteria(&self) -> EventCriteria {
        self.0.claim().2.criteria()
    }

    fn streams(&self) -> Vec<StreamId> {
        User::stream_id(&self.0.claim().0).into_iter().collect()
    }

    /// The user's own events into the user; other users' claims and
    /// releases of the address into the holder.
    fn evolve(&self, state: &mut ClaimState, event: &RecordedEvent) -> annals::Result<()> {
        let (user_id, _, email) = self.0.claim();
        if event.stream_id == User::stream_id(&user_id)? {
            state.user.apply_event(&event.decode::<UserEvent>()?);
            return Ok(());
        }
        let holder = Some(event.aggregate_id().to_owned());
        if event.tags.contains(&format!("email:{}", email.key)) {
            state.holder = holder;
        } else if state.holder == holder {
            state.holder = None;
        }
        Ok(())
    }

    fn decide(&self, state: &ClaimState) -> Result<Appends, IamError> {
        let (user_id, tenant, _) = self.0.claim();
        let events = state.user.handle(&self.0)?;
        if state.holder.is_some() && !events.is_empty() {
            return Err(IamError::EmailTaken {
                tenant: tenant.id().to_owned(),
            });
        }
        Ok(Appends::new().to::<User>(&user_id, events))
    }
}

/// Assigns a role to a user: the role's own state says which tenant it
/// belongs to, and the user aggregate refuses a role of another tenant.
#[derive(Debug, Clone)]
pub struct RoleAssignment {
    /// The user's tenant, active.
    pub tenant: ActiveTenant,
    /// The user.
    pub user_id: String,
    /// The role.
    pub role_id: String,
}

/// The role and the user of a [`RoleAssignment`].
#[derive(Debug, Default)]
pub struct AssignmentState {
    role: Role,
    user: User,
}

impl Decision for RoleAssignment {
    type State = AssignmentState;
    type Error = IamError;

    fn criteria(&self) -> EventCriteria {
        EventCriteria::new()
    }

    /// The role first, then the user. A role's tenant never changes, so
    /// the user's version, which the append expects, is all that can move.
    fn streams(&self) -> Vec<StreamId> {
        [
            Role::stream_id(&self.role_id),
            User::stream_id(&self.user_id),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn evolve(&self, state: &mut AssignmentState, event: &RecordedEvent) -> annals::Result<()> {
        if event.stream_id.category() == Role::NAME {
            state.role.apply_event(&event.decode::<RoleEvent>()?);
        } else {
            state.user.apply_event(&event.decode::<UserEvent>()?);
        }
        Ok(())
    }

    fn decide(&self, state: &AssignmentState) -> Result<Appends, IamError> {
        let command = AssignRole {
            tenant: self.tenant.clone(),
            role: state.role.reference(&self.role_id)?,
        };
        let events = state.user.handle(&command)?;
        Ok(Appends::new().to::<User>(&self.user_id, events))
    }
}
