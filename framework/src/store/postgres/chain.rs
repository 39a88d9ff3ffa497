//! The hash chain: verifying links in the application, and re-signing them
//! under a new key.

use futures_util::TryStreamExt;
use sqlx::postgres::PgRow;

use crate::error::{Error, Result};
use crate::hash_chain::{
    ChainReport, ChainResigner, ChainVerifier, EventHash, LinkFormat, StoredEvent,
    VERIFY_PROGRESS_EVERY,
};
use crate::store::row::{RowIdentity, to_i64};
use crate::store::stream::StreamId;

use super::{PostgresEventStore, column, failed};

/// Every column a link covers, its stored link and how it was made, each
/// stream in version order, followed by a clause. `recorded_at` comes as
/// the microseconds the append hashed.
macro_rules! chain_rows {
    ($clause:literal) => {
        concat!(
            "SELECT position, transaction_id::text::int8, event_id, stream_id, version, \
             event_type, schema_version, payload::text, tenant_id, correlation_id, \
             causation_id, actor, trace_context, headers::text, \
             (extract(epoch FROM recorded_at) * 1000000)::int8, hash, chain_key \
             FROM annals_events ",
            $clause,
            " ORDER BY stream_id, version"
        )
    };
}

impl PostgresEventStore {
    /// [`verify_log`](crate::store::EventStore::verify_log), calling
    /// `progress` with the number of events checked so far every 1,000
    /// events and once at the end: for a progress bar over a long audit
    /// (`annals verify` draws one). See
    /// [`SqliteEventStore::verify_log_with_progress`](crate::store::SqliteEventStore::verify_log_with_progress)
    /// for an example.
    pub async fn verify_log_with_progress(
        &self,
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<ChainReport> {
        self.verify(None, &progress).await
    }

    /// Recomputes the links of one stream or of the whole log in the
    /// application (the keys never reach the database), streaming the rows
    /// of one statement: one consistent read.
    pub(super) async fn verify(
        &self,
        stream: Option<&StreamId>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ChainReport> {
        let mut session = self.session().await?;
        let mut verifier = ChainVerifier::new(self.chain_keys.as_deref());
        let mut checked = 0u64;
        {
            let mut rows = match stream {
                Some(stream) => sqlx::query(self.tables.sql(chain_rows!("WHERE stream_id = $1")))
                    .bind(stream.as_str())
                    .fetch(session.connection()),
                None => sqlx::query(self.tables.sql(chain_rows!(""))).fetch(session.connection()),
            };
            while let Some(row) = rows.try_next().await.map_err(failed("verify hash chain"))? {
                let (event, found, format) = chain_row(&row)?;
                verifier.check(event.position, &event, found, format);
                checked += 1;
                if checked.is_multiple_of(VERIFY_PROGRESS_EVERY) {
                    progress(checked);
                }
            }
        }
        session.finish().await?;
        progress(checked);
        Ok(verifier.finish())
    }
}

impl PostgresEventStore {
    /// Re-signs every link of the log with the signing key of
    /// [`chain_keys`](super::PostgresStoreBuilder::chain_keys): how a log written
    /// before the store had keys comes under them, and how a retired key
    /// stops being needed. Run it once, connected as the role that owns the
    /// tables (it lifts the events' immutability trigger for the
    /// transaction), not as the application role.
    ///
    /// It first verifies the whole log, accepting unkeyed links that match
    /// and keyed links of known keys, and changes nothing when a link is
    /// broken ([`Error::ChainBroken`] names it): re-signing vouches for what
    /// the log holds. Appends wait until it commits; readers do not. Every
    /// event's row is rewritten once. Returns the new chain's report.
    ///
    /// ```no_run
    /// use annals::hash_chain::{ChainKey, ChainKeys};
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run(secret: &str) -> annals::Result<()> {
    /// let owner = PostgresEventStore::builder("postgres://annals_owner@localhost/annals")
    ///     .chain_keys(ChainKeys::new(ChainKey::from_hex(1, secret)?))
    ///     .connect()
    ///     .await?;
    /// let report = owner.resign_chain().await?;
    /// println!("{} events now signed with key 1", report.events_checked);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resign_chain(&self) -> Result<ChainReport> {
        let keys = self.chain_keys.as_deref().ok_or_else(|| {
            Error::Config(
                "re-signing the hash chain needs keys: build the store with `chain_keys`".into(),
            )
        })?;
        if let Some(tenant) = &self.tenant {
            return Err(Error::Config(format!(
                "re-signing the hash chain covers every tenant: run it on the owner's store, \
                 not on the handle of tenant {tenant:?}"
            )));
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(failed("begin re-signing"))?;
        // Takes a lock that holds appends back until the commit.
        self.set_immutability(&mut tx, false, "re-signing the hash chain")
            .await?;
        let verifier = ChainVerifier::accepting_unkeyed(keys);
        self.relink(&mut tx, verifier, None, Some(keys)).await?;
        self.set_immutability(&mut tx, true, "re-signing the hash chain")
            .await?;
        tx.commit().await.map_err(failed("commit re-signing"))?;
        self.verify(None, &|_| {}).await
    }
}

impl PostgresEventStore {
    /// Lifts (`on = false`) or restores the trigger that keeps the events
    /// table append-only, within `tx`: only the tables' owner may, and
    /// `operation` says who asked when another role tries.
    pub(super) async fn set_immutability(
        &self,
        tx: &mut sqlx::PgConnection,
        on: bool,
        operation: &str,
    ) -> Result<()> {
        let statement = if on {
            "ALTER TABLE annals_events ENABLE TRIGGER annals_events_immutable"
        } else {
            "ALTER TABLE annals_events DISABLE TRIGGER annals_events_immutable"
        };
        sqlx::query(self.tables.sql(statement))
            .execute(&mut *tx)
            .await
            .map_err(|error| match &error {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => {
                    Error::Config(format!(
                        "{operation} must run as the role that owns Annals' tables: {db}"
                    ))
                }
                _ if on => failed("restore the immutability trigger")(error),
                _ => failed("lift the immutability trigger")(error),
            })
            .map(drop)
    }

    /// Within `tx` (which lifted the immutability trigger): checks every
    /// stored link with `verifier`, then links the whole log anew in the
    /// store's signing format (`keys`'s signing key, or unkeyed), each
    /// event's commit replaced by `new_commits` (position to commit id)
    /// when given. A broken chain is [`Error::ChainBroken`] and changes
    /// nothing (the caller's transaction rolls back).
    pub(super) async fn relink(
        &self,
        tx: &mut sqlx::PgConnection,
        mut verifier: ChainVerifier,
        new_commits: Option<&std::collections::HashMap<u64, u64>>,
        keys: Option<&crate::hash_chain::ChainKeys>,
    ) -> Result<()> {
        let mut resigner = ChainResigner::new(keys);
        let mut positions: Vec<i64> = Vec::new();
        let mut links: Vec<Vec<u8>> = Vec::new();
        {
            let mut rows = sqlx::query(self.tables.sql(chain_rows!(""))).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(failed("read the chain"))? {
                let (mut event, found, format) = chain_row(&row)?;
                verifier.check(event.position, &event, found, format);
                if let Some(commit) = new_commits.and_then(|map| map.get(&event.position)) {
                    event.commit_id = *commit;
                }
                positions.push(to_i64(event.position));
                links.push(resigner.link(&event).as_bytes().to_vec());
            }
        }
        if let Some(first_break) = verifier.finish().first_break {
            return Err(Error::ChainBroken {
                first_break: Box::new(first_break),
            });
        }
        for (positions, links) in positions
            .chunks(RESIGN_CHUNK)
            .zip(links.chunks(RESIGN_CHUNK))
        {
            sqlx::query(self.tables.sql(
                "UPDATE annals_events AS e SET hash = n.hash, chain_key = $3 \
                 FROM unnest($1::int8[], $2::bytea[]) AS n(position, hash) \
                 WHERE e.position = n.position",
            ))
            .bind(positions)
            .bind(links)
            .bind(resigner.key_column())
            .execute(&mut *tx)
            .await
            .map_err(failed("re-sign links"))?;
        }
        Ok(())
    }
}

/// Links re-signed per `UPDATE` statement.
pub(super) const RESIGN_CHUNK: usize = 10_000;

/// A `chain_rows!` row: the columns its link covers, its stored link and
/// how it was made, or the error naming the unreadable column.
pub(super) fn chain_row(row: &PgRow) -> Result<(StoredEvent<'_>, Option<EventHash>, LinkFormat)> {
    let unreadable = RowIdentity::unreadable();
    let identity = RowIdentity {
        stream_id: column(row, &unreadable, 3, "stream_id")?,
        version: column(row, &unreadable, 4, "version")?,
        event_type: column(row, &unreadable, 5, "event_type")?,
    };
    let number = |value: i64| u64::try_from(value).unwrap_or(0);
    let version: i64 = column(row, &identity, 4, "version")?;
    let schema_version: i32 = column(row, &identity, 6, "schema_version")?;
    let hash: Option<&[u8]> = column(row, &identity, 15, "hash")?;
    let chain_key: Option<i16> = column(row, &identity, 16, "chain_key")?;
    let event = StoredEvent {
        event_id: column(row, &identity, 2, "event_id")?,
        stream_id: column(row, &identity, 3, "stream_id")?,
        version: number(version),
        event_type: column(row, &identity, 5, "event_type")?,
        schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
        payload: column(row, &identity, 7, "payload")?,
        tenant_id: column(row, &identity, 8, "tenant_id")?,
        correlation_id: column(row, &identity, 9, "correlation_id")?,
        causation_id: column(row, &identity, 10, "causation_id")?,
        actor: column(row, &identity, 11, "actor")?,
        trace_context: column(row, &identity, 12, "trace_context")?,
        headers: column(row, &identity, 13, "headers")?,
        recorded_at_micros: column(row, &identity, 14, "recorded_at")?,
        position: number(column(row, &identity, 0, "position")?),
        commit_id: number(column(row, &identity, 1, "transaction_id")?),
    };
    // A link of the wrong length is as broken as a wrong link.
    let found = hash.map(|bytes| EventHash::from_slice(bytes).unwrap_or(EventHash::GENESIS));
    Ok((
        event,
        found,
        LinkFormat::from_column(chain_key.map(i64::from)),
    ))
}
