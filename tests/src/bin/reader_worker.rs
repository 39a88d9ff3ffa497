//! A worker process for the failover test. In the schema named by its first
//! argument it runs the two owned readers of a service instance, each under
//! a 2 s lease: the PostgreSQL role-count projection, and a transactional
//! subscription whose effect is one row per event in `effects`. Each time it
//! takes a reader's lease it records `(pid, reader, generation)` in
//! `lease_holders`.

use std::sync::Arc;
use std::time::Duration;

use annals::checkpoint::LeaseSettings;
use annals::prelude::*;
use annals::projection::runner::{PostgresReadModel, ProjectionRunner};
use annals::projection::sql_read_model::SqlConnection;
use annals::store::PostgresEventStore;
use annals::subscription::{Subscription, TransactionalSink};
use annals_tests::backends::postgres_url;
use annals_tests::domain::FlakyPostgresRoleCounts;

const LEASE: Duration = Duration::from_secs(2);

/// One row per event, in the subscription's transaction.
struct CountEffects;

#[annals::async_trait]
impl TransactionalSink for CountEffects {
    async fn handle(
        &mut self,
        event: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> Result<(), annals::error::BoxError> {
        db.execute(
            "INSERT INTO effects (event_id, pid) VALUES ($1, $2)",
            &[event.event_id.into(), i64::from(std::process::id()).into()],
        )
        .await?;
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let schema = std::env::args()
        .nth(1)
        .ok_or("usage: reader_worker SCHEMA")?;
    let store = PostgresEventStore::builder(postgres_url())
        .schema(schema)
        .max_connections(6)
        .connect()
        .await?;
    let pool = store.pool().clone();
    let model = PostgresReadModel::for_store(&store);
    let store: Arc<dyn EventStore> = Arc::new(store);
    let projection = ProjectionRunner::new(store.clone(), model.clone())
        .batch_size(5)
        .poll_interval(Duration::from_millis(20))
        .lease(LeaseSettings::new(LEASE))
        .start(FlakyPostgresRoleCounts::default());
    let effects = Subscription::new(store, "effects")
        .batch_size(5)
        .poll_interval(Duration::from_millis(20))
        .lease(LeaseSettings::new(LEASE))
        .start_transactional(model, CountEffects);

    // Record each lease taken (retrying while the database is away).
    let mut recorded = [0_u64; 2];
    loop {
        let held = [projection.status().ownership, effects.status().ownership];
        for (slot, (reader, ownership)) in ["projection", "effects"].iter().zip(held).enumerate() {
            let Some(ownership) = ownership.filter(|o| o.held) else {
                continue;
            };
            if ownership.generation == recorded[slot] {
                continue;
            }
            let inserted = sqlx::query(
                "INSERT INTO lease_holders (pid, reader, generation) VALUES ($1, $2, $3)",
            )
            .bind(i64::from(std::process::id()))
            .bind(*reader)
            .bind(i64::try_from(ownership.generation)?)
            .execute(&pool)
            .await;
            if inserted.is_ok() {
                recorded[slot] = ownership.generation;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
