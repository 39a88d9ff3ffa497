//! The original design's cache-hit-rate promise, measured on the IAM
//! example's own workload (its scenario, small, on PostgreSQL).

use anyhow::Result;
use serde_json::{Value, json};

use crate::Context;

/// The repository cache's hit rate over the IAM scenario.
pub async fn iam_cache_hit_rate(context: &Context) -> Result<Value> {
    let mut config = iam_example::config::Config::small(
        iam_example::config::Database::Postgres {
            url: context.database_url.clone(),
            schema: context.schema("iam"),
        },
        None,
    );
    // The example's own mix: a few tenants of 100 users and the full
    // on-call rotation (the example's default run is 100 tenants).
    config.tenants = 10;
    config.users_per_tenant = 100;
    config.rotation_commands = 2_000;
    let report = iam_example::scenario::run(&config).await?;
    Ok(json!({
        "workload": "IAM example cache hit rate",
        "hit_rate": report.cache.hit_rate(),
        "hits": report.cache.hits,
        "misses": report.cache.misses,
    }))
}
