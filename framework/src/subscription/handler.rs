//! Event handlers: async functions that react to events (send a welcome
//! mail, write an audit entry), registered by `#[handler]`.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::error::BoxError;
use crate::event::envelope::RecordedEvent;

/// Calls a handler with a stored event (decoding it first).
pub type HandlerFn = for<'a> fn(&'a RecordedEvent) -> BoxFuture<'a, Result<(), BoxError>>;

/// How often and how patiently to retry a failing handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1: no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// Three attempts, starting at 100 ms.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 3,
        backoff: Duration::from_millis(100),
    };
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

/// What a handler (or projection handler) may return: nothing, or a
/// `Result` whose error explains the failure.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not what an event handler returns",
    label = "the handler returns `{Self}`",
    note = "return `()` or `Result<(), E>` where `E` converts into `Box<dyn Error + Send + Sync>`"
)]
pub trait IntoHandlerResult {
    /// Normalises to a `Result`.
    fn into_handler_result(self) -> Result<(), BoxError>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}
