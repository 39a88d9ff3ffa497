//! Importing a log recorded elsewhere, in one write transaction.

use futures_util::Stream;

use crate::error::Result;
#[cfg(doc)]
use crate::event::envelope::RecordedEvent;
use crate::pii::SubjectKeyRecord;
use crate::store::AppendResult;
use crate::store::append::validate_batch;
use crate::store::import::{ImportChunk, ImportItem, ImportReport, ImportWriter, write_items};

use super::append::append_in_at;
use super::{SqliteEventStore, failed};

/// Events per append statement of an import.
const IMPORT_CHUNK: usize = 1000;

impl SqliteEventStore {
    /// Writes `items` in one transaction: events ([`RecordedEvent`]s) in
    /// the order given, with the ids, versions, types, payloads, metadata,
    /// tags and recording times they carry, and data subjects' keys
    /// ([`SubjectKeyRecord`](crate::pii::SubjectKeyRecord)s). Everything is
    /// written or nothing is: an `Err` from `items`, a stream that already
    /// has events, a duplicate event id, a subject with another key here or
    /// anything this handle may not write ends the import with nothing
    /// written. Positions and hash chain links are this store's own. See
    /// [`import`](crate::store::import) for what is kept and what is not.
    ///
    /// Other writers wait for the import to commit.
    ///
    /// ```
    /// use annals::prelude::*;
    /// use annals::store::SqliteEventStore;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let source = SqliteEventStore::open(dir.path().join("source.db")).await?;
    /// let stream = StreamId::new("user-1")?;
    /// let registered = NewEvent::json("iam.user.registered", &serde_json::json!({ "email": "ada@example.test" }))?;
    /// source.append(&stream, ExpectedVersion::NoStream, vec![registered]).await?;
    /// let log = source.read_all(LogPosition::START, 100).await?;
    ///
    /// let target = SqliteEventStore::open(dir.path().join("target.db")).await?;
    /// let report = target
    ///     .import_log(futures_util::stream::iter(log.clone().into_iter().map(Ok)))
    ///     .await?;
    /// assert_eq!((report.events, report.streams), (1, 1));
    /// let copied = target.read_stream(&stream, 1, 10).await?;
    /// assert_eq!(copied[0].event_id, log[0].event_id);
    /// assert_eq!(copied[0].recorded_at, log[0].recorded_at);
    /// assert!(target.verify_log().await?.is_intact());
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn import_log<S, I>(&self, items: S) -> Result<ImportReport>
    where
        S: Stream<Item = Result<I>> + Send,
        I: Into<ImportItem>,
    {
        let _writer = self.write_gate.lock().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin import"))?;
        let mut import = SqliteImport { store: self, tx };
        // On any error the transaction is dropped: the import rolls back.
        let report = write_items(items, &mut import, IMPORT_CHUNK).await?;
        import.tx.commit().await.map_err(failed("commit import"))?;
        self.appended.signal();
        Ok(report)
    }
}

/// An import's transaction on a SQLite store.
struct SqliteImport<'s> {
    store: &'s SqliteEventStore,
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
}

impl ImportWriter for SqliteImport<'_> {
    async fn write_chunk(&mut self, mut chunk: ImportChunk) -> Result<Vec<AppendResult>> {
        validate_batch(&chunk.appends)?;
        self.store.stamp(&mut chunk.appends)?;
        append_in_at(
            &self.store.tables,
            self.store.chain_keys.as_deref(),
            &mut self.tx,
            &chunk.appends,
            chunk.recorded_at,
        )
        .await
    }

    async fn restore_key(&mut self, record: &SubjectKeyRecord) -> Result<()> {
        crate::pii::restore_sqlite_subject_key(self.store, &mut self.tx, record).await
    }
}
