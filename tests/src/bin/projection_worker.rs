//! A worker process for the projection failover test: runs the PostgreSQL
//! role-count projection under a lease in the schema named by its first
//! argument, and records its process id in `lease_holders` once active.

use std::sync::Arc;
use std::time::Duration;

use annals::checkpoint::LeaseSettings;
use annals::projection_runner::{PostgresReadModel, ProjectionRunner};
use annals::store::PostgresEventStore;
use annals_tests::backends::postgres_url;
use annals_tests::domain::FlakyPostgresRoleCounts;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let schema = std::env::args()
        .nth(1)
        .ok_or("usage: projection_worker SCHEMA")?;
    let store = PostgresEventStore::builder(postgres_url())
        .schema(schema)
        .max_connections(4)
        .connect()
        .await?;
    let pool = store.pool().clone();
    let running = ProjectionRunner::new(Arc::new(store), PostgresReadModel::new(pool.clone()))
        .batch_size(5)
        .poll_interval(Duration::from_millis(20))
        .lease(LeaseSettings::new(Duration::from_secs(2)))
        .start(FlakyPostgresRoleCounts::default());
    // Only the lease holder ever applies anything.
    running.wait_until(|status| status.applied > 0).await?;
    sqlx::query("INSERT INTO lease_holders (pid) VALUES ($1)")
        .bind(i64::from(std::process::id()))
        .execute(&pool)
        .await?;
    // Work until killed.
    std::future::pending::<()>().await;
    Ok(())
}
