//! Conveniences every store gets: the global log as an async stream with
//! bounded memory, whole-stream loads, and a reader's checkpoint by name.

use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::EventStore;
use crate::error::Result;
use crate::event::envelope::RecordedEvent;
use crate::store::position::LogPosition;
use crate::store::stream::StreamId;

/// Page size used by [`EventStoreExt::load_stream`].
const LOAD_PAGE: usize = 1024;

/// Extra methods for every [`EventStore`].
pub trait EventStoreExt: EventStore {
    /// The global log after `after`, up to its current end, as an async
    /// stream. It fetches `batch_size` events at a time, so memory stays
    /// bounded however long the log is.
    ///
    /// ```
    /// use annals::prelude::*;
    /// use futures_util::TryStreamExt;
    /// use serde_json::json;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = InMemoryEventStore::new();
    /// for n in 0..10 {
    ///     let stream = StreamId::new(format!("counter-{n}"))?;
    ///     store.append(&stream, ExpectedVersion::Any, vec![NewEvent::json("counted", &json!(n))?]).await?;
    /// }
    /// let all: Vec<RecordedEvent> = store.stream_all(LogPosition::START, 3).try_collect().await?;
    /// assert_eq!(all.len(), 10);
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    fn stream_all(
        &self,
        after: LogPosition,
        batch_size: usize,
    ) -> BoxStream<'_, Result<RecordedEvent>> {
        let batch_size = batch_size.max(1);
        stream::try_unfold(Some(after), move |cursor| async move {
            let Some(after) = cursor else {
                return Ok(None);
            };
            let batch = self.read_all(after, batch_size).await?;
            let Some(last) = batch.last().map(|event| event.position) else {
                return Ok(None);
            };
            let next = (batch.len() == batch_size).then_some(last);
            Ok(Some((stream::iter(batch.into_iter().map(Ok)), next)))
        })
        .try_flatten()
        .boxed()
    }

    /// Every event of a stream, oldest first.
    fn load_stream<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<RecordedEvent>>> {
        Box::pin(async move {
            let mut events = Vec::new();
            loop {
                let from = events
                    .last()
                    .map_or(1, |event: &RecordedEvent| event.version + 1);
                let page = self.read_stream(stream, from, LOAD_PAGE).await?;
                let done = page.len() < LOAD_PAGE;
                events.extend(page);
                if done {
                    return Ok(events);
                }
            }
        })
    }

    /// The saved position of a named reader, if any (its
    /// [`Checkpoint`](crate::checkpoint::Checkpoint) from
    /// [`checkpoints`](EventStore::checkpoints) has its lease too).
    fn load_checkpoint<'a>(
        &'a self,
        name: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<Option<LogPosition>>> {
        Box::pin(async move {
            Ok(self
                .checkpoints()
                .load(name)
                .await?
                .map(|checkpoint| checkpoint.position))
        })
    }

    /// Sets the position of a named reader, whoever holds its lease (a
    /// reset or rewind; a running owner resumes from here).
    fn save_checkpoint<'a>(
        &'a self,
        name: &'a str,
        position: LogPosition,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.checkpoints().save(name, position).await })
    }
}

impl<S: EventStore + ?Sized> EventStoreExt for S {}
