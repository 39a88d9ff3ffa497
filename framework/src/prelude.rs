//! The names almost every user of Annals needs: `use annals::prelude::*;`.

pub use crate::aggregate::{Aggregate, Apply, Handle};
pub use crate::envelope::{NewEvent, RecordedEvent};
pub use crate::error::{Error, Result};
pub use crate::event::Event;
pub use crate::metadata::Metadata;
pub use crate::payload::Payload;
pub use crate::position::LogPosition;
pub use crate::projection::Projection;
pub use crate::repository::{CommandError, Repository, UnitOfWork};
#[cfg(feature = "postgres")]
pub use crate::store::PostgresEventStore;
#[cfg(feature = "sqlite")]
pub use crate::store::SqliteEventStore;
pub use crate::store::{EventQuery, EventStore, EventStoreExt, InMemoryEventStore, StreamAppend};
pub use crate::stream::{ExpectedVersion, StreamId};
pub use crate::{aggregate, event, handler, projection};
