//! The names almost every user of Annals needs: `use annals::prelude::*;`.

pub use crate::aggregate::repository::{CommandError, Repository, UnitOfWork};
pub use crate::aggregate::{Aggregate, Apply, Handle};
pub use crate::decision::{Appends, Decision, Decisions};
pub use crate::error::{Error, Result};
pub use crate::event::Event;
pub use crate::event::envelope::{NewEvent, RecordedEvent};
pub use crate::event::metadata::Metadata;
pub use crate::event::payload::Payload;
pub use crate::projection::Projection;
#[cfg(feature = "postgres")]
pub use crate::store::PostgresEventStore;
#[cfg(feature = "sqlite")]
pub use crate::store::SqliteEventStore;
pub use crate::store::position::LogPosition;
pub use crate::store::stream::{ExpectedVersion, StreamId};
pub use crate::store::{EventQuery, EventStore, EventStoreExt, InMemoryEventStore, StreamAppend};
pub use crate::{aggregate, commands, event, handler, projection};
