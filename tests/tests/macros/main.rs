//! What the macros generate at run time: events, projections, the registry,
//! and the schema generated from it.
//!
//! One test binary per area: linking is most of a cold build's time.

mod event;
mod generated_schema;
mod projection;
mod registry;
