//! How a `forget` in one instance reaches every other instance's memory.
//!
//! Each [`PiiEventStore`](super::PiiEventStore) that has read or written
//! personal data runs a small background task that asks the key store, every
//! [`forget_watch`](super::PiiEventStore::forget_watch) interval (1 s by
//! default), which subjects were forgotten since it last looked (their
//! tombstones, indexed by `forgotten_at`). For each one it has not seen, it
//! marks the subject's key forgotten in this process's key cache (its fields
//! read as redacted at once) and purges this process's registered caches of
//! the subject's streams, just as the forgetting instance did. Nothing more
//! than the database is needed, so it works on every backend and across
//! processes sharing a SQLite file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::key_store::SubjectKeyStore;
use super::store::{CachePurge, SubjectCipher, SubjectId, purge_caches};

/// How far back each look reaches before the newest tombstone seen: a
/// forget whose transaction started earlier but committed later (its
/// `forgotten_at` is the transaction's start) is still found.
const OVERLAP: Duration = Duration::from_secs(30);

/// Tombstones read per look.
const PAGE: usize = 1_000;

/// The running watch; stops when the last store clone holding it drops.
pub(super) struct ForgetWatch {
    task: JoinHandle<()>,
}

impl Drop for ForgetWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the watch works on: the store's key store, key cache and caches.
pub(super) struct Watched {
    pub(super) keys: Arc<dyn SubjectKeyStore>,
    pub(super) ciphers: moka::future::Cache<SubjectId, SubjectCipher>,
    pub(super) purges: Vec<CachePurge>,
    pub(super) backend: &'static str,
}

impl ForgetWatch {
    /// Starts watching (inside a Tokio runtime).
    pub(super) fn start(watched: Watched, every: Duration) -> Self {
        ForgetWatch {
            task: tokio::spawn(watch(watched, every)),
        }
    }
}

async fn watch(watched: Watched, every: Duration) {
    let overlap = chrono::Duration::from_std(OVERLAP).unwrap_or_default();
    // Subjects forgotten before this process cached anything need nothing.
    let mut newest = Utc::now();
    let mut seen: HashMap<SubjectId, DateTime<Utc>> = HashMap::new();
    loop {
        tokio::time::sleep(every).await;
        let since = newest - overlap;
        let forgotten = match watched.keys.forgotten_since(since, PAGE).await {
            Ok(forgotten) => forgotten,
            Err(error) => {
                tracing::warn!(%error, "cannot look for forgotten subjects; retrying");
                continue;
            }
        };
        for subject in forgotten {
            newest = newest.max(subject.forgotten_at);
            let id = (subject.tenant.clone(), subject.subject.clone());
            if seen.get(&id) == Some(&subject.forgotten_at) {
                continue;
            }
            watched
                .ciphers
                .insert(id.clone(), SubjectCipher::Forgotten)
                .await;
            let streams = watched
                .keys
                .subject_streams(subject.tenant.as_deref(), &subject.subject)
                .await;
            let purged = match streams {
                Ok(streams) => purge_caches(&watched.purges, &streams, watched.backend).await,
                Err(error) => Err(error),
            };
            match purged {
                Ok(()) => {
                    tracing::info!(subject = %subject.subject, "dropped a subject forgotten elsewhere");
                    seen.insert(id, subject.forgotten_at);
                }
                // Not marked seen: the next look tries again.
                Err(error) => {
                    tracing::warn!(subject = %subject.subject, %error, "cannot purge a subject forgotten elsewhere; retrying");
                }
            }
        }
        seen.retain(|_, at| *at >= newest - overlap);
    }
}
