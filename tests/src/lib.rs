//! Annals' shared test suites.
//!
//! - [`backends`]: a fresh, isolated store per test for each backend, plus raw
//!   access to plant bad data.
//! - [`conformance`]: the event-store conformance suite, run unchanged against
//!   every backend by [`conformance_suite!`] in `tests/store_conformance_*.rs`.
//! - [`events`]: a typed event enum written by hand against the `Event` trait.
//! - [`domain`]: a small IAM domain written with the macros.
//! - [`pii`]: a domain with personal data, over a crypto-shredding store.
//! - [`repository`]: the repository suite, run against every backend by
//!   [`repository_suite!`] in `tests/repository_*.rs`.
//!
//! PostgreSQL tests need a server: `cargo xtask test` starts one and passes its
//! URL in `ANNALS_TEST_DATABASE_URL`. Without it they fail, saying so.

pub mod appends;
pub mod backends;
pub mod conformance;
pub mod connection_cut;
pub mod domain;
pub mod events;
pub mod pii;
pub mod repository;
pub mod subscription;

/// The repository README's Rust examples, compiled as doctests so the
/// README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}
