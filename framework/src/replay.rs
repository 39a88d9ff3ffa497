//! Replay: rebuilding from the log. Single aggregates replay through the
//! repository ([`Repository::load_at`], [`Repository::load_as_of`]); here
//! many streams replay into a projection or into fresh aggregate states,
//! in the background, with progress readable by replay id or as a stream of
//! updates, cancellation, and a summary at the end.
//!
//! Replay never runs handlers: it reads events and applies them to state and
//! read models only, so no mail is sent twice.
//!
//! A replay reads the log in its gap-safe order, as
//! [`read_all`](crate::store::EventStore::read_all) and the runners do, and
//! keeps the events its selection matches: run while writers are busy, it
//! applies a prefix of the log up to the point every earlier transaction
//! has finished, and never an event without one committed before it (a
//! replay that paged by position passed over an event that committed late).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::aggregate::repository::{Loaded, Repository};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::event::envelope::RecordedEvent;
use crate::projection::Projection;
use crate::store::position::LogPosition;
use crate::store::{EventQuery, EventStore, LogFilter};
use crate::task::TaskHandle;

/// Identifies one replay.
pub type ReplayId = Uuid;

/// Events fetched per page while replaying into a projection.
const PAGE: usize = 500;

/// Where a replay stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayState {
    /// Counting what to replay.
    Planning,
    /// Applying events.
    Running,
    /// Everything was replayed.
    Completed,
    /// Stopped by [`TaskHandle::request_stop`].
    Cancelled,
    /// Stopped by an error.
    Failed(String),
}

/// A replay's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayProgress {
    /// The replay.
    pub id: ReplayId,
    /// Its state.
    pub state: ReplayState,
    /// Items done (events for a projection, aggregates for states).
    pub done: u64,
    /// Items in total.
    pub total: u64,
    /// Time since it started.
    pub elapsed: Duration,
    /// Items per second so far.
    pub per_second: f64,
    /// Estimated time to completion, once the rate is known.
    pub eta: Option<Duration>,
}

impl ReplayProgress {
    fn new(id: ReplayId) -> Self {
        ReplayProgress {
            id,
            state: ReplayState::Planning,
            done: 0,
            total: 0,
            elapsed: Duration::ZERO,
            per_second: 0.0,
            eta: None,
        }
    }

    /// Whether the replay has ended (completed, cancelled or failed).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            ReplayState::Completed | ReplayState::Cancelled | ReplayState::Failed(_)
        )
    }
}

/// Starts replays and tells their progress by id.
///
/// ```
/// use annals::prelude::*;
/// use annals::replay::{ReplayState, Replays};
///
/// #[event(name = "doc.counted")]
/// struct Counted { n: u64 }
///
/// #[derive(Default)]
/// struct Total { sum: u64 }
///
/// #[projection(name = "doc_total")]
/// impl Total {
///     fn counted(&mut self, event: &Counted) { self.sum += event.n; }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = std::sync::Arc::new(InMemoryEventStore::new());
/// for n in 1..=100 {
///     let stream = StreamId::new(format!("counter-{n}"))?;
///     store.append(&stream, ExpectedVersion::Any, vec![NewEvent::from_event(&Counted { n })?]).await?;
/// }
/// let replays = Replays::new();
/// let handle = replays.project(store, Total::default(), EventQuery::new());
/// let id = handle.id();
/// let (total, summary) = handle.finish().await?;
/// assert_eq!(total.sum, 5050);
/// assert_eq!((summary.state, summary.done, summary.total), (ReplayState::Completed, 100, 100));
/// assert!(replays.status(id).is_some_and(|progress| progress.is_finished()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Replays {
    running: Arc<Mutex<HashMap<ReplayId, watch::Receiver<ReplayProgress>>>>,
    /// How long a replay waits for the log's horizon to pass the events it
    /// counted at its start.
    horizon_patience: Duration,
}

impl Default for Replays {
    fn default() -> Self {
        Replays {
            running: Arc::default(),
            horizon_patience: DEFAULT_HORIZON_PATIENCE,
        }
    }
}

/// A replay running in the background: a [`TaskHandle`] whose status is
/// its [`ReplayProgress`] and whose [`finish`](TaskHandle::finish) returns
/// what it built with its final progress.
/// [`request_stop`](TaskHandle::request_stop) cancels it after the item in
/// hand (`finish` then returns what was built so far, with
/// [`ReplayState::Cancelled`]); dropping the handle does not: the replay
/// runs on, and [`Replays::status`] tells its progress.
pub type ReplayHandle<T> = TaskHandle<ReplayProgress, (T, ReplayProgress)>;

impl<T> TaskHandle<ReplayProgress, T> {
    /// The replay's id.
    pub fn id(&self) -> ReplayId {
        self.status().id
    }
}

/// Publishes progress and stops on cancellation.
struct Tracker {
    started: Instant,
    sender: watch::Sender<ReplayProgress>,
    /// Set by the handle's `request_stop`; a dropped handle leaves it as
    /// it was.
    stop: watch::Receiver<bool>,
}

impl Tracker {
    fn update(&self, state: ReplayState, done: u64, total: u64) {
        let elapsed = self.started.elapsed();
        let per_second = if elapsed.is_zero() {
            0.0
        } else {
            done as f64 / elapsed.as_secs_f64()
        };
        let eta = (per_second > 0.0 && total >= done)
            .then(|| Duration::from_secs_f64((total - done) as f64 / per_second));
        self.sender.send_modify(|progress| {
            progress.state = state;
            progress.done = done;
            progress.total = total;
            progress.elapsed = elapsed;
            progress.per_second = per_second;
            progress.eta = eta;
        });
    }

    fn cancelled(&self) -> bool {
        *self.stop.borrow()
    }
}

impl Replays {
    /// No replays yet.
    pub fn new() -> Self {
        Replays::default()
    }

    /// How long a replay waits, at the end of the log, for the events it
    /// counted when it started to become readable in the log's gap-safe
    /// order (default 60 s). A transaction left open elsewhere holds them
    /// back; past this the replay fails, saying so.
    pub fn horizon_patience(mut self, patience: Duration) -> Self {
        self.horizon_patience = patience;
        self
    }

    /// The progress of a replay started here (kept after it finishes).
    pub fn status(&self, id: ReplayId) -> Option<ReplayProgress> {
        let running = self.running.lock().ok()?;
        running.get(&id).map(|receiver| receiver.borrow().clone())
    }

    /// Every replay started here, with its progress.
    pub fn list(&self) -> Vec<ReplayProgress> {
        self.running
            .lock()
            .map(|running| {
                running
                    .values()
                    .map(|receiver| receiver.borrow().clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn start<T, F, Fut>(&self, work: F) -> ReplayHandle<T>
    where
        T: Send + 'static,
        F: FnOnce(Tracker) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let id = Uuid::now_v7();
        let (sender, progress) = watch::channel(ReplayProgress::new(id));
        if let Ok(mut running) = self.running.lock() {
            running.insert(id, progress.clone());
        }
        let (stop, stopped) = watch::channel(false);
        let tracker = Tracker {
            started: Instant::now(),
            sender,
            stop: stopped,
        };
        let last = progress.clone();
        let work = work(tracker);
        let work = async move {
            let result = work.await?;
            let summary = last.borrow().clone();
            Ok((result, summary))
        };
        TaskHandle::spawn("replay", id.to_string(), progress, stop, work)
    }

    /// Replays the events `selection` matches (by default every event type
    /// the projection handles; narrow it by tenant or time range) into
    /// `projection`, in the log's gap-safe order.
    pub fn project<P>(
        &self,
        store: Arc<dyn EventStore>,
        projection: P,
        selection: EventQuery,
    ) -> ReplayHandle<P>
    where
        P: Projection<Context = ()> + 'static,
    {
        let mut query = selection.limit(PAGE);
        if query.event_types.is_empty() {
            query.event_types = P::event_types().into_iter().map(str::to_owned).collect();
        }
        let patience = self.horizon_patience;
        self.start(move |tracker| async move {
            let mut projection = projection;
            let outcome = replay_into(&*store, &mut projection, query, patience, &tracker).await;
            finish(&tracker, outcome).map(|()| projection)
        })
    }

    /// Rebuilds the state of every `A` aggregate with an event matching
    /// `selection` (narrow it by tenant or time range), from the store (not
    /// the cache), at most `concurrency` at a time.
    pub fn aggregates<A: Aggregate>(
        &self,
        repository: Repository<A>,
        selection: EventQuery,
        concurrency: usize,
    ) -> ReplayHandle<Vec<Loaded<A>>> {
        let mut query = selection.limit(PAGE);
        query.event_types = <A::Event as Event>::EVENT_TYPES
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        let repository = repository.without_cache();
        let patience = self.horizon_patience;
        self.start(move |tracker| async move {
            let outcome =
                rebuild_aggregates(&repository, query, concurrency.max(1), patience, &tracker)
                    .await;
            let (loaded, result) = match outcome {
                Ok(loaded) => (loaded, Ok(())),
                Err((loaded, error)) => (loaded, Err(error)),
            };
            finish(&tracker, result).map(|()| loaded)
        })
    }
}

/// Marks the end: completed, cancelled or failed.
fn finish(tracker: &Tracker, outcome: Result<()>) -> Result<()> {
    let (done, total) = {
        let progress = tracker.sender.borrow();
        (progress.done, progress.total)
    };
    match outcome {
        Ok(()) if tracker.cancelled() => {
            tracker.update(ReplayState::Cancelled, done, total);
            Ok(())
        }
        Ok(()) => {
            tracker.update(ReplayState::Completed, done, total);
            Ok(())
        }
        Err(error) => {
            tracker.update(ReplayState::Failed(error.to_string()), done, total);
            Err(error)
        }
    }
}

async fn replay_into<P: Projection<Context = ()>>(
    store: &dyn EventStore,
    projection: &mut P,
    query: EventQuery,
    patience: Duration,
    tracker: &Tracker,
) -> Result<()> {
    let mut reader = LogReader::start(store, query, patience).await?;
    tracker.update(ReplayState::Running, 0, reader.counted);
    loop {
        if tracker.cancelled() {
            return Ok(());
        }
        let Some(page) = reader.next_page(store).await? else {
            return Ok(());
        };
        for event in &page {
            projection.apply(event, &mut ()).await?;
        }
        projection.flush(&mut ()).await?;
        tracker.update(
            ReplayState::Running,
            reader.matched,
            reader.counted.max(reader.matched),
        );
    }
}

/// How long a replay waits by default for the log's horizon to pass the
/// events it counted at its start (a long transaction elsewhere holds it
/// back).
const DEFAULT_HORIZON_PATIENCE: Duration = Duration::from_secs(60);

/// Reads the log for a replay in its gap-safe order (what `read_all` and
/// the runners read: an event that commits late is never passed over),
/// keeping the events a query selects, until it has seen every event the
/// query counted when the replay started.
struct LogReader {
    query: EventQuery,
    after: LogPosition,
    /// Matching events committed when the replay started.
    counted: u64,
    /// Matching events read so far.
    matched: u64,
    /// How long to wait for the horizon to pass the counted events.
    patience: Duration,
}

impl LogReader {
    async fn start(store: &dyn EventStore, query: EventQuery, patience: Duration) -> Result<Self> {
        let counted = store.count(&query).await?;
        Ok(LogReader {
            query,
            after: LogPosition::START,
            counted,
            matched: 0,
            patience,
        })
    }

    /// The next page's matching events (possibly none), or `None` once the
    /// log is read to its end and every counted event was seen. Waits (up
    /// to its patience) while the horizon is short of them.
    async fn next_page(&mut self, store: &dyn EventStore) -> Result<Option<Vec<RecordedEvent>>> {
        let waiting_since = Instant::now();
        loop {
            // The database filters the types; the query's other conditions
            // are checked here.
            let filter = if self.query.event_types.is_empty() {
                LogFilter::all()
            } else {
                LogFilter::event_types(self.query.event_types.iter().cloned())
            };
            let page = store
                .read_log(self.after, self.query.limit.max(1), &filter)
                .await?;
            if page.read_to > self.after {
                self.after = page.read_to;
                let matching: Vec<RecordedEvent> = page
                    .events
                    .into_iter()
                    .filter(|event| self.query.is_after_cursor(event) && self.query.matches(event))
                    .collect();
                self.matched += matching.len() as u64;
                return Ok(Some(matching));
            }
            if self.matched >= self.counted {
                return Ok(None);
            }
            if waiting_since.elapsed() > self.patience {
                return Err(Error::Backend {
                    backend: store.backend(),
                    operation: "replay",
                    source: format!(
                        "read {} of the {} events counted at the start, and the log's horizon \
                         has not moved for {} s: a long-running transaction holds it back",
                        self.matched,
                        self.counted,
                        self.patience.as_secs_f64()
                    )
                    .into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn rebuild_aggregates<A: Aggregate>(
    repository: &Repository<A>,
    query: EventQuery,
    concurrency: usize,
    patience: Duration,
    tracker: &Tracker,
) -> std::result::Result<Vec<Loaded<A>>, (Vec<Loaded<A>>, Error)> {
    let store = repository.store().clone();
    let mut streams = BTreeSet::new();
    let mut reader = LogReader::start(&*store, query, patience)
        .await
        .map_err(|error| (Vec::new(), error))?;
    while let Some(page) = reader
        .next_page(&*store)
        .await
        .map_err(|error| (Vec::new(), error))?
    {
        streams.extend(
            page.into_iter()
                .filter(|event| event.stream_id.category() == A::NAME)
                .map(|event| event.stream_id),
        );
    }
    let total = streams.len() as u64;
    tracker.update(ReplayState::Running, 0, total);
    let mut loaded = Vec::with_capacity(streams.len());
    let mut loads = stream::iter(streams)
        .map(|stream_id| repository.load_stream_id(stream_id))
        .buffered(concurrency);
    while let Some(result) = loads.next().await {
        match result {
            Ok(state) => loaded.push(state),
            Err(error) => return Err((loaded, error)),
        }
        tracker.update(ReplayState::Running, loaded.len() as u64, total);
        if tracker.cancelled() {
            break;
        }
    }
    Ok(loaded)
}
