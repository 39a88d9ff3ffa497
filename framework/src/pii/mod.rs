//! Crypto-shredding: personal data in events, encrypted per data subject, so
//! that forgetting a subject leaves its events readable with that data
//! redacted.
//!
//! 1. Mark the fields: `#[pii(subject = user_id)]` on named fields of an
//!    `#[event]` struct (or enum variant) names the field that identifies
//!    whose data it is: a string or a number.
//!    Their types implement [`Redact`], the value they read as once
//!    forgotten.
//! 2. Wrap the store in a [`PiiEventStore`] with a [`MasterKey`] from
//!    configuration ([`MasterKey::from_env`]`("ANNALS_MASTER_KEY")`). Each
//!    subject gets an AES-256-GCM key on first use, stored wrapped by the
//!    master key in the backend ([`SubjectKeyStore`]). A subject is named
//!    within its tenant (the event's `tenant_id`): two tenants' subjects of
//!    one id have two keys.
//! 3. [`PiiEventStore::forget`] (or [`PiiEventStore::forget_in_tenant`]
//!    for another tenant's subject, from an unscoped store) destroys the
//!    subject's key, and deletes the snapshots and cache entries that may
//!    hold its data in plaintext. Every read path then yields the subject's
//!    fields redacted.
//!
//! ```
//! use annals::pii::{MasterKey, PiiEventStore};
//! use annals::prelude::*;
//! use std::sync::Arc;
//!
//! #[annals::event(name = "doc.pii.profile_changed")]
//! struct ProfileChanged {
//!     user_id: u64,
//!     #[pii(subject = user_id)]
//!     display_name: String,
//!     #[pii(subject = user_id)]
//!     phone: Option<String>,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let backend = Arc::new(InMemoryEventStore::new());
//! let store = PiiEventStore::new(backend.clone(), backend, MasterKey::generate());
//! let stream = StreamId::new("user-42")?;
//! let changed = ProfileChanged { user_id: 42, display_name: "Ada".into(), phone: Some("+1 555".into()) };
//! store.append(&stream, ExpectedVersion::Any, vec![NewEvent::from_event(&changed)?]).await?;
//!
//! store.forget("42").await?;
//! let read: ProfileChanged = store.read_stream(&stream, 1, 10).await?[0].decode()?;
//! assert_eq!(read, ProfileChanged { user_id: 42, display_name: "[redacted]".into(), phone: None });
//! # Ok(())
//! # }
//! ```

mod forget_watch;
mod key_store;
mod master_key;
mod page_on_every_core;
mod redact;
mod sealed_field;
mod store;
mod stored_members;

pub use crate::registry::PiiField;
pub(crate) use key_store::MemorySubjectKeys;
#[cfg(feature = "postgres")]
pub(crate) use key_store::restore_postgres_subject_key;
#[cfg(feature = "sqlite")]
pub(crate) use key_store::restore_sqlite_subject_key;
pub use key_store::{ForgottenSubject, StoredSubjectKey, SubjectKeyRecord, SubjectKeyStore};
pub use master_key::{MASTER_KEY_VAR, MasterKey, MasterKeyError};
pub use redact::{REDACTED_TEXT, Redact};
pub use store::{
    DEFAULT_FORGET_WATCH, DEFAULT_KEY_CACHE_SUBJECTS, DEFAULT_KEY_CACHE_TTL, Forgotten, NotReached,
    PiiEventStore,
};
