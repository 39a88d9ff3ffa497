//! A reader of many subjects' events loads the keys it has not cached in
//! one query per page and tenant, not one per subject: with more subjects
//! than the key cache holds, a catch-up queried once per event. On memory,
//! SQLite and PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annals::pii::{
    ForgottenSubject, MasterKey, PiiEventStore, StoredSubjectKey, SubjectKeyRecord, SubjectKeyStore,
};
use annals::prelude::*;
use annals_tests::backends::TestStore;
use annals_tests::pii::{MemberJoined, joined};
use chrono::{DateTime, Utc};

/// Counts the key store's loads, one subject at a time and in batches.
struct CountingKeys {
    inner: Arc<dyn SubjectKeyStore>,
    single: AtomicU64,
    batches: AtomicU64,
}

#[async_trait::async_trait]
impl SubjectKeyStore for CountingKeys {
    async fn load_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
    ) -> annals::Result<Option<StoredSubjectKey>> {
        self.single.fetch_add(1, Ordering::SeqCst);
        self.inner.load_subject_key(tenant, subject).await
    }
    async fn load_subject_keys(
        &self,
        tenant: Option<&str>,
        subjects: &[String],
    ) -> annals::Result<HashMap<String, StoredSubjectKey>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.inner.load_subject_keys(tenant, subjects).await
    }
    async fn create_subject_key(
        &self,
        tenant: Option<&str>,
        subject: &str,
        wrapped: Vec<u8>,
    ) -> annals::Result<StoredSubjectKey> {
        self.inner
            .create_subject_key(tenant, subject, wrapped)
            .await
    }
    async fn list_subject_keys(
        &self,
        after: Option<&SubjectKeyRecord>,
        limit: usize,
    ) -> annals::Result<Vec<SubjectKeyRecord>> {
        self.inner.list_subject_keys(after, limit).await
    }
    async fn forget_subject_key(&self, tenant: Option<&str>, subject: &str) -> annals::Result<()> {
        self.inner.forget_subject_key(tenant, subject).await
    }
    async fn record_subject_stream(
        &self,
        tenant: Option<&str>,
        subject: &str,
        stream: &StreamId,
    ) -> annals::Result<()> {
        self.inner
            .record_subject_stream(tenant, subject, stream)
            .await
    }
    async fn subject_streams(
        &self,
        tenant: Option<&str>,
        subject: &str,
    ) -> annals::Result<Vec<StreamId>> {
        self.inner.subject_streams(tenant, subject).await
    }
    async fn forgotten_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> annals::Result<Vec<ForgottenSubject>> {
        self.inner.forgotten_since(since, limit).await
    }
}

/// 300 subjects: a page large enough to be parsed and opened on every core
/// (more than 256 events), which must keep the log's order.
async fn one_query_per_page(store: Arc<dyn EventStore>, keys: Arc<dyn SubjectKeyStore>) {
    const SUBJECTS: usize = 300;
    let master = MasterKey::generate();
    let writer = PiiEventStore::new(store.clone(), keys.clone(), master.clone());
    for n in 0..SUBJECTS {
        let event = NewEvent::from_event(&joined(&format!("m{n}"), &format!("m{n}@acme.test")))
            .expect("encode");
        writer
            .append(
                &StreamId::new(format!("member-m{n}")).expect("stream id"),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .expect("append");
    }
    writer.forget("m7").await.expect("forget");
    let counting = Arc::new(CountingKeys {
        inner: keys,
        single: AtomicU64::new(0),
        batches: AtomicU64::new(0),
    });
    // A reader whose key cache holds a thirtieth of the subjects.
    let reader = PiiEventStore::new(store.clone(), counting.clone(), master)
        .key_cache(10, Duration::from_secs(60));
    // Wait on the plain store until every event shows (on PostgreSQL an
    // older transaction elsewhere can hold the log back), then read once.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store
        .read_all(LogPosition::START, 500)
        .await
        .expect("read_all")
        .len()
        < SUBJECTS
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = reader
        .read_all(LogPosition::START, 500)
        .await
        .expect("read_all");
    assert_eq!(events.len(), SUBJECTS);
    for (n, event) in events.iter().enumerate() {
        let member: MemberJoined = event.decode().expect("decodes");
        if n == 7 {
            assert_ne!(
                member.email, "m7@acme.test",
                "a forgotten subject stays redacted"
            );
        } else {
            assert_eq!(member.email, format!("m{n}@acme.test"));
        }
    }
    assert_eq!(
        counting.single.load(Ordering::SeqCst),
        0,
        "no key was loaded on its own"
    );
    assert_eq!(
        counting.batches.load(Ordering::SeqCst),
        1,
        "one batch for the page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_many_subjects_loads_their_keys_at_once_on_memory() {
    let store = Arc::new(InMemoryEventStore::new());
    one_query_per_page(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_many_subjects_loads_their_keys_at_once_on_sqlite() {
    let (backend, keys) = TestStore::sqlite_with_keys().await;
    one_query_per_page(backend.store.clone(), keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_many_subjects_loads_their_keys_at_once_on_postgres() {
    let (backend, keys) = TestStore::postgres_with_keys().await;
    one_query_per_page(backend.store.clone(), keys).await;
}
