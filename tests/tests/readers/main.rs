//! Readers of the log: subscriptions, projection runners, SQL read models and
//! inline projections, handlers, publishing, and one owner per reader across
//! instances.
//!
//! One test binary per area: linking is most of a cold build's time.

mod handler_registry;
mod inline_projection;
mod jetstream;
mod projection_runner;
mod publisher;
mod reader_failover;
mod reader_ownership;
mod sql_read_model;
mod subscription;
