//! Building blocks for tests that append from many tasks at once: a small
//! event, a one-stream batch, and an append run on its own task.

use annals::prelude::*;
use annals::store::{AppendResult, StreamAppend};
use tokio::task::JoinHandle;

/// A stream id the test knows to be valid.
pub fn stream(id: &str) -> StreamId {
    StreamId::new(id).unwrap_or_else(|error| panic!("test stream id {id:?}: {error}"))
}

/// A `noted` event carrying `n`.
pub fn noted(n: u64) -> NewEvent {
    NewEvent::json("noted", &serde_json::json!({ "n": n }))
        .unwrap_or_else(|error| panic!("a small JSON payload encodes: {error}"))
}

/// One event for one stream.
pub fn single(id: &str, expected: ExpectedVersion, n: u64) -> Vec<StreamAppend> {
    vec![StreamAppend::new(stream(id), expected, vec![noted(n)])]
}

/// Appends `batch` on a task of its own.
pub fn spawn_append<S>(store: &S, batch: Vec<StreamAppend>) -> JoinHandle<Result<Vec<AppendResult>>>
where
    S: EventStore + Clone + 'static,
{
    let store = store.clone();
    tokio::spawn(async move { store.append_batch(batch).await })
}
