//! The IAM domain of the Annals example, written as a team adopting Annals
//! would: tenants, roles and users as event-sourced aggregates
//! ([`tenant`], [`role`], [`user`]), SQL read models that run unchanged on
//! SQLite and PostgreSQL ([`directory`], [`permissions`], [`audit`]), and
//! handlers ([`notifications`]). The application (`iam-example`) and the
//! schema generator (`iam-schema`) link it.
//!
//! Invariants that span aggregates are carried by types: a command on a role
//! or user takes an [`ActiveTenant`](tenant::ActiveTenant), which only an
//! active tenant's state hands out, and role assignment takes the role's own
//! [`RoleRef`](role::RoleRef), so a role of another tenant is refused by the
//! user aggregate. Email uniqueness is checked against the directory read
//! model; [`directory`] documents the remaining race and how it is surfaced.

pub mod audit;
pub mod directory;
mod error;
mod ids;
pub mod notifications;
pub mod permissions;
pub mod role;
pub mod tenant;
pub mod user;

pub use error::IamError;

/// Links this crate's registrations into a binary that names nothing else
/// from it (such as a schema generator): `inventory` only sees crates the
/// linker keeps.
pub fn link() {}
