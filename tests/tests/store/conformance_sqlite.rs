//! The event-store conformance suite against the sqlite backend, unscoped
//! and as a tenant handle over a file holding another tenant's events.

annals_tests::conformance_suite!(sqlite);

mod tenant_handle {
    annals_tests::conformance_suite!(sqlite_tenant_handle);
}
