//! How a reader of the log learns that new events may have been committed,
//! without losing a wake-up: a [`LogWatch`] remembers which appends its
//! reader has already accounted for, so an append that lands between the
//! reader's last read and its wait still wakes it.

use std::time::Duration;

use tokio::sync::watch;

/// A reader's view of a store's appends. Take one with
/// [`EventStore::watch_log`](super::EventStore::watch_log) when the reader
/// starts; before each read of the log call [`mark_seen`](Self::mark_seen),
/// and when the read came back empty wait with [`changed`](Self::changed).
///
/// PostgreSQL signals appends from any process (`LISTEN`/`NOTIFY`), the
/// in-process stores their own appends; a store that signals nothing gives a
/// watch that only times out, so its readers poll. A signal is a hint: the
/// reader reads the log either way.
///
/// ```
/// use std::time::Duration;
/// use annals::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = InMemoryEventStore::new();
/// let mut watch = store.watch_log().await;
/// watch.mark_seen();
/// assert!(store.read_all(LogPosition::START, 10).await?.is_empty());
/// // An append lands after the empty read, before the wait...
/// let event = NewEvent::json("iam.user.registered", &serde_json::json!({}))?;
/// store.append(&StreamId::new("user-1")?, ExpectedVersion::NoStream, vec![event]).await?;
/// // ...and the wait returns at once.
/// assert!(watch.changed(Duration::from_secs(30)).await);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LogWatch {
    /// The store's append counter; `None` for a store that signals nothing.
    appends: Option<watch::Receiver<u64>>,
}

impl LogWatch {
    /// A watch that never signals: readers poll.
    pub fn polling() -> Self {
        LogWatch { appends: None }
    }

    /// A watch over a store's append counter.
    pub(crate) fn new(appends: watch::Receiver<u64>) -> Self {
        LogWatch {
            appends: Some(appends),
        }
    }

    /// Accounts for every append signalled so far: call it just before
    /// reading the log.
    pub fn mark_seen(&mut self) {
        if let Some(appends) = &mut self.appends {
            appends.borrow_and_update();
        }
    }

    /// Returns `true` as soon as an append was signalled since the last
    /// [`mark_seen`](Self::mark_seen) (at once if one already was), or
    /// `false` after `timeout`.
    pub async fn changed(&mut self, timeout: Duration) -> bool {
        if let Some(appends) = &mut self.appends {
            match tokio::time::timeout(timeout, appends.changed()).await {
                Ok(Ok(())) => return true,
                Err(_) => return false,
                // The store is gone: nothing will signal again.
                Ok(Err(_)) => self.appends = None,
            }
        }
        tokio::time::sleep(timeout).await;
        false
    }
}

/// The sending side a store keeps: one counter bumped per signalled append.
#[derive(Debug)]
pub(crate) struct AppendSignal(watch::Sender<u64>);

impl Default for AppendSignal {
    fn default() -> Self {
        AppendSignal(watch::Sender::new(0))
    }
}

impl AppendSignal {
    /// Signals an append to every watch (there may be none).
    pub(crate) fn signal(&self) {
        self.0
            .send_modify(|appends| *appends = appends.wrapping_add(1));
    }

    /// A new watch, with nothing signalled yet to it.
    pub(crate) fn watch(&self) -> LogWatch {
        LogWatch::new(self.0.subscribe())
    }
}
