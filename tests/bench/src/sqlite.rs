//! W7: W1 and W2 on the embedded SQLite backend against raw sqlx inserts
//! into the same table.

use std::sync::Arc;

use annals::cache::InProcessCache;
use annals::prelude::*;
use annals::store::StreamAppend;
use anyhow::Result;
use serde_json::{Value, json};
use sqlx::QueryBuilder;

use crate::Context;
use crate::data::{self, LineAdded, Order};
use crate::measure::{in_turns, in_workers, peak_rss_mb, per_second, rate, reset_peak_rss};

use crate::postgres::WORKERS;

/// W7: commands and batch appends on SQLite.
pub async fn w7(context: &Context) -> Result<Vec<Value>> {
    let dir = tempfile::tempdir()?;
    let size = context.size;

    // W1 on SQLite.
    let annals = SqliteEventStore::open(dir.path().join("w7-annals.db")).await?;
    let repository = Arc::new(
        Repository::<Order>::new(Arc::new(annals)).with_cache(Arc::new(InProcessCache::new())),
    );
    let commands = size.aggregates * size.commands_per_aggregate;
    reset_peak_rss();
    let took = crate::postgres::commands_in_workers(repository, size).await?;
    let annals_commands = per_second(commands, took);
    let commands_rss = peak_rss_mb();

    let raw = SqliteEventStore::open(dir.path().join("w7-raw.db")).await?;
    let pool = raw.pool().clone();
    let took = in_workers(WORKERS, |worker| {
        let pool = pool.clone();
        async move {
            for version in 1..=size.commands_per_aggregate {
                for aggregate in (worker..size.aggregates).step_by(WORKERS as usize) {
                    sqlx::query(
                        "INSERT INTO annals_events (commit_id, event_id, stream_id, version, event_type, schema_version, \
                         payload, tenant_id, correlation_id, actor, headers, recorded_at) \
                         VALUES ((SELECT COALESCE(MAX(position), 0) + 1 FROM annals_events), ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(uuid::Uuid::now_v7())
                    .bind(format!("order-{aggregate}"))
                    .bind(version as i64)
                    .bind("bench.order.line_added")
                    .bind(data::payload_json(aggregate, version as u32))
                    .bind("tenant-1")
                    .bind(uuid::Uuid::now_v7())
                    .bind("bench@example.com")
                    .bind(data::headers_json())
                    .bind(chrono::Utc::now().timestamp_micros())
                    .execute(&pool)
                    .await?;
                }
            }
            Ok(())
        }
    })
    .await?;
    let raw_commands = per_second(commands, took);

    // W2 on SQLite, one writer, Annals and the raw insert taking turns of
    // 500 appends (the disk's good and bad seconds fall on both; measured
    // one after the other, the ratio went from 0.75x to 1.0x between rounds).
    let appends = size.sqlite_events / 100;
    let annals = SqliteEventStore::open(dir.path().join("w7-batch.db")).await?;
    let raw = SqliteEventStore::open(dir.path().join("w7-batch-raw.db")).await?;
    let pool = raw.pool().clone();
    reset_peak_rss();
    let annals_side = |orders: std::ops::Range<u64>| async {
        for order in orders {
            let metadata = data::metadata(uuid::Uuid::now_v7(), "tenant-1");
            let events = (1..=100)
                .map(|line| {
                    Ok(NewEvent::from_event(&LineAdded::sample(order, line))?
                        .with_metadata(metadata.clone()))
                })
                .collect::<Result<Vec<_>>>()?;
            annals
                .append_batch(vec![StreamAppend::new(
                    StreamId::new(format!("order-{order}"))?,
                    ExpectedVersion::NoStream,
                    events,
                )])
                .await?;
        }
        anyhow::Ok(())
    };
    let raw_side = |orders: std::ops::Range<u64>| async {
        for order in orders {
            let correlation = uuid::Uuid::now_v7();
            let now = chrono::Utc::now().timestamp_micros();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let next: i64 =
                sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) + 1 FROM annals_events")
                    .fetch_one(&mut *tx)
                    .await?;
            let mut insert = QueryBuilder::new(
                "INSERT INTO annals_events (commit_id, event_id, stream_id, version, event_type, schema_version, \
                 payload, tenant_id, correlation_id, actor, headers, recorded_at) ",
            );
            insert.push_values(1..=100u32, |mut row, line| {
                row.push_bind(next)
                    .push_bind(uuid::Uuid::now_v7())
                    .push_bind(format!("order-{order}"))
                    .push_bind(i64::from(line))
                    .push_bind("bench.order.line_added")
                    .push_bind(1i64)
                    .push_bind(data::payload_json(order, line))
                    .push_bind("tenant-1")
                    .push_bind(correlation)
                    .push_bind("bench@example.com")
                    .push_bind(data::headers_json())
                    .push_bind(now);
            });
            insert.build().execute(&mut *tx).await?;
            tx.commit().await?;
        }
        anyhow::Ok(())
    };
    let (annals_took, raw_took) = in_turns(appends, 500, annals_side, raw_side).await?;
    let annals_batch = per_second(appends * 100, annals_took);
    let raw_batch = per_second(appends * 100, raw_took);
    // Both sides ran in this process: the peak covers the two.
    let batch_rss = peak_rss_mb();

    Ok(vec![
        json!({
            "workload": "W7 SQLite commands",
            "annals": rate(annals_commands),
            "baselines": { "raw single-row insert": rate(raw_commands) },
            "peak_rss_mb": commands_rss,
        }),
        json!({
            "workload": "W7 SQLite batch append",
            "annals": rate(annals_batch),
            "baselines": { "raw multi-row insert": rate(raw_batch) },
            "peak_rss_mb": batch_rss,
        }),
    ])
}
