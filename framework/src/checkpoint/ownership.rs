//! Keeping a lease while a reader works: taking it (or standing by while
//! another worker has it), renewing it in the background, noticing when it
//! is lost, and giving it up on stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Checkpoint, CheckpointStore, Lease};
use crate::subscription::stop_requested;

/// How long a reader's lease lasts and how often it is renewed and sought.
///
/// A worker that stops answering (killed, cut off, paused) is taken over at
/// most [`takeover_bound`](Self::takeover_bound) after its last renewal:
/// its lease runs out after `ttl`, and a standby looks every `retry_every`.
/// The defaults (15 s, renewed every 5 s, sought every 3 s) bound takeover
/// at 18 s.
///
/// ```
/// use annals::checkpoint::LeaseSettings;
/// use std::time::Duration;
///
/// let settings = LeaseSettings::new(Duration::from_secs(6));
/// assert_eq!(settings.renew_every(), Duration::from_secs(2));
/// assert_eq!(settings.takeover_bound(), Duration::from_millis(7200));
/// assert_eq!(LeaseSettings::default().takeover_bound(), Duration::from_secs(18));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    ttl: Duration,
    renew_every: Duration,
    retry_every: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings::new(Duration::from_secs(15))
    }
}

impl LeaseSettings {
    /// A lease of `ttl` (at least 30 ms), renewed every third of it and
    /// sought by standbys every fifth.
    pub fn new(ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_millis(30));
        LeaseSettings {
            ttl,
            renew_every: ttl / 3,
            retry_every: ttl / 5,
        }
    }

    /// Standbys look for a free lease this often instead.
    pub fn with_retry_every(mut self, every: Duration) -> Self {
        self.retry_every = every.max(Duration::from_millis(10));
        self
    }

    /// How long a lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the owner renews it.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// How often a standby looks for a free lease.
    pub fn retry_every(&self) -> Duration {
        self.retry_every
    }

    /// The longest a reader goes unowned after its owner's last renewal.
    pub fn takeover_bound(&self) -> Duration {
        self.ttl + self.retry_every
    }
}

/// Who owns a reader, as its handle's status reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnershipStatus {
    /// This worker's name.
    pub worker: String,
    /// Whether this worker holds the lease (else it stands by).
    pub held: bool,
    /// The holder as last seen: this worker when `held`, another one (or
    /// nobody) otherwise.
    pub owner: Option<String>,
    /// The lease's generation as last seen.
    pub generation: u64,
    /// When the holder last renewed the lease (the store's clock).
    pub renewed_at: Option<DateTime<Utc>>,
    /// When the lease runs out unless renewed (the store's clock).
    pub expires_at: Option<DateTime<Utc>>,
}

/// This process's default worker name: host, process id and a random
/// suffix (unique per process start, so a restarted process takes its own
/// lease over under a new generation).
pub fn default_owner_name() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}:{}:{}", std::process::id(), &suffix[..8])
    })
    .clone()
}

/// An error and its causes, for a status line an operator reads.
fn with_sources(error: &crate::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reports ownership changes (and lease errors) to a reader's status.
pub(crate) type Report = Arc<dyn Fn(OwnershipStatus, Option<String>) + Send + Sync>;

/// One reader's claim on its lease.
#[derive(Clone)]
pub(crate) struct Ownership {
    store: Arc<dyn CheckpointStore>,
    name: String,
    worker: String,
    settings: LeaseSettings,
    report: Report,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("name", &self.name)
            .field("worker", &self.worker)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Ownership {
    pub(crate) fn new(
        store: Arc<dyn CheckpointStore>,
        name: String,
        worker: String,
        settings: LeaseSettings,
        report: Report,
    ) -> Self {
        Ownership {
            store,
            name,
            worker,
            settings,
            report,
        }
    }

    fn standby_status(&self, row: Option<&Checkpoint>) -> OwnershipStatus {
        OwnershipStatus {
            worker: self.worker.clone(),
            held: false,
            owner: row.and_then(|row| row.owner.clone()),
            generation: row.map_or(0, |row| row.generation),
            renewed_at: row.and_then(|row| row.renewed_at),
            expires_at: row.and_then(|row| row.lease_expires_at),
        }
    }

    /// Takes the lease, standing by (and reporting the holder) while
    /// another worker has it; `None` if the reader is stopped first.
    pub(crate) async fn acquire(&self, stopped: &mut watch::Receiver<bool>) -> Option<HeldLease> {
        let bound = self.settings.ttl;
        // After a failure (the store unreachable at start-up, say), retry
        // soon and then less often, up to the standby's interval.
        let mut backoff = Duration::from_millis(50).min(self.settings.retry_every);
        loop {
            if stop_requested(stopped) {
                return None;
            }
            let taken = tokio::time::timeout(
                bound,
                self.store
                    .acquire(&self.name, &self.worker, self.settings.ttl),
            )
            .await;
            match taken {
                Ok(Ok(Some(lease))) => {
                    tracing::info!(reader = %self.name, worker = %self.worker, generation = lease.generation, "took the lease");
                    return Some(HeldLease::start(self.clone(), lease));
                }
                Ok(Ok(None)) => {
                    let row = tokio::time::timeout(bound, self.store.load(&self.name)).await;
                    let row = row.ok().and_then(Result::ok).flatten();
                    (self.report)(self.standby_status(row.as_ref()), None);
                    backoff = self.settings.retry_every;
                }
                Ok(Err(error)) => {
                    let error = with_sources(&error);
                    tracing::warn!(reader = %self.name, %error, "cannot take the lease; retrying");
                    (self.report)(
                        self.standby_status(None),
                        Some(format!("cannot take the lease: {error}")),
                    );
                }
                Err(_) => {
                    (self.report)(
                        self.standby_status(None),
                        Some(format!("taking the lease took longer than {bound:?}")),
                    );
                }
            }
            let pause = backoff;
            backoff = (backoff * 2).min(self.settings.retry_every);
            if tokio::time::timeout(pause, stopped.wait_for(|stop| *stop))
                .await
                .is_ok()
            {
                return None;
            }
        }
    }
}

/// A lease this worker holds, renewed in the background until it is lost
/// or released.
pub(crate) struct HeldLease {
    lease: Lease,
    lost: watch::Receiver<bool>,
    /// Whether the reader is paused, as the renewer last saw it.
    paused: watch::Receiver<bool>,
    paused_sender: Arc<watch::Sender<bool>>,
    /// Whether a rebuild is requested, as the renewer last saw it.
    rebuild: Arc<AtomicBool>,
    renewer: JoinHandle<()>,
    ownership: Ownership,
}

impl HeldLease {
    fn start(ownership: Ownership, lease: Lease) -> Self {
        let (lost_sender, lost) = watch::channel(false);
        let paused_sender = Arc::new(watch::channel(lease.paused).0);
        let paused = paused_sender.subscribe();
        let rebuild = Arc::new(AtomicBool::new(lease.rebuild_requested));
        let held = |lease: &Lease| OwnershipStatus {
            worker: lease.owner.clone(),
            held: true,
            owner: Some(lease.owner.clone()),
            generation: lease.generation,
            renewed_at: Some(lease.renewed_at),
            expires_at: Some(lease.expires_at),
        };
        (ownership.report)(held(&lease), None);
        let renewer = {
            let ownership = ownership.clone();
            let mut lease = lease.clone();
            let paused_sender = Arc::clone(&paused_sender);
            let rebuild = Arc::clone(&rebuild);
            tokio::spawn(async move {
                let settings = ownership.settings;
                let mut confirmed = Instant::now();
                loop {
                    tokio::time::sleep(settings.renew_every).await;
                    let renewed = tokio::time::timeout(
                        settings.renew_every,
                        ownership.store.renew(&lease, settings.ttl),
                    )
                    .await;
                    match renewed {
                        Ok(Ok(Some(renewed))) => {
                            confirmed = Instant::now();
                            paused_sender.send_if_modified(|paused| {
                                let changed = *paused != renewed.paused;
                                *paused = renewed.paused;
                                changed
                            });
                            rebuild.store(renewed.rebuild_requested, Ordering::SeqCst);
                            lease = renewed;
                            (ownership.report)(held(&lease), None);
                        }
                        Ok(Ok(None)) => {
                            tracing::warn!(reader = %lease.name, generation = lease.generation, "the lease was taken over");
                            let _ = lost_sender.send(true);
                            return;
                        }
                        failed => {
                            let error = match failed {
                                Ok(Err(error)) => with_sources(&error),
                                _ => format!("no answer within {:?}", settings.renew_every),
                            };
                            tracing::warn!(reader = %lease.name, %error, "cannot renew the lease");
                            // Stop working before the lease can run out
                            // unconfirmed: another worker may take over then.
                            if confirmed.elapsed() + settings.renew_every >= settings.ttl {
                                let _ = lost_sender.send(true);
                                return;
                            }
                        }
                    }
                }
            })
        };
        HeldLease {
            lease,
            lost,
            paused,
            paused_sender,
            rebuild,
            renewer,
            ownership,
        }
    }

    /// Whether an operator asked for a rebuild, as of the last renewal.
    pub(crate) fn rebuild_requested(&self) -> bool {
        self.rebuild.load(Ordering::SeqCst)
    }

    /// The rebuild was done (or refused): forget the request until a
    /// renewal brings a new one.
    pub(crate) fn clear_rebuild_request(&self) {
        self.rebuild.store(false, Ordering::SeqCst);
    }

    /// Whether an operator paused the reader, as of the last renewal (or a
    /// refused write, [`mark_paused`](Self::mark_paused)).
    pub(crate) fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// A checkpoint write was refused because the reader is paused: wait
    /// from now on, until a renewal finds it resumed.
    pub(crate) fn mark_paused(&self) {
        self.paused_sender.send_replace(true);
    }

    /// Waits while the reader is paused, until a renewal finds it resumed,
    /// the lease is lost, or the reader is stopped.
    pub(crate) async fn wait_while_paused(&self, stopped: &mut watch::Receiver<bool>) {
        let mut paused = self.paused.clone();
        let mut lost = self.lost.clone();
        tokio::select! {
            _ = paused.wait_for(|paused| !*paused) => {}
            _ = lost.wait_for(|lost| *lost) => {}
            _ = stopped.wait_for(|stop| *stop) => {}
        }
    }

    /// The lease, to fence writes with.
    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether the lease was taken over, or could not be renewed in time.
    pub(crate) fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Gives the lease up so a standby takes over at once (best effort: an
    /// unreachable store lets it expire instead).
    pub(crate) async fn release(self) {
        self.renewer.abort();
        let store = &self.ownership.store;
        let bound = self.ownership.settings.renew_every;
        match tokio::time::timeout(bound, store.release(&self.lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(reader = %self.lease.name, %error, "cannot release the lease; it will expire");
            }
            Err(_) => {
                tracing::warn!(reader = %self.lease.name, "releasing the lease timed out; it will expire");
            }
        }
        (self.ownership.report)(self.ownership.standby_status(None), None);
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
