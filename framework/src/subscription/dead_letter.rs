//! Dead letters: an event a handler still failed on after every retry (or
//! while its circuit was open), kept with the error so it can be inspected
//! and retried.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::store::stream::StreamId;

/// One event a handler could not process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's own id.
    pub id: Uuid,
    /// The handler's name.
    pub handler: String,
    /// The event.
    pub event_id: Uuid,
    /// The event's stream.
    pub stream_id: StreamId,
    /// The event's version in its stream.
    pub version: u64,
    /// The event's type name.
    pub event_type: String,
    /// The last error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was given up on (microsecond precision, UTC).
    pub failed_at: DateTime<Utc>,
    /// When an operator asked for it to be retried
    /// ([`DeadLetterStore::request_retry`]); `None` when nobody has, or
    /// after a requested retry failed again.
    pub retry_requested_at: Option<DateTime<Utc>>,
}

/// Where a store keeps its dead letters (in its schema, table prefix and,
/// for a tenant handle, tenant). Reach it through
/// [`EventStore::dead_letters`](crate::store::EventStore::dead_letters);
/// subscriptions write to it when a handler gives up.
///
/// ```
/// use annals::subscription::dead_letter::DeadLetter;
/// use annals::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = InMemoryEventStore::new();
/// let letter = DeadLetter {
///     id: uuid::Uuid::new_v4(),
///     handler: "mailer".into(),
///     event_id: uuid::Uuid::new_v4(),
///     stream_id: StreamId::new("user-1")?,
///     version: 1,
///     event_type: "iam.user.registered".into(),
///     error: "smtp: connection refused".into(),
///     attempts: 5,
///     failed_at: chrono::Utc::now(),
///     retry_requested_at: None,
/// };
/// store.dead_letters().save(letter.clone()).await?;
/// assert_eq!(store.dead_letters().list(10).await?, vec![letter.clone()]);
/// assert_eq!(store.dead_letters().get(letter.id).await?, Some(letter.clone()));
///
/// // An operator asks for a retry; the handler registry that has the
/// // handler runs it when its subscription is idle.
/// assert!(store.dead_letters().request_retry(letter.id).await?);
/// let requested = store.dead_letters().retry_requests(10).await?;
/// assert_eq!(requested[0].id, letter.id);
/// assert!(requested[0].retry_requested_at.is_some());
/// assert!(store.dead_letters().delete(letter.id).await?);
/// assert!(!store.dead_letters().delete(letter.id).await?, "already gone");
/// # Ok(())
/// # }
/// ```
#[async_trait::async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Records a dead letter.
    async fn save(&self, letter: DeadLetter) -> Result<()>;

    /// Up to `limit` dead letters, oldest first.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>>;

    /// The dead letter with this id, if there is one.
    async fn get(&self, id: Uuid) -> Result<Option<DeadLetter>>;

    /// Asks for the dead letter to be retried by the handler registry that
    /// runs its handler (when its subscription is next idle); `false` if
    /// there is none with that id.
    async fn request_retry(&self, id: Uuid) -> Result<bool>;

    /// Up to `limit` dead letters whose retry was requested, longest
    /// waiting first.
    async fn retry_requests(&self, limit: usize) -> Result<Vec<DeadLetter>>;

    /// A requested retry failed again: records its error, adds its
    /// attempts and clears the request (an operator asks again).
    async fn retry_failed(&self, id: Uuid, error: &str, attempts: u32) -> Result<()>;

    /// Deletes a dead letter; `false` if there was none with that id.
    async fn delete(&self, id: Uuid) -> Result<bool>;
}
