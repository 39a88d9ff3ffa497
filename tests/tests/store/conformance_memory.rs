//! The event-store conformance suite against the memory backend, unscoped
//! and as a tenant handle over a store holding another tenant's events.

annals_tests::conformance_suite!(memory);

mod tenant_handle {
    annals_tests::conformance_suite!(memory_tenant_handle);
}
