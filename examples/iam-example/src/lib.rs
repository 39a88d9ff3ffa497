//! The Annals IAM example: an application on the IAM domain (`iam-domain`).
//! `main` parses [`config`], runs [`scenario::run`] and prints
//! [`report::render`]; the tests run the same scenario at a small size on
//! every backend.

pub mod backend;
pub mod config;
pub mod import;
pub mod report;
pub mod scenario;
pub mod service;
