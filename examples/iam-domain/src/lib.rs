//! The IAM domain of the Annals example, written as a team adopting Annals
//! would: tenants, roles and users as event-sourced aggregates
//! ([`tenant`], [`role`], [`user`]), SQL read models that run unchanged on
//! SQLite and PostgreSQL ([`directory`], [`permissions`], [`audit`]), and
//! handlers ([`notifications`]). The application (`iam-example`) and the
//! schema generator (`iam-schema`) link it.
//!
//! Invariants that span aggregates are carried by types and decisions: a
//! command on a role or user takes an [`ActiveTenant`](tenant::ActiveTenant),
//! which only an active tenant's state hands out; role assignment reads the
//! role's own state, so a role of another tenant is refused by the user
//! aggregate; and an email address is registered once per tenant, decided
//! on the events tagged with it ([`registration`]).

pub mod audit;
pub mod directory;
mod error;
pub mod notifications;
pub mod permissions;
pub mod registration;
pub mod role;
pub mod tenant;
pub mod user;

pub use error::IamError;

/// Links this crate's registrations into a binary that names nothing else
/// from it (such as a schema generator): `inventory` only sees crates the
/// linker keeps.
pub fn link() {}
