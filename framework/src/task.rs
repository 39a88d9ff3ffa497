//! Background tasks: the one handle every runner Annals starts returns.
//!
//! A [`Subscription`](crate::subscription::Subscription), a
//! [`ProjectionRunner`](crate::projection::ProjectionRunner) and a
//! [`Replays`](crate::replay::Replays) replay each run in a Tokio task and
//! hand back a [`TaskHandle`]: the same methods, the same meaning, the same
//! errors, whatever runs behind it.
//!
//! | method | what it does |
//! | --- | --- |
//! | [`status`](TaskHandle::status) | the latest status (a [`SubscriptionStatus`](crate::subscription::SubscriptionStatus), [`ProjectionStatus`](crate::projection::runner::ProjectionStatus) or [`ReplayProgress`](crate::replay::ReplayProgress)) |
//! | [`updates`](TaskHandle::updates) | the status now, then every change until the task ends |
//! | [`wait_until`](TaskHandle::wait_until) | waits, at most a given time, for a status; [`Error::TaskStopped`] if the task ends first, [`Error::WaitTimedOut`] if the time runs out |
//! | [`wait_for_position`](TaskHandle::wait_for_position) | a subscription or projection: waits, at most a given time, until it has read up to a log position (read-your-writes) |
//! | [`request_stop`](TaskHandle::request_stop) | asks the task to stop after the item in hand, without waiting |
//! | [`stop`](TaskHandle::stop) | asks, then waits for the end and returns the task's output |
//! | [`finish`](TaskHandle::finish) | waits for the end without asking (a replay that runs to completion) |
//!
//! A task that ends in a panic (or whose runtime shut down) reports
//! [`Error::TaskFailed`] from `stop` and `finish`. A runner started outside
//! a Tokio runtime does not run, and its handle answers
//! [`Error::NoRuntime`] instead of panicking. Dropping the handle of a
//! subscription or a projection stops it after the item in hand; a replay
//! runs on, and [`Replays::status`](crate::replay::Replays::status) still
//! tells its progress.
//!
//! ```
//! use annals::prelude::*;
//! use annals::subscription::{EventSink, Subscription};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! struct Ignore;
//!
//! #[annals::async_trait]
//! impl EventSink for Ignore {
//!     async fn handle(&mut self, _: &RecordedEvent) -> Result<(), annals::error::BoxError> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let store = Arc::new(InMemoryEventStore::new());
//! let handle = Subscription::new(store, "ignore").without_lease().start(Ignore);
//! assert_eq!(handle.name(), "ignore");
//! handle.wait_until(Duration::from_secs(5), |status| status.caught_up).await?;
//! handle.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::store::position::LogPosition;

/// The status of a reader of the log: how far it has read.
pub trait ReaderStatus {
    /// The position of the last event it has handled, or read past.
    fn position(&self) -> LogPosition;
}

impl<S, O> TaskHandle<S, O>
where
    S: ReaderStatus + Clone + Send + Sync + 'static,
{
    /// Waits at most `timeout` until the reader has handled (or read past)
    /// `position`: read-your-writes, with the position an append or a
    /// command returned ([`Executed::position`](crate::aggregate::repository::Executed::position)).
    pub async fn wait_for_position(&self, position: LogPosition, timeout: Duration) -> Result<S> {
        self.wait_until(timeout, |status| status.position() >= position)
            .await
    }
}

/// A runner working in the background: a subscription, a projection or a
/// replay. See the [module docs](self) for the vocabulary.
#[derive(Debug)]
pub struct TaskHandle<S, O> {
    /// `subscription`, `projection` or `replay`, for errors.
    kind: &'static str,
    /// The runner's name (a subscription's or projection's, a replay's id).
    name: String,
    status: watch::Receiver<S>,
    stop: watch::Sender<bool>,
    /// `None`: there was no Tokio runtime to run it on.
    task: Option<JoinHandle<Result<O>>>,
}

impl<S, O> TaskHandle<S, O>
where
    S: Clone + Send + Sync + 'static,
{
    /// Spawns `work` on the current Tokio runtime, publishing its status on
    /// `status` and watching `stop` (its sender dropped with the handle).
    /// Without a runtime nothing runs, and every method of the handle that
    /// waits or returns the output says so ([`Error::NoRuntime`]).
    pub(crate) fn spawn<F>(
        kind: &'static str,
        name: impl Into<String>,
        status: watch::Receiver<S>,
        stop: watch::Sender<bool>,
        work: F,
    ) -> Self
    where
        F: std::future::Future<Output = Result<O>> + Send + 'static,
        O: Send + 'static,
    {
        let name = name.into();
        let task = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn(work)),
            Err(_) => {
                tracing::error!(task = kind, %name, "started outside a Tokio runtime: not running");
                None
            }
        };
        TaskHandle {
            kind,
            name,
            status,
            stop,
            task,
        }
    }

    fn no_runtime(&self) -> Error {
        Error::NoRuntime {
            task: self.kind,
            name: self.name.clone(),
        }
    }

    /// The runner's name: a subscription's or a projection's, or a replay's
    /// id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The latest status.
    pub fn status(&self) -> S {
        self.status.borrow().clone()
    }

    /// Whether the task has ended (stopped, finished or failed), or never
    /// ran (no runtime).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The current status, then every change, until the task ends.
    pub fn updates(&self) -> BoxStream<'static, S> {
        let receiver = self.status.clone();
        stream::unfold((receiver, true), |(mut receiver, first)| async move {
            // After the first item, wait for a change; a closed channel with
            // nothing new means the task is gone.
            if !first && receiver.changed().await.is_err() {
                return None;
            }
            let current = receiver.borrow_and_update().clone();
            Some((current, (receiver, false)))
        })
        .boxed()
    }

    /// Waits at most `timeout` until the status satisfies `condition`, and
    /// returns it. Fails with [`Error::TaskStopped`] if the task ends first,
    /// and with [`Error::WaitTimedOut`] if the time runs out.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl FnMut(&S) -> bool,
    ) -> Result<S> {
        if self.task.is_none() {
            return Err(self.no_runtime());
        }
        let mut receiver = self.status.clone();
        match tokio::time::timeout(timeout, receiver.wait_for(condition)).await {
            Ok(Ok(status)) => Ok(status.clone()),
            Ok(Err(_)) => Err(Error::TaskStopped {
                task: self.kind,
                name: self.name.clone(),
            }),
            Err(_) => Err(Error::WaitTimedOut {
                task: self.kind,
                name: self.name.clone(),
                waited: timeout,
            }),
        }
    }

    /// Asks the task to stop after the item in hand; returns at once.
    pub fn request_stop(&self) {
        // No receiver: the task has ended already.
        let _ = self.stop.send(true);
    }

    /// Asks the task to stop after the item in hand, waits for it to end,
    /// and returns its output (a subscription's sink, a replay's result so
    /// far).
    pub async fn stop(self) -> Result<O> {
        self.request_stop();
        self.finish().await
    }

    /// Waits for the task to end on its own (a replay's completion) and
    /// returns its output. Bound it with [`tokio::time::timeout`] if it may
    /// run long; dropping the wait leaves the task running.
    pub async fn finish(self) -> Result<O> {
        let Some(task) = self.task else {
            return Err(Error::NoRuntime {
                task: self.kind,
                name: self.name,
            });
        };
        let TaskHandle {
            kind, name, stop, ..
        } = self;
        let outcome = task.await;
        drop(stop);
        outcome.map_err(|error| Error::TaskFailed {
            task: kind,
            name,
            source: Box::new(error),
        })?
    }
}
