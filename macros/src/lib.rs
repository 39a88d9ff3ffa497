//! Attribute macros for Annals.
//!
//! Do not depend on this crate directly: use the re-exports of the `annals`
//! crate. The entry points (`#[event]`, `#[aggregate]`, `#[projection]`,
//! `#[handler]`) land here with the macros work; until then this crate is an
//! empty skeleton so the workspace layout is fixed from the start.
