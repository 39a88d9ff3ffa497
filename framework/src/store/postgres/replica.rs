//! Reading the log from a streaming replica (a hot standby) while appends
//! go to the primary.
//!
//! The gap-safe read holds on a hot standby: it returns an event only when
//! its transaction id is below the snapshot's `xmin`, and a standby's
//! snapshot counts as running every transaction id the primary may still
//! commit (when the standby sees transaction id `n` in the WAL it takes
//! every id below `n` it has not seen end as still running), so an event
//! that commits late on the primary is not passed over on the replica
//! either. `tests/tests/store/postgres_replica.rs` checks it with writers
//! that commit late on the primary and a reader on the replica.

use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;

use crate::error::{Error, Result};

use super::{PostgresEventStore, failed};

/// What a read is, for choosing where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadKind {
    /// Always the primary: reads a decision or a check depends on.
    Primary,
    /// The log in order, queries, counts, stream listings: the replica
    /// when there is one.
    Log,
    /// A stream's events or version for a load: the replica only when
    /// [`load_from_replica`](super::PostgresStoreBuilder::load_from_replica)
    /// said so (a load just behind the primary decides on stale state, and
    /// its append fails with a version conflict).
    Load,
}

/// The hot standby reads go to.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(crate) pool: PgPool,
    /// Whether stream loads go to it too.
    pub(crate) loads: bool,
}

impl Replica {
    /// Checks that `pool` is a hot standby reached as the same role as the
    /// primary (`primary`): row-level security confines tenant handles by
    /// role, and a replica reached as another role would read past it.
    pub(crate) async fn check(
        primary: &PgPool,
        pool: PgPool,
        shown: &str,
        loads: bool,
    ) -> Result<Replica> {
        let (in_recovery, replica_role): (bool, String) =
            sqlx::query_as("SELECT pg_is_in_recovery(), current_user::text")
                .fetch_one(&pool)
                .await
                .map_err(failed("look at the read replica"))?;
        if !in_recovery {
            return Err(Error::Config(format!(
                "the read replica {shown} is not a hot standby (pg_is_in_recovery() is false): \
                 reads from another primary would miss this one's events; give the URL of a \
                 streaming replica of the primary"
            )));
        }
        let primary_role: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(primary)
            .await
            .map_err(failed("look at the primary"))?;
        if primary_role != replica_role {
            return Err(Error::Config(format!(
                "the read replica {shown} is reached as role {replica_role:?} and the primary as \
                 {primary_role:?}: use the same role, or row-level security would confine the \
                 two differently"
            )));
        }
        // The cluster's identity, where the role may read it: a standby of
        // another primary has another.
        let identities = |pool: &PgPool| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT system_identifier FROM pg_control_system()")
                    .fetch_one(&pool)
                    .await
                    .ok()
            }
        };
        if let (Some(primary_id), Some(replica_id)) =
            (identities(primary).await, identities(&pool).await)
            && primary_id != replica_id
        {
            return Err(Error::Config(format!(
                "the read replica {shown} belongs to another cluster (system identifier \
                 {replica_id}, the primary's is {primary_id}): it is not a replica of this primary"
            )));
        }
        Ok(Replica { pool, loads })
    }
}

impl PostgresEventStore {
    /// Waits until the read replica has replayed everything the primary
    /// had written when this was called (read-your-writes: call it after
    /// an append, before a read that must see it), checking every few
    /// milliseconds for at most `timeout`; [`Error::ReplicaBehind`] when it
    /// has not. Returns at once without a replica.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use annals::prelude::*;
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// let store = PostgresEventStore::builder("postgres://annals@primary/iam")
    ///     .read_replica("postgres://annals@replica/iam")
    ///     .connect()
    ///     .await?;
    /// let stream = StreamId::new("user-1")?;
    /// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::json("iam.user.registered", &1)?]).await?;
    /// store.wait_for_replica(Duration::from_secs(1)).await?;
    /// let page = store.query(&annals::store::EventQuery::new().event_type("iam.user.registered")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for_replica(&self, timeout: Duration) -> Result<()> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.pool)
            .await
            .map_err(failed("read the primary's WAL position"))?;
        let started = Instant::now();
        loop {
            let lag: Option<i64> = sqlx::query_scalar(
                "SELECT GREATEST(pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()), 0)::bigint",
            )
            .bind(&target)
            .fetch_one(&replica.pool)
            .await
            .map_err(failed("read the replica's replay position"))?;
            let lag = lag
                .and_then(|lag| u64::try_from(lag).ok())
                .unwrap_or(u64::MAX);
            if lag == 0 {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(Error::ReplicaBehind {
                    waited: started.elapsed(),
                    lag_bytes: lag,
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// How many bytes of WAL the read replica's replay is behind the
    /// primary right now (`None` without a replica): its lag, for metrics.
    pub async fn replica_lag_bytes(&self) -> Result<Option<u64>> {
        let Some(replica) = &self.replica else {
            return Ok(None);
        };
        let primary: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.pool)
            .await
            .map_err(failed("read the primary's WAL position"))?;
        let lag: Option<i64> = sqlx::query_scalar(
            "SELECT GREATEST(pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()), 0)::bigint",
        )
        .bind(primary)
        .fetch_one(&replica.pool)
        .await
        .map_err(failed("read the replica's replay position"))?;
        Ok(Some(
            lag.and_then(|lag| u64::try_from(lag).ok()).unwrap_or(0),
        ))
    }

    /// The read replica's pool, if one is configured.
    pub fn replica_pool(&self) -> Option<&PgPool> {
        self.replica.as_ref().map(|replica| &replica.pool)
    }
}
