//! Schema generation for Annals.
//!
//! This crate will read the registry that the Annals macros fill (the same
//! descriptors the runtime uses) and write SQL DDL per backend, a JSON Schema
//! per event and an event catalog; `cargo xtask schema` drives it. Until that
//! work lands it is an empty skeleton, and the SQL in `migrations/` is written
//! by hand.
