//! The event store on every backend: the conformance suite over each store
//! setup, properties, migrations, the gap-safe global log, group commit,
//! COPY, restarts and crashes, the hash chain, imports, and decoding
//! fuzzed rows.
//!
//! One test binary per area: linking is most of a cold build's time.

mod conformance_cached;
mod conformance_generated;
mod conformance_memory;
mod conformance_postgres;
mod conformance_sqlite;
mod crash_safety;
mod decode_fuzz;
mod hash_chain;
mod import;
mod migrations;
mod postgres_copy;
mod postgres_global_log;
mod postgres_group_commit;
mod postgres_query_plans;
mod postgres_replica;
mod postgres_restart;
mod postgres_restore;
mod properties;
mod redis_cluster;
mod sqlite_group_commit;
