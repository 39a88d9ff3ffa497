//! Importing a log recorded elsewhere, in one transaction.

use futures_util::Stream;

use crate::error::{Error, Result};
#[cfg(doc)]
use crate::event::envelope::RecordedEvent;
use crate::pii::SubjectKeyRecord;
use crate::store::AppendResult;
use crate::store::append::{next_version, validate_batch};
use crate::store::import::{ImportChunk, ImportItem, ImportReport, ImportWriter, write_items};

use super::append::{AppendColumns, AppendOutcome};
use super::{BACKEND, PostgresEventStore, failed};

/// Events per append statement of an import.
const IMPORT_CHUNK: usize = 1000;

impl PostgresEventStore {
    /// Writes `items` in one transaction: events ([`RecordedEvent`]s) in
    /// the order given, with the ids, versions, types, payloads, metadata,
    /// tags and recording times they carry, and data subjects' keys
    /// ([`SubjectKeyRecord`](crate::pii::SubjectKeyRecord)s). Everything is
    /// written or nothing is: an `Err` from `items`, a stream that already
    /// has events, a duplicate event id, a subject with another key here,
    /// another tenant's event or key on a tenant handle, or a concurrent
    /// writer appending to one of the imported streams ends the import with
    /// nothing written. Positions and hash chain links are this store's
    /// own. See [`import`](crate::store::import) for what is kept and what
    /// is not.
    ///
    /// Readers see none of the imported events until the import commits,
    /// and none after them meanwhile (the log's order is the commit's).
    ///
    /// ```no_run
    /// use annals::prelude::*;
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn example(source: PostgresEventStore, target: PostgresEventStore) -> annals::Result<()> {
    /// let log = source.read_all(LogPosition::START, 1000).await?;
    /// let report = target
    ///     .import_log(futures_util::stream::iter(log.into_iter().map(Ok)))
    ///     .await?;
    /// println!("{} events in {} streams", report.events, report.streams);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn import_log<S, I>(&self, items: S) -> Result<ImportReport>
    where
        S: Stream<Item = Result<I>> + Send,
        I: Into<ImportItem>,
    {
        let tx = self.begin().await?;
        let mut import = PostgresImport { store: self, tx };
        // On any error the transaction is dropped: the import rolls back.
        let report = write_items(items, &mut import, IMPORT_CHUNK).await?;
        import.tx.commit().await.map_err(failed("commit import"))?;
        Ok(report)
    }
}

/// An import's transaction on a PostgreSQL store.
struct PostgresImport<'s> {
    store: &'s PostgresEventStore,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl ImportWriter for PostgresImport<'_> {
    async fn write_chunk(&mut self, mut chunk: ImportChunk) -> Result<Vec<AppendResult>> {
        self.store.stamp_tenant(&mut chunk.appends)?;
        validate_batch(&chunk.appends)?;
        for append in &chunk.appends {
            next_version(&append.stream_id, 0, append.events.len())?;
        }
        let mut columns = AppendColumns::new(&self.store.tables, &chunk.appends)?;
        columns.recorded_at = Some(chunk.recorded_at);
        match self
            .store
            .try_append(&mut *self.tx, &chunk.appends, &columns)
            .await?
        {
            AppendOutcome::Written(results) => Ok(results),
            AppendOutcome::Collided(error) => Err(Error::Backend {
                backend: BACKEND,
                operation: "import",
                source: format!(
                    "a concurrent writer appended to one of the streams being imported ({error}); nothing was imported"
                )
                .into(),
            }),
        }
    }

    async fn restore_key(&mut self, record: &SubjectKeyRecord) -> Result<()> {
        crate::pii::restore_postgres_subject_key(self.store, &mut self.tx, record).await
    }
}
