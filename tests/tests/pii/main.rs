//! Personal data: sealed fields, subject keys, forgetting a subject, and
//! every read path.
//!
//! One test binary per area: linking is most of a cold build's time.

mod key_batching;
mod read_paths;
mod store;
