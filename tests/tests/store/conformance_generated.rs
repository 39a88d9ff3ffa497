//! The event-store conformance suite on tables that `annals-codegen`
//! generated and a migration tool applied before the store connected:
//! PostgreSQL partitioned by stream hash (with table prefix `iam_`) and by
//! tenant, and SQLite with table prefix `iam_`. The store must find them
//! current and behave exactly as on the tables it creates itself.

mod partitioned_by_stream {
    annals_tests::conformance_suite!(postgres_partitioned_by_stream);
}

mod partitioned_by_tenant {
    annals_tests::conformance_suite!(postgres_partitioned_by_tenant);
}

mod sqlite_prefixed {
    annals_tests::conformance_suite!(sqlite_generated_prefixed);
}
