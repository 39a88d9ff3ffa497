//! `annals-bench`: the Annals side of `cargo xtask bench`. Runs every
//! workload on Annals and on its raw baselines (sqlx on the same tables and
//! payloads, a raw Redis GET) in one process, and prints one JSON object per
//! workload on stdout:
//!
//! ```text
//! {"workload":"W2 batch append, 1 writer","annals":{"per_s":…},"baselines":{"raw multi-row insert":{"per_s":…}},"peak_rss_mb":…}
//! ```
//!
//! `cargo xtask bench` starts the servers, runs this and the peer crates'
//! workspace, and writes the summary; run it by hand with
//! `ANNALS_BENCH_DATABASE_URL=… ANNALS_BENCH_REDIS_URL=… annals-bench [--quick]`.

pub mod data;
pub mod measure;
pub mod personal_data;
pub mod postgres;
pub mod promises;
pub mod rare_types;
pub mod sqlite;
pub mod time_travel;

use anyhow::{Context as _, Result};
use serde_json::Value;

/// How big each workload is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// W1 / W7: aggregates (each gets `commands_per_aggregate` commands).
    pub aggregates: u64,
    /// W1 / W7: commands per aggregate.
    pub commands_per_aggregate: u64,
    /// W2 / W3 / W4 / W6 / W9: events in the log; W11: the busy tenant's.
    pub log_events: u64,
    /// W5: events of the long aggregate.
    pub long_aggregate: u64,
    /// W5 / W6: timed repetitions.
    pub samples: usize,
    /// W7: events of the SQLite batch append.
    pub sqlite_events: u64,
}

impl Size {
    /// The sizes of the issue.
    pub const FULL: Size = Size {
        aggregates: 1_000,
        commands_per_aggregate: 10,
        log_events: 1_000_000,
        long_aggregate: 10_000,
        samples: 200,
        sqlite_events: 1_000_000,
    };

    /// Small sizes for a run of a few minutes.
    pub const QUICK: Size = Size {
        aggregates: 200,
        commands_per_aggregate: 5,
        log_events: 100_000,
        long_aggregate: 10_000,
        samples: 100,
        sqlite_events: 100_000,
    };
}

/// What every workload needs.
pub struct Context {
    /// The PostgreSQL server.
    pub database_url: String,
    /// The Redis server.
    pub redis_url: String,
    /// The sizes.
    pub size: Size,
    /// A suffix that makes this run's schemas unique.
    pub run: String,
}

impl Context {
    /// A schema name for this run.
    pub fn schema(&self, name: &str) -> String {
        format!("bench_{name}_{}", self.run)
    }
}

fn emit(result: Value) {
    println!("{result}");
}

/// Runs the workloads `args` name (all by default; `--quick` for small sizes).
pub async fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|arg| arg == "--quick");
    let only: Vec<&String> = args.iter().filter(|arg| !arg.starts_with("--")).collect();
    let context = Context {
        database_url: std::env::var("ANNALS_BENCH_DATABASE_URL")
            .context("ANNALS_BENCH_DATABASE_URL is not set; run `cargo xtask bench`")?,
        redis_url: std::env::var("ANNALS_BENCH_REDIS_URL")
            .context("ANNALS_BENCH_REDIS_URL is not set; run `cargo xtask bench`")?,
        size: if quick { Size::QUICK } else { Size::FULL },
        run: uuid::Uuid::now_v7().simple().to_string()[20..].to_owned(),
    };
    let wanted = |name: &str| only.is_empty() || only.iter().any(|w| w.eq_ignore_ascii_case(name));
    if wanted("w1") {
        emit(postgres::w1_commands(&context).await?);
    }
    let dataset = if wanted("w2") || wanted("w3") || wanted("w4") || wanted("w6") {
        let (results, dataset) = postgres::w2_batch_append(&context).await?;
        results.into_iter().for_each(emit);
        Some(dataset)
    } else {
        None
    };
    if let Some(dataset) = &dataset {
        if wanted("w3") {
            emit(postgres::w3_catch_up(&context, dataset).await?);
        }
        if wanted("w4") {
            emit(postgres::w4_sql_projection(&context, dataset).await?);
        }
        if wanted("w6") {
            postgres::w6_queries(&context, dataset)
                .await?
                .into_iter()
                .for_each(emit);
        }
    }
    if wanted("w8") {
        emit(personal_data::w8_personal_data(&context).await?);
    }
    if wanted("w10") {
        emit(time_travel::w10_load_as_of(&context).await?);
    }
    if wanted("w9") {
        emit(rare_types::w9_rare_types(&context).await?);
    }
    if wanted("w11") {
        emit(postgres::w11_quiet_tenant(&context).await?);
    }
    if wanted("w5") {
        postgres::w5_aggregate_load(&context)
            .await?
            .into_iter()
            .for_each(emit);
    }
    if wanted("w7") {
        sqlite::w7(&context).await?.into_iter().for_each(emit);
    }
    if only.iter().any(|w| w.as_str() == "probe") {
        emit(postgres::probe(&context).await?);
    }
    if wanted("promises") {
        emit(promises::iam_cache_hit_rate(&context).await?);
    }
    Ok(())
}
