//! W9: a projection of one event type in a hundred over a long log. The
//! store reads only that type (on its index, in log order), so the time
//! follows the matching events, not the log. Baselines: the best raw SQL
//! for the same events (one indexed SELECT of the type in log order, its
//! payloads decoded), and, for scale, the same projection over a log
//! holding only its events (which sit together on disk, where the long
//! log's are one in a hundred).

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::prelude::*;
use annals::projection::runner::{InMemory, ProjectionRunner};
use annals::store::LogFilter;
use anyhow::Result;
use serde_json::{Value, json};

use crate::Context;
use crate::data::{self, LineTotals};
use crate::measure::{peak_rss_mb, per_second, rate, reset_peak_rss, timed};
use crate::postgres::store;

/// Writes `events` events by one raw insert: every hundredth a line added
/// (the projection's type), the others of 99 other types, all with the
/// same payload (so skipping them saves their bytes too).
async fn fill(store: &PostgresEventStore, events: u64, wanted_every: u64) -> Result<()> {
    sqlx::query(
        "INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version, payload, tenant_id, actor) \
         SELECT gen_random_uuid(), 'w9-' || (g / 100), g % 100 + 1, \
                CASE WHEN g % $2 = 0 THEN 'bench.order.line_added' ELSE 'bench.other.type_' || (g % 100) END, \
                1, $3::jsonb, 'bench', 'bench@example.com' \
         FROM generate_series(0, $1 - 1) AS g",
    )
    .bind(i64::try_from(events)?)
    .bind(i64::try_from(wanted_every)?)
    .bind(data::payload_json(1, 1))
    .execute(store.pool())
    .await?;
    sqlx::query("ANALYZE annals_events")
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The best raw SQL for the projection's events: its type in log order on
/// the (type, transaction, position) index, payloads decoded.
async fn raw_read(store: &PostgresEventStore) -> Result<u64> {
    use futures_util::TryStreamExt as _;
    let mut rows = sqlx::query_as::<_, (i64, String, String)>(
        "SELECT position, event_type, payload::text FROM annals_events \
         WHERE event_type = 'bench.order.line_added' ORDER BY transaction_id, position",
    )
    .fetch(store.pool());
    let mut lines = 0u64;
    while let Some((_, _, payload)) = rows.try_next().await? {
        let _: data::LineAdded = serde_json::from_str(&payload)?;
        lines += 1;
    }
    Ok(lines)
}

/// What the projection reads: its one type, without metadata.
fn the_type() -> LogFilter {
    LogFilter::event_types(["bench.order.line_added"]).without_metadata()
}

/// Reads the log page by page through `filter`; how many events came.
async fn read_pages(store: &PostgresEventStore, filter: LogFilter) -> Result<u64> {
    let mut after = LogPosition::START;
    let mut read = 0u64;
    loop {
        let page = store.read_log(after, 5_000, &filter).await?;
        if page.read_to <= after {
            return Ok(read);
        }
        read += page.events.len() as u64;
        after = page.read_to;
    }
}

/// Where a projection's time went, from its start: when its first batch
/// was applied, when its last, and how long stopping it took.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    first_batch: Duration,
    last_batch: Duration,
    stop: Duration,
}

impl Phases {
    fn to_json(self) -> Value {
        json!({
            "first batch applied, ms": self.first_batch.as_secs_f64() * 1000.0,
            "last batch applied, ms": self.last_batch.as_secs_f64() * 1000.0,
            "stop, ms": self.stop.as_secs_f64() * 1000.0,
        })
    }
}

/// How long the in-memory [`LineTotals`] takes to apply `wanted` events,
/// and where the time went.
async fn project(store: &PostgresEventStore, wanted: u64) -> Result<(Duration, Phases)> {
    use futures_util::StreamExt as _;
    let store: Arc<dyn EventStore> = Arc::new(store.clone());
    let started = Instant::now();
    let (outcome, took) = timed(async {
        let running = ProjectionRunner::new(store, InMemory)
            .batch_size(5_000)
            .start(LineTotals::default());
        // Timestamps the status changes as they come.
        let mut updates = running.updates();
        let watcher = tokio::spawn(async move {
            let mut phases = Phases::default();
            while let Some(status) = updates.next().await {
                if status.applied > 0 && phases.first_batch.is_zero() {
                    phases.first_batch = started.elapsed();
                }
                if status.applied >= wanted {
                    phases.last_batch = started.elapsed();
                    break;
                }
            }
            phases
        });
        running
            .wait_until(Duration::from_secs(120), |status| status.applied >= wanted)
            .await?;
        let lines = running.read().await.lines;
        let (stopped, stop) = timed(running.stop()).await;
        stopped?;
        let phases = Phases {
            stop,
            ..watcher.await?
        };
        anyhow::Ok((lines, phases))
    })
    .await;
    let (lines, phases) = outcome?;
    anyhow::ensure!(
        lines == wanted,
        "the projection saw {lines} of {wanted} events"
    );
    Ok((took, phases))
}

/// W9 (see the module docs).
pub async fn w9_rare_types(context: &Context) -> Result<Value> {
    let events = context.size.log_events;
    let wanted = events / 100;
    let log = store(context, "w9").await?;
    fill(&log, events, 100).await?;
    let only = store(context, "w9_only").await?;
    fill(&only, wanted, 1).await?;

    // Warm the cache alike for both sides: each reads the type on its own
    // plan (the raw SELECT on a bitmap of the type's rows, the store on
    // the type's log-order index).
    raw_read(&log).await?;
    read_pages(&log, the_type()).await?;
    reset_peak_rss();
    let (annals, phases) = project(&log, wanted).await?;
    let rss = peak_rss_mb();
    let (raw, raw_took) = timed(raw_read(&log)).await;
    anyhow::ensure!(raw? == wanted, "the raw read missed events");
    let (proportional, _) = project(&only, wanted).await?;
    // What a runner pays once, when it first catches up (outside the
    // timed catch-up): the LISTEN connection of its watch, on a fresh
    // handle of the same schema.
    let fresh = store(context, "w9").await?;
    let ((), listen) = timed(async {
        fresh.watch_log().await;
    })
    .await;

    // The store's read alone, page by page (what the runner does besides).
    let (outcome, read_only) = timed(read_pages(&log, the_type())).await;
    anyhow::ensure!(outcome? == wanted, "the filtered read missed events");
    // What a reader filtering in the process reads: the whole log.
    let (outcome, whole) = timed(read_pages(&log, LogFilter::all())).await;
    anyhow::ensure!(outcome? == events, "the whole log was not read");
    Ok(json!({
        "workload": "W9 projection of 1 % of the types",
        "annals": rate(per_second(wanted, annals)),
        "baselines": {
            "raw indexed SELECT of the type": rate(per_second(wanted, raw_took)),
            "the same projection over only its events": rate(per_second(wanted, proportional)),
        },
        "extra": {
            "log events": events,
            "matching events": wanted,
            "seconds": annals.as_secs_f64(),
            "runner phases": phases.to_json(),
            "arming the LISTEN watch, ms": listen.as_secs_f64() * 1000.0,
            "read_log of the type alone, seconds": read_only.as_secs_f64(),
            "reading the whole log (a filter in the process), seconds": whole.as_secs_f64(),
        },
        "peak_rss_mb": rss,
    }))
}
