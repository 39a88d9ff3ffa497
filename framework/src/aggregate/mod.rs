//! Aggregates: state rebuilt from its events, deciding commands.
//!
//! `#[aggregate]` implements [`Aggregate`] for a state struct; you write one
//! [`Apply`] per accepted event type (how the state changes) and one
//! [`Handle`] per command (which events a command produces, or why it is
//! rejected).

pub mod repository;
pub mod snapshot;

pub use repository::{CommandError, Repository, UnitOfWork};

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::event::Event;
use crate::event::payload::Payload;
use crate::store::stream::StreamId;

/// An aggregate's state. Implemented by `#[aggregate]`.
///
/// Its stream ids are `{NAME}-{id}`. The state is serialisable for
/// snapshots, which carry [`SNAPSHOT_VERSION`](Self::SNAPSHOT_VERSION): bump
/// it when the state's shape changes, and older snapshots are ignored and the
/// state rebuilt from events.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate",
    label = "not an aggregate",
    note = "annotate the state struct with `#[annals::aggregate(events(...))]`"
)]
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type name: the stream category.
    const NAME: &'static str;
    /// The shape version of the serialised state.
    const SNAPSHOT_VERSION: u32;
    /// Take a snapshot every this many events (`None`: only on demand).
    const SNAPSHOT_EVERY: Option<u64>;

    /// The events this aggregate accepts.
    type Event: Event;

    /// Applies one event to the state, dispatching to its [`Apply`] impl.
    /// Must not fail: events are facts. (Named apart from [`Apply::apply`]
    /// so both traits can be in scope.)
    fn apply_event(&mut self, event: &Self::Event);

    /// The stream id of the instance `id`.
    fn stream_id(id: &dyn Display) -> Result<StreamId> {
        StreamId::for_aggregate(Self::NAME, id)
    }

    /// The state as a snapshot payload.
    fn snapshot(&self) -> Result<Payload, serde_json::Error> {
        Payload::from_serialize(self)
    }

    /// The state from a snapshot, or `None` if the snapshot has another
    /// shape version or does not decode (then rebuild from events).
    fn restore(snapshot_version: u32, payload: &Payload) -> Option<Self> {
        if snapshot_version != Self::SNAPSHOT_VERSION {
            return None;
        }
        payload.decode().ok()
    }
}

/// How an aggregate's state changes when an event of type `E` happened.
///
/// ```
/// # use annals::Apply;
/// # struct User { active: bool }
/// # struct UserDeactivated;
/// impl Apply<UserDeactivated> for User {
///     fn apply(&mut self, _event: &UserDeactivated) {
///         self.active = false;
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` accepts the event `{E}` but has no apply logic for it",
    label = "no `Apply<{E}>` implementation for `{Self}`",
    note = "add `impl annals::Apply<{E}> for {Self} {{ fn apply(&mut self, event: &{E}) {{ ... }} }}`"
)]
pub trait Apply<E> {
    /// Changes the state.
    fn apply(&mut self, event: &E);
}

/// How an aggregate decides a command of type `C`: the events it produces,
/// or why it is refused. Deciding must not change the state; the repository
/// applies the produced events after they are stored.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not handle the command `{C}`",
    note = "add `impl annals::Handle<{C}> for {Self}`"
)]
pub trait Handle<C>: Aggregate {
    /// Why a command is refused (the domain error).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides the command against the current state.
    fn handle(&self, command: &C) -> Result<Vec<Self::Event>, Self::Error>;
}
