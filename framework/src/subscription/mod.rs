//! Subscriptions: a named reader of the global log that keeps its checkpoint
//! in the store, catches up from it, then follows new events as they are
//! committed. Delivery is at least once: the checkpoint moves only past
//! events the sink handled, so a crash or an error means redelivery, never
//! a gap. (The log is the outbox: there is nothing to publish separately.)
//!
//! A subscription has one owner however many instances run it: each takes
//! the reader's lease before it delivers anything (see
//! [`checkpoint`](crate::checkpoint)), the others stand by, and one of them
//! takes over within [`LeaseSettings::takeover_bound`] of the owner going
//! quiet. A worker that lost the lease cannot move the checkpoint.

pub mod dead_letter;
pub mod handler;
pub mod handler_registry;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::checkpoint::{
    CheckpointStore, Lease, LeaseSettings, OwnershipStatus, default_owner_name,
};
use crate::error::{BoxError, Error, Result};
use crate::event::envelope::RecordedEvent;
use crate::store::position::LogPosition;
use crate::store::{EventStore, LogFilter};
use crate::task::TaskHandle;

/// Where a subscription's events go.
#[async_trait]
pub trait EventSink: Send {
    /// Handles one event. An error stops delivery at this event; it is
    /// offered again after the subscription's retry delay.
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError>;

    /// Called when the subscription has read everything committed so far,
    /// before it waits for more: a sink's chance to do work between events
    /// (the [`HandlerRegistry`](handler_registry::HandlerRegistry) runs the
    /// dead letters an operator asked to retry). Does nothing by default;
    /// an error shows in the subscription's status and it is called again
    /// next time.
    async fn idle(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Where a subscription's events go when their effects are rows in a SQL
/// database: each batch's handling commits in one transaction with the
/// subscription's checkpoint, under its lease
/// ([`Subscription::start_transactional`]). The effects then happen exactly
/// once per event, even across crashes and takeovers: a batch that fails,
/// or whose worker lost the lease, rolls back whole.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
#[async_trait]
pub trait TransactionalSink: Send {
    /// Handles one event, writing through `db` (the batch's transaction).
    /// An error rolls the batch back; it is offered again after the
    /// subscription's retry delay.
    async fn handle(
        &mut self,
        event: &RecordedEvent,
        db: &mut dyn crate::projection::sql_read_model::SqlConnection,
    ) -> Result<(), BoxError>;
}

/// A subscription's state, as its handle reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionStatus {
    /// The last position handled (and checkpointed at the end of its batch).
    pub position: LogPosition,
    /// Events handed to the sink since the start (redeliveries included).
    pub delivered: u64,
    /// Whether the subscription has read everything committed so far.
    pub caught_up: bool,
    /// Time from recording to delivery of the last event handled.
    pub lag: Duration,
    /// The last failure (of the sink or the store), cleared by success.
    pub last_error: Option<String>,
    /// Who owns the subscription: this worker (`held`) or another one it
    /// stands by for. `None` for a subscription run
    /// [`without_lease`](Subscription::without_lease).
    pub ownership: Option<OwnershipStatus>,
    /// Whether an operator paused it
    /// ([`CheckpointStore::set_paused`],
    /// `annals subscriptions pause`): it holds its lease and reads nothing
    /// until resumed.
    pub paused: bool,
}

impl crate::task::ReaderStatus for SubscriptionStatus {
    fn position(&self) -> LogPosition {
        self.position
    }
}

/// A named, checkpointed reader of the global log.
///
/// ```
/// use annals::prelude::*;
/// use annals::subscription::{EventSink, Subscription};
/// use std::sync::Arc;
///
/// #[derive(Default)]
/// struct Count(u64);
///
/// #[annals::async_trait]
/// impl EventSink for Count {
///     async fn handle(&mut self, _: &RecordedEvent) -> Result<(), annals::error::BoxError> {
///         self.0 += 1;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = Arc::new(InMemoryEventStore::new());
/// let stream = StreamId::new("user-1")?;
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::json("registered", &1)?]).await?;
///
/// let handle = Subscription::new(store.clone(), "counter").start(Count::default());
/// handle.wait_until(std::time::Duration::from_secs(30), |status| status.delivered == 1).await?;
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::json("renamed", &2)?]).await?;
/// handle.wait_until(std::time::Duration::from_secs(30), |status| status.delivered == 2).await?;
/// let count = handle.stop().await?;
/// assert_eq!(count.0, 2);
/// assert!(store.load_checkpoint("counter").await?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Subscription {
    store: Arc<dyn EventStore>,
    name: String,
    batch_size: usize,
    poll_interval: Duration,
    retry_delay: Duration,
    event_types: Option<Vec<String>>,
    /// `None`: every instance delivers (no lease).
    lease: Option<LeaseSettings>,
    worker: String,
}

impl Subscription {
    /// A subscription named `name` (its checkpoint's key) on `store`.
    pub fn new(store: Arc<dyn EventStore>, name: impl Into<String>) -> Self {
        Subscription {
            store,
            name: name.into(),
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            retry_delay: Duration::from_millis(200),
            event_types: None,
            lease: Some(LeaseSettings::default()),
            worker: default_owner_name(),
        }
    }

    /// The lease's length and timing (default 15 s, so another instance
    /// takes over at most 18 s after the owner goes quiet).
    pub fn lease(mut self, settings: LeaseSettings) -> Self {
        self.lease = Some(settings);
        self
    }

    /// Delivers in every instance that runs it, with no lease: for
    /// per-instance side effects (dropping this process's cached state).
    /// Its checkpoint writes are not fenced, so give each instance's
    /// subscription its own name.
    pub fn without_lease(mut self) -> Self {
        self.lease = None;
        self
    }

    /// The name this worker holds leases under (default
    /// [`default_owner_name`]: host, process id and a random suffix).
    pub fn worker_name(mut self, worker: impl Into<String>) -> Self {
        self.worker = worker.into();
        self
    }

    /// Events read per round trip (default 500).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// How long to wait when caught up before looking again if nothing wakes
    /// it (default 500 ms; appends wake it sooner, see
    /// [`EventStore::watch_log`]).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long to wait after a failure before retrying (default 200 ms).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Delivers only events of these types (the others are skipped, and the
    /// checkpoint still moves past them).
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Starts delivering to `sink` in a background task.
    pub fn start<S: EventSink + 'static>(self, sink: S) -> SubscriptionHandle<S> {
        let checkpoints = self.store.checkpoints();
        self.spawn(checkpoints, PlainDelivery(sink), |delivery| delivery.0)
    }

    /// Starts delivering to a sink whose effects are rows in `target`'s
    /// database, each batch in one transaction with the checkpoint (kept in
    /// that database too), so each event's effects happen exactly once. It
    /// always runs under a lease (the default one if
    /// [`without_lease`](Self::without_lease) was set).
    ///
    /// ```
    /// use annals::prelude::*;
    /// use annals::projection::runner::SqliteReadModel;
    /// use annals::projection::sql_read_model::SqlConnection;
    /// use annals::subscription::{Subscription, TransactionalSink};
    /// use std::sync::Arc;
    ///
    /// struct Outbox;
    ///
    /// #[annals::async_trait]
    /// impl TransactionalSink for Outbox {
    ///     async fn handle(
    ///         &mut self,
    ///         event: &RecordedEvent,
    ///         db: &mut dyn SqlConnection,
    ///     ) -> Result<(), annals::error::BoxError> {
    ///         db.execute("INSERT INTO outbox (event_id) VALUES ($1)", &[event.event_id.into()]).await?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteEventStore::open(dir.path().join("doc.db")).await?;
    /// sqlx::query("CREATE TABLE outbox (event_id TEXT PRIMARY KEY)").execute(store.pool()).await.unwrap();
    /// let target = SqliteReadModel::for_store(&store);
    /// let store = Arc::new(store);
    /// store.append(&StreamId::new("user-1")?, ExpectedVersion::Any, vec![NewEvent::json("registered", &1)?]).await?;
    ///
    /// let handle = Subscription::new(store.clone(), "outbox").start_transactional(target, Outbox);
    /// handle.wait_until(std::time::Duration::from_secs(30), |status| status.caught_up && status.delivered == 1).await?;
    /// handle.stop().await?;
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
    pub fn start_transactional<T, S>(mut self, target: T, sink: S) -> SubscriptionHandle<S>
    where
        T: crate::projection::runner::TransactionalTarget,
        S: TransactionalSink + 'static,
    {
        self.lease = Some(self.lease.unwrap_or_default());
        let checkpoints = target.checkpoints();
        self.spawn(
            checkpoints,
            TransactionalDelivery { target, sink },
            |delivery| delivery.sink,
        )
    }

    fn spawn<D, S>(
        self,
        checkpoints: Arc<dyn CheckpointStore>,
        delivery: D,
        into_sink: fn(D) -> S,
    ) -> SubscriptionHandle<S>
    where
        D: Delivery + 'static,
        S: Send + 'static,
    {
        let (status, receiver) = watch::channel(SubscriptionStatus::default());
        let (stop, stopped) = watch::channel(false);
        let name = self.name.clone();
        let work = async move {
            self.run(checkpoints, delivery, status, stopped)
                .await
                .map(into_sink)
        };
        TaskHandle::spawn("subscription", name, receiver, stop, work)
    }

    async fn run<D: Delivery>(
        self,
        checkpoints: Arc<dyn CheckpointStore>,
        mut delivery: D,
        status: watch::Sender<SubscriptionStatus>,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<D> {
        let status = Arc::new(status);
        let ownership = self.lease.map(|settings| {
            let status = Arc::clone(&status);
            crate::checkpoint::Ownership::new(
                Arc::clone(&checkpoints),
                self.name.clone(),
                self.worker.clone(),
                settings,
                Arc::new(move |ownership: OwnershipStatus, error: Option<String>| {
                    status.send_modify(|s| {
                        if !ownership.held {
                            s.caught_up = false;
                        }
                        s.ownership = Some(ownership);
                        if error.is_some() {
                            s.last_error = error;
                        }
                    });
                }),
            )
        });
        let mut delivered = 0_u64;
        let mut idle = IdleBackoff::new(self.poll_interval);
        let mut lag = Duration::ZERO;
        'lease: while !stop_requested(&stopped) {
            let held = match &ownership {
                Some(ownership) => match ownership.acquire(&mut stopped).await {
                    Some(held) => Some(held),
                    None => break 'lease,
                },
                None => None,
            };
            let mut position = match &held {
                Some(held) => held.lease().position,
                None => match self.load_position(&status, &mut stopped).await {
                    Some(position) => position,
                    None => break 'lease,
                },
            };
            status.send_modify(|s| {
                s.position = position;
                s.last_error = None;
            });
            while !stop_requested(&stopped) {
                if held.as_ref().is_some_and(|held| held.is_lost()) {
                    tracing::warn!(subscription = %self.name, "lost the lease; standing by");
                    continue 'lease;
                }
                if let Some(held) = held.as_ref().filter(|held| held.is_paused()) {
                    tracing::info!(subscription = %self.name, "paused by an operator");
                    status.send_modify(|s| s.paused = true);
                    held.wait_while_paused(&mut stopped).await;
                    status.send_modify(|s| s.paused = false);
                    continue;
                }
                idle.arm();
                let page = match self
                    .store
                    .read_log(position, self.batch_size, &self.log_filter())
                    .await
                {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(subscription = %self.name, %error, "cannot read the log; retrying");
                        status.send_modify(|s| s.last_error = Some(error.to_string()));
                        pause(&mut stopped, self.retry_delay).await;
                        continue;
                    }
                };
                if page.events.is_empty() && page.read_to <= position {
                    status.send_modify(|s| s.caught_up = true);
                    if let Err(error) = delivery.idle().await {
                        tracing::warn!(subscription = %self.name, %error, "the sink's idle work failed");
                        status.send_modify(|s| s.last_error = Some(error.to_string()));
                    }
                    idle.wait(&*self.store, &mut stopped).await;
                    continue;
                }
                idle.reset();
                let start = position;
                let lease = held.as_ref().map(|held| held.lease());
                let batch = &page.events;
                let outcome = delivery
                    .deliver(&self, batch, start, page.read_to, lease, &*checkpoints)
                    .await;
                delivered += outcome.handed;
                if outcome.failure.is_none()
                    && let Some(last) = batch.last()
                {
                    lag = (chrono::Utc::now() - last.recorded_at)
                        .to_std()
                        .unwrap_or_default();
                }
                if outcome.lease_lost {
                    tracing::warn!(subscription = %self.name, "lost the lease; standing by");
                    continue 'lease;
                }
                if outcome.paused {
                    // Paused between renewals: the checkpoint stayed, so
                    // the batch comes again once resumed (at least once).
                    if let Some(held) = &held {
                        held.mark_paused();
                    }
                    position = outcome.position;
                    continue;
                }
                position = outcome.position;
                let failure = outcome.failure;
                let caught_up = failure.is_none() && batch.len() < self.batch_size;
                status.send_modify(|s| {
                    s.position = position;
                    s.lag = lag;
                    s.delivered = delivered;
                    s.caught_up = caught_up;
                    s.last_error.clone_from(&failure);
                });
                if let Some(failure) = failure {
                    tracing::warn!(subscription = %self.name, %failure, "the sink failed; retrying the event");
                    pause(&mut stopped, self.retry_delay).await;
                }
            }
            if let Some(held) = held {
                held.release().await;
            }
        }
        Ok(delivery)
    }

    /// What this subscription reads of the log: its event types, if it
    /// named some (the database filters them).
    fn log_filter(&self) -> LogFilter {
        self.event_types
            .as_ref()
            .map_or_else(LogFilter::all, |types| {
                LogFilter::event_types(types.iter().cloned())
            })
    }

    /// The saved position of a subscription without a lease. A failure here
    /// (a database blip at start-up) is retried with backoff and shown in
    /// the status, never the end of the reader; `None` if stopped first.
    async fn load_position(
        &self,
        status: &watch::Sender<SubscriptionStatus>,
        stopped: &mut watch::Receiver<bool>,
    ) -> Option<LogPosition> {
        let mut delay = self.retry_delay;
        loop {
            match crate::store::EventStoreExt::load_checkpoint(&*self.store, &self.name).await {
                Ok(position) => return Some(position.unwrap_or_default()),
                Err(error) => {
                    tracing::warn!(subscription = %self.name, %error, "cannot load the checkpoint; retrying");
                    status.send_modify(|s| {
                        s.last_error = Some(format!("cannot load the checkpoint: {error}"));
                    });
                    if stop_requested(stopped) {
                        return None;
                    }
                    pause(stopped, delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }
}

/// What became of one batch.
struct Delivered {
    /// Where the subscription now stands.
    position: LogPosition,
    /// Events handed to the sink (redeliveries included).
    handed: u64,
    /// The sink's failure, if it failed.
    failure: Option<String>,
    /// The lease was taken over: stand by.
    lease_lost: bool,
    /// The reader is paused: its checkpoint write was refused.
    paused: bool,
}

/// How a subscription hands a batch to its sink and moves its checkpoint.
#[async_trait]
trait Delivery: Send {
    async fn deliver(
        &mut self,
        subscription: &Subscription,
        batch: &[RecordedEvent],
        start: LogPosition,
        read_to: LogPosition,
        lease: Option<&Lease>,
        checkpoints: &dyn CheckpointStore,
    ) -> Delivered;

    /// The sink's work while the subscription is caught up.
    async fn idle(&mut self) -> Result<(), BoxError>;
}

/// An [`EventSink`]: event by event, then the checkpoint (at least once).
struct PlainDelivery<S>(S);

#[async_trait]
impl<S: EventSink> Delivery for PlainDelivery<S> {
    async fn deliver(
        &mut self,
        subscription: &Subscription,
        batch: &[RecordedEvent],
        start: LogPosition,
        read_to: LogPosition,
        lease: Option<&Lease>,
        checkpoints: &dyn CheckpointStore,
    ) -> Delivered {
        let mut position = start;
        let mut handed = 0;
        let mut failure = None;
        for event in batch {
            handed += 1;
            if let Err(error) = self.0.handle(event).await {
                failure = Some(format!(
                    "event {} of `{}` ({}): {error}",
                    event.version, event.stream_id, event.event_type
                ));
                break;
            }
            position = event.position;
        }
        if failure.is_none() {
            // Past the last event handed over when the read skipped
            // events of other types after it.
            position = position.max(read_to);
        }
        // If the checkpoint is not saved, the events since the saved one
        // come again later: at least once, never lost.
        let mut lease_lost = false;
        let mut paused = false;
        if position != start {
            let saved = match lease {
                Some(lease) => checkpoints.commit(lease, start, position).await,
                None => checkpoints.save(&subscription.name, position).await,
            };
            match saved {
                Ok(()) => {}
                Err(Error::LeaseLost { .. }) => lease_lost = true,
                Err(Error::ReaderPaused { .. }) => {
                    paused = true;
                    position = start;
                }
                Err(Error::CheckpointMoved { found, .. }) => {
                    tracing::info!(subscription = %subscription.name, %found, "the checkpoint was moved; resuming there");
                    position = found;
                }
                Err(error) => {
                    tracing::warn!(subscription = %subscription.name, %error, "cannot save the checkpoint");
                }
            }
        }
        Delivered {
            position,
            handed,
            failure,
            lease_lost,
            paused,
        }
    }

    async fn idle(&mut self) -> Result<(), BoxError> {
        self.0.idle().await
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// A [`TransactionalSink`]: the whole batch and the checkpoint in one
/// transaction of the target's database (exactly once).
struct TransactionalDelivery<T, S> {
    target: T,
    sink: S,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[async_trait]
impl<T, S> Delivery for TransactionalDelivery<T, S>
where
    T: crate::projection::runner::TransactionalTarget,
    S: TransactionalSink,
{
    async fn deliver(
        &mut self,
        _subscription: &Subscription,
        batch: &[RecordedEvent],
        start: LogPosition,
        read_to: LogPosition,
        lease: Option<&Lease>,
        _checkpoints: &dyn CheckpointStore,
    ) -> Delivered {
        let next = read_to;
        let handed = batch.len() as u64;
        let outcome = self
            .target
            .deliver(
                &mut self.sink,
                crate::projection::runner::Batch {
                    events: batch,
                    previous: start,
                    next,
                    lease,
                },
            )
            .await;
        let (position, failure, lease_lost, paused) = match outcome {
            Ok(()) => (next, None, false, false),
            Err(failure) => match failure.error {
                Error::LeaseLost { .. } => (start, None, true, false),
                Error::ReaderPaused { .. } => (start, None, false, true),
                Error::CheckpointMoved { found, .. } => (found, None, false, false),
                error => (start, Some(error.to_string()), false, false),
            },
        };
        Delivered {
            position,
            handed,
            failure,
            lease_lost,
            paused,
        }
    }

    async fn idle(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// How long a caught-up reader waits before reading again: short right
/// after activity or a wake-up (the events may not be visible yet, e.g.
/// behind PostgreSQL's visibility horizon), doubling up to the poll interval.
/// It waits on a [`LogWatch`](crate::store::LogWatch) armed before each
/// read, so an append that lands between an empty read and the wait still
/// wakes it.
///
/// The watch is taken the first time the reader catches up, not before its
/// first read: a catch-up does not wait for it (on PostgreSQL it is a
/// `LISTEN` connection of its own, a few milliseconds to open). Appends
/// between that last read and the watch were not watched, so the first
/// wait returns at once and the reader reads again, armed.
#[derive(Debug)]
pub(crate) struct IdleBackoff {
    next: Duration,
    max: Duration,
    /// The store's appends, taken the first time the reader caught up.
    watch: Option<crate::store::LogWatch>,
}

impl IdleBackoff {
    const SHORTEST: Duration = Duration::from_millis(10);

    pub(crate) fn new(max: Duration) -> Self {
        IdleBackoff {
            next: Self::SHORTEST.min(max),
            max,
            watch: None,
        }
    }

    /// Call just before reading the log: appends from now on wake the next
    /// [`wait`](Self::wait) (once the watch is taken).
    pub(crate) fn arm(&mut self) {
        if let Some(watch) = &mut self.watch {
            watch.mark_seen();
        }
    }

    /// Something happened: wait briefly next time.
    pub(crate) fn reset(&mut self) {
        self.next = Self::SHORTEST.min(self.max);
    }

    /// Waits for an append since the last [`arm`](Self::arm) (or stop);
    /// returns early on either. The first call takes `store`'s watch and
    /// returns without waiting: the caller reads again, armed.
    pub(crate) async fn wait(
        &mut self,
        store: &dyn EventStore,
        stopped: &mut watch::Receiver<bool>,
    ) {
        let next = self.next;
        let Some(log) = &mut self.watch else {
            let mut log = store.watch_log().await;
            log.mark_seen();
            self.watch = Some(log);
            return;
        };
        let woken = tokio::select! {
            woken = log.changed(next) => woken,
            _ = stopped.wait_for(|stop| *stop) => true,
        };
        if woken {
            self.reset();
        } else {
            self.next = (self.next * 2).min(self.max);
        }
    }
}

/// The longest wait between retries of a failing start-up.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Whether a background reader should stop: it was asked to, or its handle
/// was dropped (the sending half of the stop channel is gone). Without the
/// second check a dropped handle's task would spin, every wait returning at
/// once on the closed channel.
pub(crate) fn stop_requested(stopped: &watch::Receiver<bool>) -> bool {
    *stopped.borrow() || stopped.has_changed().is_err()
}

/// Sleeps, waking early if the subscription is stopped.
async fn pause(stopped: &mut watch::Receiver<bool>, duration: Duration) {
    let _ = tokio::time::timeout(duration, stopped.wait_for(|stop| *stop)).await;
}

/// A running subscription: a [`TaskHandle`] whose status is a
/// [`SubscriptionStatus`] and whose [`stop`](TaskHandle::stop) returns the
/// sink. Dropping it ends the subscription too, after the batch in hand,
/// without waiting, and gives its lease up. A lease or checkpoint that
/// cannot be loaded at start-up (the database is away) is retried with
/// backoff, up to the lease's retry interval apart (30 s without a lease),
/// and shown in [`SubscriptionStatus::last_error`].
pub type SubscriptionHandle<S> = TaskHandle<SubscriptionStatus, S>;
