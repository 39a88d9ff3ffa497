//! The event-store conformance suite against the memory backend.

annals_tests::conformance_suite!(memory);
