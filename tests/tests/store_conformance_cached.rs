//! The event-store conformance suite against `CachingEventStore`: over
//! SQLite with the in-process cache, and over PostgreSQL with Redis. A
//! cached store must be indistinguishable from the store it wraps.

mod in_process_over_sqlite {
    annals_tests::conformance_suite!(cached_sqlite);
}

mod redis_over_postgres {
    annals_tests::conformance_suite!(cached_postgres);
}
