//! The event-store conformance suite against the wrapping stores:
//! `CachingEventStore` over SQLite with the in-process cache and over
//! PostgreSQL with Redis, and `PiiEventStore` over SQLite. A wrapped store
//! must be indistinguishable from the store it wraps.

mod in_process_over_sqlite {
    annals_tests::conformance_suite!(cached_sqlite);
}

mod redis_over_postgres {
    annals_tests::conformance_suite!(cached_postgres);
}

mod pii_over_sqlite {
    annals_tests::conformance_suite!(pii_sqlite);
}
