//! The application service: commands that span aggregates, each carrying
//! who asks and for which request. It loads what a command needs (the
//! tenant's state for [`ActiveTenant`]) and runs it through the repository,
//! or, for the rules across aggregates (an address once per tenant, a role
//! of the user's tenant), through a decision (`iam_domain::registration`).

use std::collections::BTreeSet;
use std::sync::Arc;

use annals::CommandError;
use annals::aggregate::snapshot::SnapshotSettings;
use annals::cache::EventCache;
use annals::prelude::*;
use anyhow::Result;
use iam_domain::IamError;
use iam_domain::registration::{EmailClaim, EmailClaimed, EmailKeys, RoleAssignment};
use iam_domain::role::{DefineRole, GrantPermission, RevokePermission, Role};
use iam_domain::tenant::{ActiveTenant, CreateTenant, ReactivateTenant, SuspendTenant, Tenant};
use iam_domain::user::{ChangeEmail, DeactivateUser, RegisterUser, RevokeRole, User};
use uuid::Uuid;

use crate::backend::Backend;

/// Who asks, and in which request: every command carries both, and every
/// event it produces records them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The acting user or system.
    pub actor: String,
    /// The request all its commands belong to.
    pub correlation_id: Uuid,
    /// The request id as the client sent it, when it is not a UUID (kept
    /// in the events' `correlation-key` header).
    pub correlation_key: Option<String>,
    /// The command's idempotency key: given again, the command is not
    /// decided again (see `Metadata::with_command_id`).
    pub command_id: Option<String>,
}

impl Caller {
    /// A new request by `actor`.
    pub fn new(actor: impl Into<String>) -> Self {
        Caller {
            actor: actor.into(),
            correlation_id: Uuid::now_v7(),
            correlation_key: None,
            command_id: None,
        }
    }

    /// A request by `actor` with the client's request id (any text; a UUID
    /// is taken as it is, other text maps to the same UUID in every
    /// process) and idempotency key.
    pub fn for_request(
        actor: impl Into<String>,
        request_id: Option<&str>,
        command_id: Option<String>,
    ) -> Self {
        let mut caller = Caller::new(actor);
        if let Some(key) = request_id {
            caller.correlation_id = annals::event::metadata::correlation_uuid(key);
            caller.correlation_key = Uuid::parse_str(key).is_err().then(|| key.to_owned());
        }
        caller.command_id = command_id;
        caller
    }

    /// The metadata of its events in `tenant`.
    pub fn metadata(&self, tenant: &str) -> Metadata {
        let mut metadata = match &self.correlation_key {
            Some(key) => Metadata::new().with_correlation_key(key),
            None => Metadata::new().with_correlation_id(self.correlation_id),
        }
        .with_actor(self.actor.clone())
        .with_tenant(tenant);
        if let Some(command_id) = &self.command_id {
            metadata = metadata.with_command_id(command_id.clone());
        }
        metadata
    }
}

/// A command's outcome: done, or refused by the domain with a reason.
pub type Outcome = std::result::Result<(), IamError>;

/// The IAM application service.
pub struct Iam {
    /// Tenants.
    pub tenants: Repository<Tenant>,
    /// Roles.
    pub roles: Repository<Role>,
    /// Users (cached, snapshotted).
    pub users: Repository<User>,
    /// Decisions across aggregates.
    pub decisions: Decisions,
    /// The claim keys of email addresses.
    pub email_keys: EmailKeys,
}

/// The secret of email claim keys: `$IAM_EMAIL_CLAIM_SECRET`, else a fixed
/// demonstration value. Every instance of the application must use the same
/// one; in production, take it from the secret store.
pub fn email_keys() -> EmailKeys {
    let secret = std::env::var("IAM_EMAIL_CLAIM_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())
        .unwrap_or_else(|| "iam-example: demonstration email claim secret".to_owned());
    EmailKeys::new(secret)
}

/// A command's or decision's outcome: done, refused by the domain, or failed.
fn outcome<T>(result: std::result::Result<T, CommandError<IamError>>) -> Result<Outcome> {
    match result {
        Ok(_) => Ok(Ok(())),
        Err(CommandError::Rejected(error)) => Ok(Err(error)),
        Err(error) => Err(error.into()),
    }
}

impl Iam {
    /// Repositories over the backend's store, with its cache on the busy ones.
    pub fn new(backend: &Backend, cache: Arc<dyn EventCache>) -> Self {
        Iam {
            tenants: Repository::new(backend.store.clone()).with_cache(cache.clone()),
            roles: Repository::new(backend.store.clone()).with_cache(cache.clone()),
            users: Repository::new(backend.store.clone())
                .with_cache(cache)
                .with_snapshots(SnapshotSettings::new()),
            decisions: Decisions::new(backend.store.clone()),
            email_keys: email_keys(),
        }
    }

    /// Creates a tenant (its stream: `tenant-{id}`).
    pub async fn create_tenant(
        &self,
        caller: &Caller,
        tenant: &str,
        name: &str,
    ) -> Result<Outcome> {
        let command = CreateTenant {
            id: tenant.to_owned(),
            name: name.to_owned(),
        };
        outcome(
            self.tenants
                .execute(tenant, &command, caller.metadata(tenant))
                .await,
        )
    }

    /// Defines a role of an active tenant with its first permissions.
    pub async fn define_role(
        &self,
        caller: &Caller,
        tenant: &str,
        role: &str,
        name: &str,
        permissions: BTreeSet<String>,
    ) -> Result<Outcome> {
        let active = match self.active_tenant(tenant).await? {
            Ok(active) => active,
            Err(refused) => return Ok(Err(refused)),
        };
        let command = DefineRole {
            tenant: active,
            name: name.to_owned(),
            permissions,
        };
        outcome(
            self.roles
                .execute(role, &command, caller.metadata(tenant))
                .await,
        )
    }

    /// Deactivates `user` of `tenant`.
    pub async fn deactivate_user(
        &self,
        caller: &Caller,
        tenant: &str,
        user: &str,
    ) -> Result<Outcome> {
        let active = match self.active_tenant(tenant).await? {
            Ok(active) => active,
            Err(refused) => return Ok(Err(refused)),
        };
        let command = DeactivateUser { tenant: active };
        outcome(
            self.users
                .execute(user, &command, caller.metadata(tenant))
                .await,
        )
    }

    /// The proof that `tenant` is active, or why not.
    pub async fn active_tenant(
        &self,
        tenant: &str,
    ) -> Result<std::result::Result<ActiveTenant, IamError>> {
        Ok(self.tenants.load(tenant).await?.state.active(tenant))
    }

    /// The active tenant and the claim of `email` in it, or why not.
    async fn claim(
        &self,
        tenant: &str,
        email: &str,
    ) -> Result<std::result::Result<(ActiveTenant, EmailClaim), IamError>> {
        Ok(match self.active_tenant(tenant).await? {
            Ok(active) => self
                .email_keys
                .claim(&active, email)
                .map(|claim| (active, claim)),
            Err(refused) => Err(refused),
        })
    }

    /// Registers a user in an active tenant, unless another user of the
    /// tenant holds the address (decided on the events tagged with it:
    /// of two racing registrations, one wins).
    pub async fn register_user(
        &self,
        caller: &Caller,
        tenant: &str,
        user: &str,
        email: &str,
        display_name: &str,
    ) -> Result<Outcome> {
        let (active, email) = match self.claim(tenant, email).await? {
            Ok(claim) => claim,
            Err(refused) => return Ok(Err(refused)),
        };
        let registration = EmailClaimed(RegisterUser {
            tenant: active,
            user_id: user.to_owned(),
            email,
            display_name: display_name.to_owned(),
        });
        outcome(
            self.decisions
                .execute(&registration, caller.metadata(tenant))
                .await,
        )
    }

    /// Changes `user`'s email address, unless another user of the tenant
    /// holds it (decided as a registration is).
    pub async fn change_email(
        &self,
        caller: &Caller,
        tenant: &str,
        user: &str,
        email: &str,
    ) -> Result<Outcome> {
        let (active, email) = match self.claim(tenant, email).await? {
            Ok(claim) => claim,
            Err(refused) => return Ok(Err(refused)),
        };
        let change = EmailClaimed(ChangeEmail {
            tenant: active,
            user_id: user.to_owned(),
            email,
        });
        outcome(
            self.decisions
                .execute(&change, caller.metadata(tenant))
                .await,
        )
    }

    /// Assigns `role` (any tenant's: the decision reads the role's own
    /// state, and the user aggregate refuses another tenant's role) to
    /// `user` of `tenant`.
    pub async fn assign_role(
        &self,
        caller: &Caller,
        tenant: &str,
        user: &str,
        role: &str,
    ) -> Result<Outcome> {
        let active = match self.active_tenant(tenant).await? {
            Ok(active) => active,
            Err(refused) => return Ok(Err(refused)),
        };
        let assignment = RoleAssignment {
            tenant: active,
            user_id: user.to_owned(),
            role_id: role.to_owned(),
        };
        outcome(
            self.decisions
                .execute(&assignment, caller.metadata(tenant))
                .await,
        )
    }

    /// Revokes `role` from `user` of `tenant`.
    pub async fn revoke_role(
        &self,
        caller: &Caller,
        tenant: &str,
        user: &str,
        role: &str,
    ) -> Result<Outcome> {
        let active = match self.active_tenant(tenant).await? {
            Ok(active) => active,
            Err(refused) => return Ok(Err(refused)),
        };
        let command = RevokeRole {
            tenant: active,
            role: role.to_owned(),
        };
        outcome(
            self.users
                .execute(user, &command, caller.metadata(tenant))
                .await,
        )
    }

    /// Grants (`grant = true`) or revokes a permission of a role.
    pub async fn change_permission(
        &self,
        caller: &Caller,
        tenant: &str,
        role: &str,
        permission: &str,
        grant: bool,
    ) -> Result<Outcome> {
        let active = match self.active_tenant(tenant).await? {
            Ok(active) => active,
            Err(refused) => return Ok(Err(refused)),
        };
        let metadata = caller.metadata(tenant);
        let permission = permission.to_owned();
        if grant {
            let command = GrantPermission {
                tenant: active,
                permission,
            };
            outcome(self.roles.execute(role, &command, metadata).await)
        } else {
            let command = RevokePermission {
                tenant: active,
                permission,
            };
            outcome(self.roles.execute(role, &command, metadata).await)
        }
    }

    /// Suspends (`suspend = true`) or reactivates a tenant.
    pub async fn set_suspended(
        &self,
        caller: &Caller,
        tenant: &str,
        suspend: bool,
        reason: &str,
    ) -> Result<Outcome> {
        let metadata = caller.metadata(tenant);
        if suspend {
            let command = SuspendTenant {
                reason: reason.to_owned(),
            };
            outcome(self.tenants.execute(tenant, &command, metadata).await)
        } else {
            outcome(
                self.tenants
                    .execute(tenant, &ReactivateTenant, metadata)
                    .await,
            )
        }
    }
}
