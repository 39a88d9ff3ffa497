//! A log from another cluster: detecting it, and re-stamping it.
//!
//! The gap-safe read returns an event only when its `transaction_id` is
//! below `pg_snapshot_xmin(pg_current_snapshot())`, and orders the log by
//! `(transaction_id, position)`. Both assume the ids are this cluster's.
//! After `pg_dump`/`pg_restore` into another cluster (or a move by logical
//! replication) the stored ids are the old cluster's: where they are ahead
//! of the new cluster's counter, readers do not see the restored events,
//! and new events (with the new cluster's smaller ids) sort before them and
//! before the checkpoints saved there.
//!
//! Detection: a stored id this cluster has not handed out yet (at least
//! `pg_snapshot_xmax`) cannot come from it. Connecting refuses such a log
//! with [`Error::ForeignHistory`].
//!
//! Re-stamping gives every stored event a commit id below every id this
//! cluster will hand out, keeping the log's order and every position: the
//! events, in their `(transaction_id, position)` order, get commit 3 (the
//! first normal transaction id), moving to the next id wherever a position
//! is smaller than the one before it, so `(new commit, position)` orders
//! them exactly as before with few ids (one, when positions were already
//! in commit order). When the cluster has not handed out that many ids yet,
//! it first advances its counter (subtransactions that write to a temporary
//! table). Tag entries follow their events; each checkpoint moves to the
//! new commit of the last event at or before it; the hash chain, whose
//! links cover the commit, is checked first (a broken one refuses, changing
//! nothing) and linked anew in the store's signing format. All in one
//! transaction that holds appends back.

use std::collections::HashMap;

use futures_util::TryStreamExt;

use crate::error::{Error, Result};
use crate::hash_chain::ChainVerifier;

use super::{PostgresEventStore, failed};

/// The commit id the first re-stamped events get: PostgreSQL's first
/// normal transaction id.
const FIRST_COMMIT: i64 = 3;

/// What [`PostgresStoreBuilder::restamp_restored_log`](super::PostgresStoreBuilder::restamp_restored_log)
/// did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestampReport {
    /// Events given a commit id of this cluster (0: the log was this
    /// cluster's already, and nothing changed).
    pub events: u64,
    /// The distinct commit ids they got.
    pub commits: u64,
    /// Checkpoints moved to the new commit ids.
    pub checkpoints: u64,
    /// Transaction ids the cluster handed out first so that the new commit
    /// ids are all below its counter.
    pub ids_advanced: u64,
}

/// A log whose newest stored transaction id is `stored`, in a cluster
/// whose next one is `next`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Foreign {
    pub(crate) stored: u64,
    pub(crate) next: u64,
}

impl PostgresEventStore {
    /// The stored log's newest transaction id and the cluster's next, when
    /// the first is not below the second: a history from another cluster.
    /// `None` also when there is no events table yet (a store that does not
    /// migrate, on an empty schema). Sent unnamed, as every statement a
    /// connect sends: it may go through a transaction-mode pooler.
    pub(crate) async fn foreign_history(&self) -> Result<Option<Foreign>> {
        let found: std::result::Result<(Option<i64>, i64), sqlx::Error> =
            sqlx::query_as(self.tables.sql(
                "SELECT max(transaction_id)::text::int8, \
                        pg_snapshot_xmax(pg_current_snapshot())::text::int8 \
                 FROM annals_events",
            ))
            .persistent(false)
            .fetch_one(&self.pool)
            .await;
        match found {
            Ok((Some(stored), next)) if stored >= next => Ok(Some(Foreign {
                stored: u64::try_from(stored).unwrap_or(0),
                next: u64::try_from(next).unwrap_or(0),
            })),
            Ok(_) => Ok(None),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => Ok(None),
            Err(error) => Err(failed(
                "compare the log's transaction ids with the cluster's",
            )(error)),
        }
    }

    /// Re-stamps a log restored from another cluster (see the module docs);
    /// a log of this cluster is left as it is.
    pub(super) async fn restamp(&self) -> Result<RestampReport> {
        if let Some(tenant) = &self.tenant {
            return Err(Error::Config(format!(
                "re-stamping covers every tenant's events: run it on the owner's store, \
                 not on the handle of tenant {tenant:?}"
            )));
        }
        if self.foreign_history().await?.is_none() {
            return Ok(RestampReport::default());
        }
        // How many commit ids the log needs: one, plus one per place where
        // the log's order steps back in position.
        let (steps_back,): (i64,) = sqlx::query_as(self.tables.sql(
            "SELECT count(*) FILTER (WHERE position < previous) FROM \
             (SELECT position, lag(position) OVER (ORDER BY transaction_id, position) AS previous \
              FROM annals_events) AS ordered",
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(failed("count the log's commits"))?;
        let last_commit = FIRST_COMMIT + steps_back;
        let ids_advanced = self.advance_transaction_ids(last_commit + 1).await?;

        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(failed("begin re-stamping"))?;
        // Appends, tags and checkpoints wait for the commit.
        sqlx::query(self.tables.sql(
            "LOCK TABLE annals_events, annals_event_tags, annals_checkpoints IN EXCLUSIVE MODE",
        ))
        .execute(&mut *tx)
        .await
        .map_err(failed("lock the log"))?;
        let (own,): (i64,) = sqlx::query_as("SELECT pg_current_xact_id()::text::int8")
            .fetch_one(&mut *tx)
            .await
            .map_err(failed("take a transaction id"))?;
        self.set_immutability(&mut tx, false, "re-stamping the log")
            .await?;
        sqlx::query(self.tables.sql(
            "CREATE TEMPORARY TABLE restamp_map ON COMMIT DROP AS \
             SELECT position, transaction_id AS old_commit, \
                    ($1 + sum(step) OVER (ORDER BY transaction_id, position \
                                           ROWS UNBOUNDED PRECEDING))::text::xid8 AS new_commit \
             FROM (SELECT position, transaction_id, \
                          CASE WHEN position < lag(position) OVER (ORDER BY transaction_id, position) \
                               THEN 1 ELSE 0 END AS step \
                   FROM annals_events) AS ordered",
        ))
        .bind(FIRST_COMMIT)
        .execute(&mut *tx)
        .await
        .map_err(failed("map the log to new commit ids"))?;
        sqlx::query("CREATE INDEX ON restamp_map (old_commit, position)")
            .execute(&mut *tx)
            .await
            .map_err(failed("index the new commit ids"))?;
        let new_commits: HashMap<u64, u64> = sqlx::query_as::<_, (i64, i64)>(
            "SELECT position, new_commit::text::int8 FROM restamp_map",
        )
        .fetch(&mut *tx)
        .map_ok(|(position, commit)| {
            (
                u64::try_from(position).unwrap_or(0),
                u64::try_from(commit).unwrap_or(0),
            )
        })
        .try_collect()
        .await
        .map_err(failed("read the new commit ids"))?;
        // Counted again under the lock: an append between the count and the
        // lock may have added a step back.
        let highest = new_commits.values().copied().max().unwrap_or(0);
        if i64::try_from(highest).unwrap_or(i64::MAX) >= own {
            return Err(Error::Config(format!(
                "re-stamping needs commit ids up to {highest}, but this transaction's id is \
                 {own}: events were appended meanwhile; run it again"
            )));
        }
        // The links cover the commit: checked as stored, then made anew.
        let keys = self.chain_keys.as_deref();
        let verifier = match keys {
            Some(keys) => ChainVerifier::accepting_unkeyed(keys),
            None => ChainVerifier::new(None),
        };
        self.relink(&mut tx, verifier, Some(&new_commits), keys)
            .await?;
        let events = sqlx::query(self.tables.sql(
            "UPDATE annals_events AS e SET transaction_id = m.new_commit \
             FROM restamp_map AS m WHERE e.position = m.position",
        ))
        .execute(&mut *tx)
        .await
        .map_err(failed("re-stamp the events"))?
        .rows_affected();
        for statement in [
            "ALTER TABLE annals_event_tags DISABLE TRIGGER annals_event_tags_immutable",
            "UPDATE annals_event_tags AS t SET transaction_id = m.new_commit \
             FROM restamp_map AS m WHERE t.position = m.position",
            "ALTER TABLE annals_event_tags ENABLE TRIGGER annals_event_tags_immutable",
        ] {
            sqlx::query(self.tables.sql(statement))
                .execute(&mut *tx)
                .await
                .map_err(failed("re-stamp the tag entries"))?;
        }
        // A checkpoint names the last event its reader has: it moves to
        // that event's new commit; one before every event stays at the
        // start.
        let checkpoints = sqlx::query(self.tables.sql(
            "UPDATE annals_checkpoints AS c \
             SET commit_id = coalesce(last.commit_id, 0), sequence = coalesce(last.position, 0) \
             FROM annals_checkpoints AS o \
             LEFT JOIN LATERAL ( \
                 SELECT m.new_commit::text::int8 AS commit_id, m.position FROM restamp_map AS m \
                 WHERE (m.old_commit, m.position) <= (o.commit_id::text::xid8, o.sequence) \
                 ORDER BY m.old_commit DESC, m.position DESC LIMIT 1) AS last ON true \
             WHERE c.name = o.name AND (o.commit_id, o.sequence) <> (0, 0)",
        ))
        .execute(&mut *tx)
        .await
        .map_err(failed("move the checkpoints"))?
        .rows_affected();
        self.set_immutability(&mut tx, true, "re-stamping the log")
            .await?;
        tx.commit().await.map_err(failed("commit re-stamping"))?;
        Ok(RestampReport {
            events,
            commits: highest.saturating_sub(FIRST_COMMIT.unsigned_abs()) + 1,
            checkpoints,
            ids_advanced,
        })
    }

    /// Makes the cluster hand out transaction ids until its next one is at
    /// least `target`; how many it handed out.
    async fn advance_transaction_ids(&self, target: i64) -> Result<u64> {
        let mut advanced = 0u64;
        loop {
            let (next,): (i64,) =
                sqlx::query_as("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(failed("read the cluster's next transaction id"))?;
            if next > target {
                return Ok(advanced);
            }
            // Each subtransaction that writes takes an id of its own; a
            // batch at a time keeps each transaction's list of them short.
            let batch = (target - next + 1).min(50_000);
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(failed("begin advancing transaction ids"))?;
            sqlx::query("CREATE TEMPORARY TABLE id_advance (n int) ON COMMIT DROP")
                .execute(&mut *tx)
                .await
                .map_err(failed("advance transaction ids"))?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DO $$ BEGIN FOR i IN 1..{batch} LOOP \
                   BEGIN INSERT INTO id_advance VALUES (i); \
                   EXCEPTION WHEN others THEN NULL; END; \
                 END LOOP; END $$"
            )))
            .execute(&mut *tx)
            .await
            .map_err(failed("advance transaction ids"))?;
            tx.commit()
                .await
                .map_err(failed("advance transaction ids"))?;
            advanced += u64::try_from(batch).unwrap_or(0);
        }
    }
}
