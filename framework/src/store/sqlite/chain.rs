//! The hash chain: verifying links, re-signing them under a new key, and
//! linking events stored before the chain existed.

use futures_util::TryStreamExt;
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;

use crate::error::{Error, Result};
use crate::hash_chain::{
    ChainReport, ChainResigner, ChainVerifier, EventHash, LinkFormat, StoredEvent,
    VERIFY_PROGRESS_EVERY,
};
use crate::store::row::{RowIdentity, to_i64};
use crate::store::stream::StreamId;
use crate::store::table_names::TableNames;

use super::{SqliteEventStore, column, failed};

/// `SELECT` of an event's position, the columns its link covers and its
/// stored link, followed by a clause (each stream in version order: the
/// unique index's order).
macro_rules! chain_rows {
    ($clause:literal) => {
        concat!(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, \
             payload, tenant_id, correlation_id, causation_id, actor, trace_context, headers, \
             recorded_at, hash, commit_id, chain_key FROM annals_events ",
            $clause
        )
    };
}

impl SqliteEventStore {
    /// Re-signs every link of the log with the signing key of
    /// [`chain_keys`](super::SqliteStoreBuilder::chain_keys): how a log written
    /// before the store had keys comes under them, and how a retired key
    /// stops being needed.
    ///
    /// It first verifies the whole log, accepting unkeyed links that match
    /// and keyed links of known keys, and changes nothing when a link is
    /// broken ([`Error::ChainBroken`] names it). In one write transaction,
    /// with the update trigger lifted for it and put back as it was.
    /// Returns the new chain's report.
    ///
    /// ```
    /// use annals::hash_chain::{ChainKey, ChainKeys};
    /// use annals::prelude::*;
    /// use annals::store::SqliteEventStore;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("events.db");
    /// let unkeyed = SqliteEventStore::open(&path).await?;
    /// let event = NewEvent::json("iam.user.registered", &serde_json::json!({}))?;
    /// unkeyed.append(&StreamId::new("user-1")?, ExpectedVersion::NoStream, vec![event]).await?;
    ///
    /// let keyed = SqliteEventStore::builder(&path)
    ///     .chain_keys(ChainKeys::new(ChainKey::new(1, [42; 32])?))
    ///     .open()
    ///     .await?;
    /// assert!(!keyed.verify_log().await?.is_intact(), "the old link is not keyed");
    /// assert_eq!(keyed.resign_chain().await?.events_checked, 1);
    /// assert!(keyed.verify_log().await?.is_intact());
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn resign_chain(&self) -> Result<ChainReport> {
        if let Some(tenant) = self.tenant.as_deref() {
            return Err(Error::Config(format!(
                "re-signing rewrites every tenant's links: a handle scoped to tenant {tenant:?} cannot; use the unscoped store"
            )));
        }
        let keys = self.chain_keys.as_deref().ok_or_else(|| {
            Error::Config(
                "re-signing the hash chain needs keys: open the store with `chain_keys`".into(),
            )
        })?;
        let writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin re-signing"))?;
        let trigger: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?")
                .bind(self.tables.rename("annals_events_no_update").as_ref())
                .fetch_one(&mut *tx)
                .await
                .map_err(failed("read the update trigger"))?;
        sqlx::raw_sql(self.tables.sql("DROP TRIGGER annals_events_no_update"))
            .execute(&mut *tx)
            .await
            .map_err(failed("lift the update trigger"))?;
        let mut verifier = ChainVerifier::accepting_unkeyed(keys);
        let mut resigner = ChainResigner::new(Some(keys));
        let mut links: Vec<(i64, EventHash)> = Vec::new();
        {
            let mut rows = sqlx::query(self.tables.sql(chain_rows!(
                "ORDER BY stream_id, COALESCE(tenant_id, ''), version"
            )))
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(failed("read the chain"))? {
                let (event, found, format) = chain_row(&row)?;
                verifier.check(event.position, &event, found, format);
                links.push((to_i64(event.position), resigner.link(&event)));
            }
        }
        if let Some(first_break) = verifier.finish().first_break {
            // Dropping `tx` rolls back: the trigger stays.
            return Err(Error::ChainBroken {
                first_break: Box::new(first_break),
            });
        }
        for (position, link) in links {
            sqlx::query(
                self.tables
                    .sql("UPDATE annals_events SET hash = ?, chain_key = ? WHERE position = ?"),
            )
            .bind(link.as_bytes().as_slice())
            .bind(resigner.key_column())
            .bind(position)
            .execute(&mut *tx)
            .await
            .map_err(failed("re-sign links"))?;
        }
        // The trigger as it was: its text from `sqlite_master` (already
        // carrying this store's prefix).
        sqlx::raw_sql(sqlx::AssertSqlSafe(trigger))
            .execute(&mut *tx)
            .await
            .map_err(failed("restore the update trigger"))?;
        tx.commit().await.map_err(failed("commit re-signing"))?;
        drop(writer);
        self.verify(None, &|_| {}).await
    }

    /// [`verify_log`](crate::store::EventStore::verify_log), calling
    /// `progress` with the number of events checked so far every 1,000
    /// events and once at the end: for a progress bar over a long audit
    /// (`annals verify` draws one).
    ///
    /// ```
    /// use annals::prelude::*;
    /// use annals::store::SqliteEventStore;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annals::Result<()> {
    /// let dir = tempfile::tempdir().map_err(|e| annals::Error::Config(e.to_string()))?;
    /// let store = SqliteEventStore::open(dir.path().join("events.db")).await?;
    /// let event = NewEvent::json("doc.progress.noted", &serde_json::json!({}))?;
    /// store.append(&StreamId::new("noted-1")?, ExpectedVersion::NoStream, vec![event]).await?;
    /// let seen = AtomicU64::new(0);
    /// let report = store.verify_log_with_progress(|checked| seen.store(checked, Ordering::Relaxed)).await?;
    /// assert!(report.is_intact());
    /// assert_eq!(seen.load(Ordering::Relaxed), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify_log_with_progress(
        &self,
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<ChainReport> {
        self.verify(None, &progress).await
    }

    /// Recomputes the links of one stream or of the whole log, streaming
    /// the rows (one statement: one consistent read).
    pub(super) async fn verify(
        &self,
        stream: Option<&StreamId>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ChainReport> {
        let owner = match stream {
            Some(stream) => Some(self.stream_owner(stream).await?),
            None => None,
        };
        let mut rows = match (stream, owner) {
            (Some(stream), Some(owner)) => sqlx::query(self.tables.sql(chain_rows!(
                "WHERE stream_id = ? AND COALESCE(tenant_id, '') = ? ORDER BY version"
            )))
            .bind(stream.as_str())
            .bind(owner)
            .fetch(&self.pool),
            _ => sqlx::query(self.tables.sql(chain_rows!(
                "WHERE ?1 IS NULL OR tenant_id = ?1 \
                 ORDER BY stream_id, COALESCE(tenant_id, ''), version"
            )))
            .bind(self.tenant.as_deref())
            .fetch(&self.pool),
        };
        let mut verifier = ChainVerifier::new(self.chain_keys.as_deref());
        let mut checked = 0u64;
        while let Some(row) = rows.try_next().await.map_err(failed("verify hash chain"))? {
            let (event, found, format) = chain_row(&row)?;
            verifier.check(event.position, &event, found, format);
            checked += 1;
            if checked.is_multiple_of(VERIFY_PROGRESS_EVERY) {
                progress(checked);
            }
        }
        progress(checked);
        Ok(verifier.finish())
    }
}

/// A `chain_rows!` row: the columns its link covers, its stored link and
/// how it was made, or the error naming the unreadable column.
pub(super) fn chain_row(
    row: &SqliteRow,
) -> Result<(StoredEvent<'_>, Option<EventHash>, LinkFormat)> {
    let unreadable = RowIdentity::unreadable();
    let identity = RowIdentity {
        stream_id: column(row, &unreadable, 2, "stream_id")?,
        version: column(row, &unreadable, 3, "version")?,
        event_type: column(row, &unreadable, 4, "event_type")?,
    };
    let position: i64 = column(row, &identity, 0, "position")?;
    let version: i64 = column(row, &identity, 3, "version")?;
    let schema_version: i64 = column(row, &identity, 5, "schema_version")?;
    let hash: Option<&[u8]> = column(row, &identity, 14, "hash")?;
    let commit_id: i64 = column(row, &identity, 15, "commit_id")?;
    let event = StoredEvent {
        event_id: column(row, &identity, 1, "event_id")?,
        stream_id: column(row, &identity, 2, "stream_id")?,
        version: u64::try_from(version).unwrap_or(0),
        event_type: column(row, &identity, 4, "event_type")?,
        schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
        payload: column(row, &identity, 6, "payload")?,
        tenant_id: column(row, &identity, 7, "tenant_id")?,
        correlation_id: column(row, &identity, 8, "correlation_id")?,
        causation_id: column(row, &identity, 9, "causation_id")?,
        actor: column(row, &identity, 10, "actor")?,
        trace_context: column(row, &identity, 11, "trace_context")?,
        headers: column(row, &identity, 12, "headers")?,
        recorded_at_micros: column(row, &identity, 13, "recorded_at")?,
        position: u64::try_from(position).unwrap_or(0),
        commit_id: u64::try_from(commit_id).unwrap_or(0),
    };
    // A link of the wrong length is as broken as a wrong link.
    let found = hash.map(|bytes| EventHash::from_slice(bytes).unwrap_or(EventHash::GENESIS));
    let format = LinkFormat::from_column(column(row, &identity, 16, "chain_key")?);
    Ok((event, found, format))
}

/// Gives every event stored before the hash chain existed its link, in the
/// migration's transaction (the update trigger allows exactly this), in the
/// legacy format (`chain_key` NULL) its rows were written in.
pub(super) async fn seal_unlinked_events(
    tables: &TableNames,
    connection: &mut SqliteConnection,
) -> Result<()> {
    let rows = sqlx::query(tables.sql(chain_rows!("ORDER BY stream_id, version")))
        .fetch_all(&mut *connection)
        .await
        .map_err(failed("read events to seal"))?;
    let mut links: Vec<(i64, EventHash)> = Vec::with_capacity(rows.len());
    let mut previous: Option<(String, EventHash)> = None;
    for row in &rows {
        let (event, _, _) = chain_row(row)?;
        let head = match &previous {
            Some((stream, link)) if stream == event.stream_id => *link,
            _ => EventHash::GENESIS,
        };
        let link = head.next(&event.digest(LinkFormat::Legacy));
        links.push((to_i64(event.position), link));
        previous = Some((event.stream_id.to_owned(), link));
    }
    for (position, link) in links {
        sqlx::query(tables.sql("UPDATE annals_events SET hash = ? WHERE position = ?"))
            .bind(link.as_bytes().as_slice())
            .bind(position)
            .execute(&mut *connection)
            .await
            .map_err(failed("seal events"))?;
    }
    Ok(())
}
