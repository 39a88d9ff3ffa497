//! Checkpoints, and the leases that give each checkpointed reader one owner.
//!
//! Every long-running reader of the log that keeps its place in the store
//! (a [`Subscription`](crate::subscription::Subscription), a SQL
//! [`ProjectionRunner`](crate::projection::runner::ProjectionRunner), a
//! publisher behind a subscription) keeps it here, in one row per reader.
//! The row is keyed like everything else of a store: by its schema and
//! table prefix (it lives in the store's `checkpoints` table), by its tenant
//! (a tenant handle's rows are its own) and by the reader's name.
//!
//! The same row holds the reader's **lease**. With several instances of a
//! service running the same reader, one takes the lease
//! ([`CheckpointStore::acquire`]) and renews it while it works; the others
//! stand by and take over once it expires. Taking over bumps the row's
//! **generation**, and every checkpoint write names the generation it was
//! made under ([`CheckpointStore::commit`], and the SQL read models'
//! transactions), so a worker that lost its lease (stalled, cut off,
//! paused past its expiry) can no longer move the checkpoint or commit a
//! read-model batch: its write fails with [`Error::LeaseLost`] and nothing
//! of it is stored.
//!
//! Expiry is judged by the database's clock on PostgreSQL, so instances'
//! clocks need not agree, and a lease is plain row state, taken, renewed
//! and fenced in single short transactions: it needs no session state (no
//! advisory lock, no `LISTEN`), which a transaction-mode pooler would not
//! keep, and its statements are sent unnamed: the leases hold through
//! PgBouncer in transaction mode. (The rest of the store is not yet
//! pooler-safe: the driver names its prepared statements, which PgBouncer
//! before 1.21 refuses.)
//!
//! ```
//! use annals::checkpoint::CheckpointStore;
//! use annals::prelude::*;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let store = InMemoryEventStore::new();
//! let checkpoints = store.checkpoints();
//! let ttl = Duration::from_secs(15);
//!
//! let lease = checkpoints.acquire("mailer", "instance-a", ttl).await?.expect("free");
//! assert!(checkpoints.acquire("mailer", "instance-b", ttl).await?.is_none(), "held by a");
//! checkpoints.commit(&lease, LogPosition::START, LogPosition::new(1, 1)).await?;
//!
//! // Once a's lease is gone, b takes over under a new generation, and a's
//! // late write is refused.
//! checkpoints.release(&lease).await?;
//! let taken = checkpoints.acquire("mailer", "instance-b", ttl).await?.expect("released");
//! assert_eq!(taken.generation, lease.generation + 1);
//! assert_eq!(taken.position, LogPosition::new(1, 1));
//! let late = checkpoints.commit(&lease, LogPosition::new(1, 1), LogPosition::new(2, 2)).await;
//! assert!(matches!(late, Err(Error::LeaseLost { .. })));
//! # Ok(())
//! # }
//! ```

mod memory;
mod ownership;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::store::position::LogPosition;

pub(crate) use memory::MemoryCheckpoints;
pub(crate) use ownership::{HeldLease, Ownership};
pub use ownership::{LeaseSettings, OwnershipStatus, default_owner_name};

/// A reader's stored checkpoint and lease, as an operator would see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The reader's name.
    pub name: String,
    /// The position the reader resumes after.
    pub position: LogPosition,
    /// The worker that holds (or last held) the lease; `None` when it was
    /// released or never taken.
    pub owner: Option<String>,
    /// How many times the lease was taken (0: never).
    pub generation: u64,
    /// When the owner last renewed the lease.
    pub renewed_at: Option<DateTime<Utc>>,
    /// When the lease runs out unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether an operator paused the reader
    /// ([`CheckpointStore::set_paused`]).
    pub paused: bool,
    /// Whether an operator asked for the (projection) reader's read model
    /// to be rebuilt in place ([`CheckpointStore::request_rebuild`]).
    pub rebuild_requested: bool,
}

/// A lease on a reader, held by one worker until it expires or is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The reader's name.
    pub name: String,
    /// The worker holding it.
    pub owner: String,
    /// The generation it was taken under; writes made under an older one
    /// are refused.
    pub generation: u64,
    /// The reader's checkpoint when the lease was taken.
    pub position: LogPosition,
    /// When it was taken or last renewed (the store's clock).
    pub renewed_at: DateTime<Utc>,
    /// When it runs out unless renewed (the store's clock).
    pub expires_at: DateTime<Utc>,
    /// Whether the reader was paused when the lease was taken or last
    /// renewed: its owner waits, keeping the lease, until it is resumed.
    pub paused: bool,
    /// Whether a rebuild was requested when the lease was taken or last
    /// renewed: a projection's owner empties its read model and starts
    /// over from the beginning of the log.
    pub rebuild_requested: bool,
}

/// Where readers keep their checkpoints and leases: one row per reader in
/// the store's schema, table prefix and tenant. Every store provides one
/// ([`EventStore::checkpoints`](crate::store::EventStore::checkpoints)), as
/// do the SQL read models, whose batches commit their checkpoint in their
/// own transaction.
#[async_trait]
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// The reader's checkpoint and lease, if it has a row.
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>>;

    /// Every reader's checkpoint and lease in this store (and tenant),
    /// ordered by name: what an operator's status page lists.
    async fn list(&self) -> Result<Vec<Checkpoint>>;

    /// Sets the reader's checkpoint whoever holds its lease: an operator's
    /// reset or rewind. A running owner notices at its next commit, which
    /// fails with [`Error::CheckpointMoved`], and resumes from here.
    async fn save(&self, name: &str, position: LogPosition) -> Result<()>;

    /// Pauses (`true`) or resumes (`false`) the reader, whoever holds its
    /// lease: from then on its checkpoint writes under a lease fail with
    /// [`Error::ReaderPaused`] (nothing of the batch is stored), and its
    /// owner, which learns of it when it renews its lease, waits without
    /// reading until it is resumed. `false` if the reader has no row.
    /// Readers without a lease (per-instance subscriptions) are not
    /// paused.
    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool>;

    /// Asks (`true`) the owner of a projection to rebuild its read model in
    /// place, or withdraws the request (`false`): the owner learns of it at
    /// its next lease renewal and, in one transaction, empties the tables
    /// the projection declares and moves its checkpoint back to the start
    /// (which clears the request). `false` if the reader has no row.
    async fn request_rebuild(&self, name: &str, requested: bool) -> Result<bool>;

    /// Takes the reader's lease for `owner` for `ttl` if nobody holds a live
    /// one; `None` if someone does (a worker of the same name too: two
    /// runners of one reader in one process do not both own it). Each
    /// taking bumps the generation.
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// Extends a held lease by `ttl` from now; `None` if it was taken over
    /// (its generation moved on) or released.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>>;

    /// Gives the lease up at once, so a standby takes over without waiting
    /// for it to expire. Releasing a lease already lost does nothing.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Moves the checkpoint from `previous` to `next` under `lease`: fails
    /// with [`Error::LeaseLost`] if the lease was taken over, and with
    /// [`Error::CheckpointMoved`] if the checkpoint is no longer at
    /// `previous` (an operator moved it); nothing is written then.
    async fn commit(&self, lease: &Lease, previous: LogPosition, next: LogPosition) -> Result<()>;
}

/// Why a fenced checkpoint write did not happen, from what the row holds.
pub(crate) fn refusal(
    lease: &Lease,
    previous: LogPosition,
    found: Option<(u64, LogPosition, bool)>,
) -> Error {
    match found {
        Some((generation, _, true)) if generation == lease.generation => Error::ReaderPaused {
            reader: lease.name.clone(),
        },
        Some((generation, position, _)) if generation == lease.generation => {
            Error::CheckpointMoved {
                reader: lease.name.clone(),
                expected: previous,
                found: position,
            }
        }
        found => Error::LeaseLost {
            reader: lease.name.clone(),
            generation: lease.generation,
            current_generation: found.map(|(generation, _, _)| generation),
        },
    }
}

/// A lease's length as the fractional seconds SQL takes.
#[cfg(feature = "postgres")]
pub(crate) fn ttl_seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}
