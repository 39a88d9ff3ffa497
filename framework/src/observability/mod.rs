//! What an operator sees of a running service: a health report for load
//! balancers and dashboards ([`health`]), and the metrics and traces Annals
//! reports ([`telemetry`]).

pub mod health;
pub mod telemetry;
