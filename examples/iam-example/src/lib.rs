//! The Annals IAM example: an application on the IAM domain (`iam-domain`).
//! `main` parses [`config`], runs [`scenario::run`] and prints
//! [`report::render`]; the tests run the same scenario at a small size on
//! every backend. `iam-example serve` runs [`serve`]: the same commands and
//! queries as an HTTP service ([`http`]), several instances to a database.

pub mod backend;
pub mod client;
pub mod config;
pub mod http;
pub mod import;
pub mod report;
pub mod scenario;
pub mod serve;
pub mod service;
