//! The event-store conformance suite against the postgres backend: the
//! unscoped store, and a tenant handle connected as an application role
//! (row-level security confining every statement).

annals_tests::conformance_suite!(postgres);

mod tenant_handle {
    annals_tests::conformance_suite!(postgres_tenant_handle);
}
