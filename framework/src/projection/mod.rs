//! Projections: read models fed by events.
//!
//! `#[projection(name = "...", version = N)]` on an `impl` block implements
//! [`Projection`]: every method of the block handles the event type of its
//! first parameter. Bumping `version` means "rebuild me".

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres_copy;
pub mod runner;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod sql_read_model;

pub use runner::ProjectionRunner;

use async_trait::async_trait;

use crate::error::Result;
use crate::event::envelope::RecordedEvent;

/// A read model fed by events. Implemented by `#[projection]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a projection",
    note = "annotate an `impl {Self}` block of event handlers with `#[annals::projection(name = \"...\", version = 1)]`"
)]
#[async_trait]
pub trait Projection: Send {
    /// The projection's stable name.
    const NAME: &'static str;
    /// Its version: a new version means the read model must be rebuilt.
    const VERSION: u32;

    /// What every handler gets to write with: `()` for in-memory read
    /// models, a database connection (inside the transaction that also
    /// stores the projection's checkpoint) for SQL ones.
    type Context: Send + ?Sized;

    /// The event type names the projection handles.
    fn event_types() -> Vec<&'static str>;

    /// Whether [`apply`](Self::apply) reads the events' metadata (tenant,
    /// correlation, actor, headers). A runner that knows it does not reads
    /// the log without it ([`LogFilter::without_metadata`]); `#[projection]`
    /// says so when no handler takes the `&RecordedEvent`. `true` by default.
    ///
    /// [`LogFilter::without_metadata`]: crate::store::LogFilter::without_metadata
    fn reads_metadata() -> bool {
        true
    }

    /// Applies one event; events of types it does not handle are ignored.
    async fn apply(&mut self, event: &RecordedEvent, context: &mut Self::Context) -> Result<()>;

    /// Called after each batch of events, with the batch's context (for SQL
    /// read models, before the checkpoint is stored in the same
    /// transaction). A projection that buffers writes (rows for one
    /// multi-row insert, say) writes them here; set it with
    /// `#[projection(flush = Self::method)]`. Does nothing by default.
    ///
    /// When a SQL batch fails, `flush` is also called into the transaction
    /// that is being rolled back, so whatever the failed attempt buffered is
    /// discarded with it: take the buffer first (`std::mem::take`) and the
    /// retry starts clean.
    async fn flush(&mut self, context: &mut Self::Context) -> Result<()> {
        let _ = context;
        Ok(())
    }
}

/// Applies events to a projection in order, stopping at the first failure.
/// Returns how many events the projection handled.
///
/// This is the synchronous path: a subscription runtime drives projections
/// from the log continuously; this function feeds them a slice you have.
pub async fn project<'e, P: Projection>(
    projection: &mut P,
    events: impl IntoIterator<Item = &'e RecordedEvent>,
    context: &mut P::Context,
) -> Result<usize> {
    let handled = P::event_types();
    let mut count = 0;
    for event in events {
        if handled.contains(&event.event_type.as_str()) {
            projection.apply(event, context).await?;
            count += 1;
        }
    }
    projection.flush(context).await?;
    Ok(count)
}
