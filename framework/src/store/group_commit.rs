//! Group commit: concurrent small appends wait in one queue and are written
//! together, a *flight* at a time, so that eight callers appending one event
//! each cost one statement and one commit instead of eight.
//!
//! The queue only groups; the store decides how a flight is written and
//! answers each caller on its own channel, so every caller still gets its
//! own result (its events written, or its own version conflict). A flight
//! never holds two appends to the same stream (their expected versions
//! would be checked against the same head); the later one waits for the
//! next flight, which keeps each stream's appends in arrival order.
//!
//! There is no timer: an append that finds a free flight slot starts a
//! flight at once, so a lone writer pays nothing, and appends that arrive
//! while the slots are busy ride together in the next flight.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::{AppendResult, StreamAppend};
use crate::error::{Error, Result};

/// Scheduler turns a flight task waits for the previous flight's callers.
const GATHER_TURNS: usize = 32;

/// How concurrent appends are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitOptions {
    /// Flights written at the same time (each on a connection of its own;
    /// on PostgreSQL outside the store's pool, see
    /// `PostgresStoreBuilder::max_connections`).
    /// One by default: on a 2-core machine with 8 writers, 1 flight wrote
    /// ~1.1x the events per second of 8 connections inserting one row each,
    /// 2 flights ~0.8x, 8 flights ~0.35x: one statement with many rows
    /// costs the database far less than many statements with few.
    pub flights: usize,
    /// Most events in one flight.
    pub max_flight_events: usize,
    /// Appends with more events than this are written on their own: they
    /// gain nothing from company.
    pub max_append_events: usize,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions {
            flights: 1,
            max_flight_events: 512,
            max_append_events: 16,
        }
    }
}

/// A moment's view of a store's group commit, from
/// `queued_appends`/`group_commit_status` on the SQL stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStatus {
    /// Appends waiting for a flight: a number that keeps growing means
    /// appends arrive faster than the database takes them.
    pub queued: usize,
    /// Flights being written (or about to be: a flight task holds its slot
    /// from the append that started it until the queue is empty).
    pub flights_in_progress: usize,
}

/// One caller's append, waiting for a flight.
pub(crate) struct QueuedAppend {
    pub(crate) batch: Vec<StreamAppend>,
    pub(crate) reply: oneshot::Sender<Result<Vec<AppendResult>>>,
}

impl QueuedAppend {
    fn event_count(&self) -> usize {
        self.batch.iter().map(|append| append.events.len()).sum()
    }

    /// The tags its events carry.
    fn written_tags(&self) -> impl Iterator<Item = &str> {
        self.batch
            .iter()
            .flat_map(|append| &append.events)
            .flat_map(|event| event.tags.iter().map(String::as_str))
    }

    /// The tags its conditions name.
    fn condition_tags(&self) -> impl Iterator<Item = &str> {
        self.batch
            .iter()
            .filter_map(|append| append.condition.as_ref())
            .flat_map(|condition| condition.fail_if_events_match.tags())
    }
}

/// The queue and the flight slots of one store (shared by its clones).
#[derive(Debug)]
pub(crate) struct GroupCommit {
    queue: Mutex<VecDeque<QueuedAppend>>,
    slots: Arc<Semaphore>,
    options: GroupCommitOptions,
}

impl std::fmt::Debug for QueuedAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedAppend")
            .field("streams", &self.batch.len())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub(crate) fn new(options: GroupCommitOptions) -> Result<Self> {
        if options.flights == 0 || options.max_flight_events == 0 {
            return Err(Error::Config(format!(
                "group commit needs at least one flight of at least one event, not {} flights of {} events",
                options.flights, options.max_flight_events
            )));
        }
        Ok(GroupCommit {
            queue: Mutex::new(VecDeque::new()),
            slots: Arc::new(Semaphore::new(options.flights)),
            options,
        })
    }

    /// Whether `batch` is small enough to share a flight.
    pub(crate) fn accepts(&self, batch: &[StreamAppend]) -> bool {
        let events: usize = batch.iter().map(|append| append.events.len()).sum();
        events
            <= self
                .options
                .max_append_events
                .min(self.options.max_flight_events)
    }

    /// Appends waiting for a flight.
    pub(crate) fn queued(&self) -> usize {
        self.lock().len()
    }

    /// What the queue holds and how many flights are being written.
    pub(crate) fn status(&self) -> GroupCommitStatus {
        GroupCommitStatus {
            queued: self.queued(),
            flights_in_progress: self.options.flights - self.slots.available_permits(),
        }
    }

    /// Queues `batch`; returns the receiver of its result and, when a flight
    /// slot was free, the slot: the caller must then start a flight task
    /// (see [`next_flight`](Self::next_flight)).
    pub(crate) fn enqueue(
        &self,
        batch: Vec<StreamAppend>,
    ) -> (
        oneshot::Receiver<Result<Vec<AppendResult>>>,
        Option<OwnedSemaphorePermit>,
    ) {
        let (reply, answer) = oneshot::channel();
        self.lock().push_back(QueuedAppend { batch, reply });
        (answer, Arc::clone(&self.slots).try_acquire_owned().ok())
    }

    /// Before taking the next flight: when the last one carried `last`
    /// appends, its callers were just answered and are likely about to
    /// append again. Lets them run (a few scheduler turns, no timer) until
    /// as many appends wait, so that flights stay full instead of
    /// alternating between one append and the rest.
    pub(crate) async fn gather(&self, last: usize) {
        for _ in 0..GATHER_TURNS {
            if last <= 1 || self.queued() >= last {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// The next flight for the task holding `slot`: the oldest queued
    /// appends that fit, at most one per stream. When the queue is empty
    /// the slot is given back and `None` returned; the flight task ends.
    pub(crate) fn next_flight(
        &self,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<Vec<QueuedAppend>> {
        loop {
            let flight = self.take_flight();
            if !flight.is_empty() {
                return Some(flight);
            }
            // Give the slot back, then look again: an append queued after
            // the look above but before the release found no free slot and
            // relies on a slot holder to see it.
            drop(slot.take());
            if self.lock().is_empty() {
                return None;
            }
            *slot = Some(Arc::clone(&self.slots).try_acquire_owned().ok()?);
        }
    }

    /// The oldest queued appends that fit in a flight, at most one per
    /// stream, and never an append whose condition names a tag another one
    /// writes, or that writes a tag another one's condition names: the
    /// flight's appends are checked together, before any is written, so
    /// neither would see the other (the later one waits for the next
    /// flight, and sees the first).
    fn take_flight(&self) -> Vec<QueuedAppend> {
        let mut queue = self.lock();
        let mut flight = Vec::new();
        let mut streams: HashSet<String> = HashSet::new();
        let mut written: HashSet<String> = HashSet::new();
        let mut conditioned: HashSet<String> = HashSet::new();
        let mut events = 0;
        let mut index = 0;
        while index < queue.len() {
            let candidate = &queue[index];
            let size = candidate.event_count();
            let overlaps = candidate
                .batch
                .iter()
                .any(|append| streams.contains(append.stream_id.as_str()))
                || candidate.condition_tags().any(|tag| written.contains(tag))
                || candidate
                    .written_tags()
                    .any(|tag| conditioned.contains(tag));
            if overlaps || (!flight.is_empty() && events + size > self.options.max_flight_events) {
                index += 1;
                continue;
            }
            if let Some(taken) = queue.remove(index) {
                streams.extend(
                    taken
                        .batch
                        .iter()
                        .map(|append| append.stream_id.as_str().to_owned()),
                );
                written.extend(taken.written_tags().map(str::to_owned));
                conditioned.extend(taken.condition_tags().map(str::to_owned));
                events += size;
                flight.push(taken);
            }
            if events >= self.options.max_flight_events {
                break;
            }
        }
        flight
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<QueuedAppend>> {
        // The queue holds no invariant a panicking holder could break.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a flight's shared transaction wrote nothing.
pub(crate) enum FlightFailure {
    /// The database refused the shared statement (a duplicate event id, a
    /// collision with a writer outside the flight): nothing was written,
    /// and writing each append alone gives each caller its own outcome.
    /// (Only PostgreSQL's shared statement fails this way.)
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    WriteEachAlone,
    /// The connection or the commit failed: the outcome is the same for
    /// everyone, and may be unknown.
    Failed(String),
}

/// A store that can write a flight.
pub(crate) trait FlightWriter: Clone + Send + Sync + 'static {
    /// The backend's name, for errors.
    const BACKEND: &'static str;

    /// What a flight task keeps from one flight to the next while appends
    /// keep coming (PostgreSQL: its connection, so that consecutive flights
    /// skip the pool's check of an idle connection, a round trip each);
    /// dropped when the queue is empty and the task ends.
    type Lane: Default + Send;

    /// One append in a transaction of its own.
    fn append_alone<'a>(
        &'a self,
        lane: &'a mut Self::Lane,
        batch: &'a [StreamAppend],
    ) -> impl Future<Output = Result<Vec<AppendResult>>> + Send + 'a;

    /// Several callers' appends in one transaction: each caller's outcome,
    /// once it committed.
    fn write_together<'a>(
        &'a self,
        lane: &'a mut Self::Lane,
        flight: &'a [QueuedAppend],
    ) -> impl Future<Output = std::result::Result<Vec<Result<Vec<AppendResult>>>, FlightFailure>>
    + Send
    + 'a;
}

/// Appends `batch` through `group`: queues it, starts a flight task when
/// a slot is free, and waits for the answer.
pub(crate) async fn submit<W: FlightWriter>(
    group: &Arc<GroupCommit>,
    writer: &W,
    batch: Vec<StreamAppend>,
) -> Result<Vec<AppendResult>> {
    let (answer, slot) = group.enqueue(batch);
    if let Some(slot) = slot {
        tokio::spawn(fly(Arc::clone(group), writer.clone(), slot));
    }
    answer.await.map_err(|_| Error::Backend {
        backend: W::BACKEND,
        operation: "append",
        source: "the group-commit flight ended without answering (runtime shutting down?); \
                 the append may or may not be stored"
            .into(),
    })?
}

/// A flight task: writes flights until the queue is empty.
async fn fly<W: FlightWriter>(group: Arc<GroupCommit>, writer: W, slot: OwnedSemaphorePermit) {
    let mut slot = Some(slot);
    let mut lane = W::Lane::default();
    let mut last = 0;
    loop {
        group.gather(last).await;
        let Some(flight) = group.next_flight(&mut slot) else {
            return;
        };
        last = flight.len();
        write_flight(&writer, &mut lane, flight).await;
    }
}

async fn write_flight<W: FlightWriter>(
    writer: &W,
    lane: &mut W::Lane,
    mut flight: Vec<QueuedAppend>,
) {
    if flight.len() == 1 {
        if let Some(queued) = flight.pop() {
            let _ = queued
                .reply
                .send(writer.append_alone(lane, &queued.batch).await);
        }
        return;
    }
    tracing::trace!(appends = flight.len(), "group commit flight");
    match writer.write_together(lane, &flight).await {
        Ok(outcomes) => {
            for (queued, outcome) in flight.into_iter().zip(outcomes) {
                let _ = queued.reply.send(outcome);
            }
        }
        Err(FlightFailure::WriteEachAlone) => {
            // One after the other, on the flight's lane.
            for queued in flight {
                let _ = queued
                    .reply
                    .send(writer.append_alone(lane, &queued.batch).await);
            }
        }
        Err(FlightFailure::Failed(message)) => {
            for queued in flight {
                let _ = queued.reply.send(Err(Error::Backend {
                    backend: W::BACKEND,
                    operation: "append",
                    source: message.clone().into(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::envelope::NewEvent;
    use crate::store::stream::{ExpectedVersion, StreamId};

    fn append(stream: &str, events: usize) -> Vec<StreamAppend> {
        let events = (0..events)
            .map(|_| NewEvent::json("noted", &serde_json::json!({})).expect("encodable"))
            .collect();
        vec![StreamAppend::new(
            StreamId::new(stream).expect("valid stream id"),
            ExpectedVersion::Any,
            events,
        )]
    }

    fn streams(flight: &[QueuedAppend]) -> Vec<&str> {
        flight
            .iter()
            .map(|queued| queued.batch[0].stream_id.as_str())
            .collect()
    }

    #[tokio::test]
    async fn a_flight_holds_one_append_per_stream_in_arrival_order() {
        let group = GroupCommit::new(GroupCommitOptions::default()).expect("valid options");
        let (_a, slot) = group.enqueue(append("a", 1));
        let (_b, _) = group.enqueue(append("b", 1));
        let (_a2, _) = group.enqueue(append("a", 1));
        let (_c, _) = group.enqueue(append("c", 1));
        let mut slot = slot;
        assert!(slot.is_some(), "the first append takes a free slot");

        let first = group.next_flight(&mut slot).expect("a flight");
        assert_eq!(streams(&first), ["a", "b", "c"]);
        let second = group.next_flight(&mut slot).expect("the deferred append");
        assert_eq!(streams(&second), ["a"]);
        assert!(group.next_flight(&mut slot).is_none());
        assert!(slot.is_none(), "an idle flight task gives its slot back");
        assert_eq!(group.queued(), 0);
    }

    #[tokio::test]
    async fn a_flight_stops_at_its_event_limit_but_never_starves_a_big_append() {
        let group = GroupCommit::new(GroupCommitOptions {
            flights: 1,
            max_flight_events: 4,
            max_append_events: 16,
        })
        .expect("valid options");
        assert!(!group.accepts(&append("big", 5)), "bigger than a flight");
        let (_x, slot) = group.enqueue(append("x", 3));
        let (_y, busy) = group.enqueue(append("y", 3));
        assert!(busy.is_none(), "the only slot is taken");
        let mut slot = slot;
        assert_eq!(streams(&group.next_flight(&mut slot).expect("x")), ["x"]);
        assert_eq!(streams(&group.next_flight(&mut slot).expect("y")), ["y"]);
    }

    #[tokio::test]
    async fn an_append_conditioned_on_a_tag_another_writes_waits_for_the_next_flight() {
        use crate::store::condition::{AppendCondition, Criterion};
        let tagged = |stream: &str, tag: &str| {
            let mut batch = append(stream, 1);
            batch[0].events[0].tags.push(tag.to_owned());
            batch
        };
        let conditioned = |stream: &str, tag: &str| {
            let mut batch = tagged(stream, tag);
            batch[0].condition = Some(AppendCondition::none_match(Criterion::tagged([tag])));
            batch
        };
        let group = GroupCommit::new(GroupCommitOptions::default()).expect("valid options");
        let (_a, slot) = group.enqueue(conditioned("a", "email:x"));
        let (_b, _) = group.enqueue(conditioned("b", "email:x"));
        let (_c, _) = group.enqueue(tagged("c", "email:y"));
        let (_d, _) = group.enqueue(tagged("d", "email:x"));
        let (_e, _) = group.enqueue(conditioned("e", "email:y"));
        let mut slot = slot;
        assert_eq!(
            streams(&group.next_flight(&mut slot).expect("first")),
            ["a", "c"]
        );
        assert_eq!(
            streams(&group.next_flight(&mut slot).expect("second")),
            ["b", "e"]
        );
        assert_eq!(
            streams(&group.next_flight(&mut slot).expect("third")),
            ["d"]
        );
    }

    #[test]
    fn zero_flights_is_a_configuration_error() {
        let error = GroupCommit::new(GroupCommitOptions {
            flights: 0,
            ..GroupCommitOptions::default()
        })
        .expect_err("zero flights");
        assert!(error.to_string().contains("0 flights"), "{error}");
    }
}
