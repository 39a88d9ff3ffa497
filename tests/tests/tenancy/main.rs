//! Tenants sharing one store: tenant identities on every backend, and
//! PostgreSQL row-level security attacked with the application's own role.
//!
//! One test binary per area: linking is most of a cold build's time.

mod postgres_tenant_isolation;
mod tenant_identity;
