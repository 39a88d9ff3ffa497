//! Aggregates: the repository on every backend, snapshots, the caches in
//! front of the store (and a Redis outage), and the given/when/then harness.
//!
//! One test binary per area: linking is most of a cold build's time.

mod aggregate_snapshot;
mod cache;
mod cache_redis_outage;
mod decision_appends;
mod load_as_of;
mod repository_memory;
mod repository_postgres;
mod repository_sqlite;
mod testing_harness;
