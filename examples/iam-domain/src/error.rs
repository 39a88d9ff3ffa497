//! Why an IAM command is refused.

/// A refused command, naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    /// Creating something that exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What, e.g. `tenant t001`.
        what: String,
    },
    /// Acting on something that does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What, e.g. `role t001-admin`.
        what: String,
    },
    /// Any command in a suspended tenant.
    #[error("tenant {tenant} is suspended")]
    TenantSuspended {
        /// The tenant.
        tenant: String,
    },
    /// A role may only be assigned to users of its own tenant.
    #[error("role {role} belongs to tenant {role_tenant}, not to the user's tenant {user_tenant}")]
    RoleOfAnotherTenant {
        /// The role.
        role: String,
        /// Its tenant.
        role_tenant: String,
        /// The user's tenant.
        user_tenant: String,
    },
    /// The email address is already registered in the tenant.
    #[error("the email address is already used in tenant {tenant}")]
    EmailTaken {
        /// The tenant.
        tenant: String,
    },
    /// A deactivated user accepts no further commands.
    #[error("user {user} is deactivated")]
    UserDeactivated {
        /// The user.
        user: String,
    },
    /// A malformed value (empty name, email without `@`, ...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl IamError {
    pub(crate) fn not_found(what: impl std::fmt::Display) -> Self {
        IamError::NotFound {
            what: what.to_string(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        IamError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn exists(what: impl std::fmt::Display) -> Self {
        IamError::AlreadyExists {
            what: what.to_string(),
        }
    }
}
