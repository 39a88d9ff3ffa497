//! Given/when/then tests for aggregates and projections, and a store that
//! counts what it was asked ([`RecordingStore`]) (feature `testing`).
//!
//! ```
//! use annals::testing::AggregateTest;
//! # use annals::{Apply, Handle};
//! # #[annals::event(name = "lamp.switched")]
//! # #[derive(Debug, PartialEq, Clone)]
//! # struct Switched { on: bool }
//! # #[annals::aggregate(name = "lamp", events(Switched))]
//! # #[derive(Default)]
//! # struct Lamp { on: bool }
//! # impl Apply<Switched> for Lamp { fn apply(&mut self, e: &Switched) { self.on = e.on } }
//! # struct TurnOn;
//! # #[derive(Debug, PartialEq, thiserror::Error)]
//! # #[error("already on")]
//! # struct AlreadyOn;
//! # impl Handle<TurnOn> for Lamp {
//! #     type Error = AlreadyOn;
//! #     fn handle(&self, _: &TurnOn) -> Result<Vec<Switched>, AlreadyOn> {
//! #         if self.on { Err(AlreadyOn) } else { Ok(vec![Switched { on: true }]) }
//! #     }
//! # }
//! AggregateTest::<Lamp>::given_no_events()
//!     .when(&TurnOn)
//!     .then_events([Switched { on: true }]);
//!
//! AggregateTest::<Lamp>::given([Switched { on: true }])
//!     .when(&TurnOn)
//!     .then_error(AlreadyOn);
//! ```

mod recording_store;

pub use recording_store::RecordingStore;

use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use chrono::Utc;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Handle};
use crate::event::Event;
use crate::event::envelope::RecordedEvent;
use crate::event::metadata::Metadata;
use crate::projection::{Projection, project};
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;

/// An aggregate test: past events, then a command, then what must follow.
#[derive(Debug)]
pub struct AggregateTest<A> {
    state: A,
}

impl<A: Aggregate> AggregateTest<A> {
    /// Starts from the state these events produce.
    pub fn given(events: impl IntoIterator<Item = impl Into<A::Event>>) -> Self {
        let mut state = A::default();
        for event in events {
            state.apply_event(&event.into());
        }
        AggregateTest { state }
    }

    /// Starts from the default state.
    pub fn given_no_events() -> Self {
        AggregateTest {
            state: A::default(),
        }
    }

    /// Decides `command` on the state.
    pub fn when<C>(self, command: &C) -> AggregateOutcome<A, <A as Handle<C>>::Error>
    where
        A: Handle<C>,
    {
        let result = self.state.handle(command);
        AggregateOutcome {
            state: self.state,
            result,
        }
    }
}

/// What a command decided, to assert on.
#[derive(Debug)]
pub struct AggregateOutcome<A: Aggregate, E> {
    state: A,
    result: Result<Vec<A::Event>, E>,
}

impl<A: Aggregate, E: Debug> AggregateOutcome<A, E> {
    /// Asserts the command produced exactly these events; returns the state
    /// after applying them, for further checks.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = impl Into<A::Event>>) -> A
    where
        A::Event: PartialEq + Debug,
    {
        let expected: Vec<A::Event> = expected.into_iter().map(Into::into).collect();
        match self.result {
            Ok(events) => {
                assert_eq!(
                    events, expected,
                    "the command produced other events than expected"
                );
                let mut state = self.state;
                for event in &events {
                    state.apply_event(event);
                }
                state
            }
            Err(error) => {
                panic!("expected events {expected:?}, but the command was rejected: {error:?}")
            }
        }
    }

    /// Asserts the command was rejected with exactly this error.
    #[track_caller]
    pub fn then_error(self, expected: E)
    where
        E: PartialEq,
        A::Event: Debug,
    {
        match self.result {
            Err(error) => assert_eq!(
                error, expected,
                "the command was rejected with another error"
            ),
            Ok(events) => {
                panic!("expected the error {expected:?}, but the command produced {events:?}")
            }
        }
    }

    /// Asserts the command was rejected with an error satisfying `check`.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&E) -> bool)
    where
        A::Event: Debug,
    {
        match self.result {
            Err(error) => assert!(check(&error), "the rejection {error:?} does not match"),
            Ok(events) => panic!("expected a rejection, but the command produced {events:?}"),
        }
    }
}

/// A projection test: events in, then the read model's state.
///
/// Runs in-memory projections (`Context = ()`) to completion without a
/// runtime; events get consecutive versions in the stream `test-1`.
#[derive(Debug)]
pub struct ProjectionTest<P> {
    projection: P,
    next_version: u64,
}

impl<P: Projection<Context = ()>> ProjectionTest<P> {
    /// Starts from this read model.
    pub fn new(projection: P) -> Self {
        ProjectionTest {
            projection,
            next_version: 1,
        }
    }

    /// Feeds typed events (with empty metadata).
    #[track_caller]
    pub fn given<E: Event>(self, events: impl IntoIterator<Item = E>) -> Self {
        self.given_with_metadata(events.into_iter().map(|event| (event, Metadata::new())))
    }

    /// Feeds typed events with their metadata.
    #[track_caller]
    pub fn given_with_metadata<E: Event>(
        mut self,
        events: impl IntoIterator<Item = (E, Metadata)>,
    ) -> Self {
        let recorded: Vec<RecordedEvent> = events
            .into_iter()
            .map(|(event, metadata)| {
                let version = self.next_version;
                self.next_version += 1;
                recorded(&event, version, metadata)
            })
            .collect();
        let mut context = ();
        let run = project(&mut self.projection, &recorded, &mut context);
        match block_on(run) {
            Ok(_) => self,
            Err(error) => panic!("the projection failed: {error}"),
        }
    }

    /// Asserts on the read model.
    pub fn then(self, check: impl FnOnce(&P)) -> P {
        check(&self.projection);
        self.projection
    }

    /// The read model.
    pub fn into_inner(self) -> P {
        self.projection
    }
}

/// Wraps a typed event as if the store had recorded it.
pub fn recorded<E: Event>(event: &E, version: u64, metadata: Metadata) -> RecordedEvent {
    let payload = match event.to_payload() {
        Ok(payload) => payload,
        Err(error) => panic!("`{}` does not serialise: {error}", event.event_type()),
    };
    RecordedEvent {
        event_id: Uuid::now_v7(),
        stream_id: StreamId::new("test-1").unwrap_or_else(|_| unreachable!("a valid literal")),
        version,
        position: LogPosition::new(version, version),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        payload,
        metadata,
        recorded_at: Utc::now(),
        tags: event.tags(),
    }
}

/// Polls a future that does no I/O to completion.
#[track_caller]
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    panic!(
        "the projection waits on I/O; test it with `annals::projection::project` inside a runtime"
    )
}
