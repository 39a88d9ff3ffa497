//! Crypto-shredding fixtures: a member aggregate whose email and display
//! name are personal data, a projection of them, and a [`PiiEventStore`]
//! over each backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use annals::pii::{MasterKey, PiiEventStore, SubjectKeyStore};
use annals::prelude::*;
use annals::{Apply, Handle};

use crate::backends::TestStore;

/// A member joined; `email` and `display_name` belong to `member_id`.
#[event(name = "test.pii.member_joined")]
pub struct MemberJoined {
    /// The data subject.
    pub member_id: String,
    /// Personal data.
    #[pii(subject = member_id)]
    pub email: String,
    /// Personal data, under a renamed JSON key.
    #[pii(subject = member_id)]
    #[serde(rename = "name")]
    pub display_name: String,
    /// Not personal data.
    pub plan: String,
}

/// A member's state.
#[aggregate(name = "member", events(MemberJoined))]
#[derive(Default, Debug, PartialEq)]
pub struct Member {
    /// Email, empty before joining.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Plan.
    pub plan: String,
}

impl Apply<MemberJoined> for Member {
    fn apply(&mut self, event: &MemberJoined) {
        self.email = event.email.clone();
        self.display_name = event.display_name.clone();
        self.plan = event.plan.clone();
    }
}

/// The command that makes a member join.
#[derive(Debug, Clone)]
pub struct Join {
    /// The member id (and data subject).
    pub member_id: String,
    /// Their email.
    pub email: String,
}

impl Handle<Join> for Member {
    type Error = std::convert::Infallible;
    fn handle(&self, join: &Join) -> Result<Vec<MemberJoined>, Self::Error> {
        Ok(vec![joined(&join.member_id, &join.email)])
    }
}

/// A `MemberJoined` with display name `Name of {member_id}` on plan `pro`.
pub fn joined(member_id: &str, email: &str) -> MemberJoined {
    MemberJoined {
        member_id: member_id.to_owned(),
        email: email.to_owned(),
        display_name: format!("Name of {member_id}"),
        plan: "pro".to_owned(),
    }
}

/// Appends a `MemberJoined` to stream `member-{id}` for each id (email
/// `{id}@example.test`), through `pii`, so each member's fields are sealed
/// under a key of its own.
pub async fn join_members(pii: &annals::pii::PiiEventStore, members: &[&str]) {
    for member in members {
        let event =
            annals::NewEvent::from_event(&joined(member, &format!("{member}@example.test")))
                .unwrap_or_else(|error| panic!("event: {error}"));
        let stream = annals::StreamId::new(format!("member-{member}"))
            .unwrap_or_else(|error| panic!("stream id: {error}"));
        annals::store::EventStore::append(
            pii,
            &stream,
            annals::ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .unwrap_or_else(|error| panic!("append personal data of {member}: {error}"));
    }
}

/// Emails by member id, as a projection sees them.
#[derive(Default, Debug)]
pub struct MemberEmails {
    /// member id -> email.
    pub emails: BTreeMap<String, String>,
}

#[projection(name = "test_pii_member_emails")]
impl MemberEmails {
    fn joined(&mut self, event: &MemberJoined) {
        self.emails
            .insert(event.member_id.clone(), event.email.clone());
    }
}

/// A fresh backend with a [`PiiEventStore`] over it.
pub struct PiiBackend {
    /// The crypto-shredding store.
    pub pii: Arc<PiiEventStore>,
    /// The backend underneath (ciphertext), with raw access.
    pub backend: TestStore,
}

impl PiiBackend {
    /// Wraps `backend`, whose store must also be its key store.
    pub fn over(backend: TestStore, keys: Arc<dyn SubjectKeyStore>) -> Self {
        let pii = PiiEventStore::new(backend.store.clone(), keys, MasterKey::generate());
        PiiBackend {
            pii: Arc::new(pii),
            backend,
        }
    }

    /// Over a new in-memory store.
    pub async fn memory() -> Self {
        let store = Arc::new(InMemoryEventStore::new());
        let mut backend = TestStore::memory().await;
        backend.store = store.clone();
        Self::over(backend, store)
    }

    /// Over a new SQLite file.
    pub async fn sqlite() -> Self {
        let (backend, keys) = TestStore::sqlite_with_keys().await;
        Self::over(backend, keys)
    }

    /// Over a new PostgreSQL schema.
    pub async fn postgres() -> Self {
        let (backend, keys) = TestStore::postgres_with_keys().await;
        Self::over(backend, keys)
    }
}
