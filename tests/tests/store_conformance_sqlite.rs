//! The event-store conformance suite against the sqlite backend.

annals_tests::conformance_suite!(sqlite);
