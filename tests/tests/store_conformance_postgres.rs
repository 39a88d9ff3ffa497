//! The event-store conformance suite against the postgres backend.

annals_tests::conformance_suite!(postgres);
