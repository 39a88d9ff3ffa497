//! W10: `load_as_of` early in a 1,000,000-event stream with a snapshot
//! every 100 versions. It finds the last version recorded by the instant
//! with a binary search over versions, then loads from the snapshot below
//! it: a bounded number of queries, counted. Baseline: `load_at` the same
//! version (what the load costs when the version is already known).

use std::sync::Arc;

use annals::aggregate::snapshot::{Snapshot, SnapshotCodec, SnapshotSettings};
use annals::prelude::*;
use annals::testing::RecordingStore;
use anyhow::Result;
use serde_json::{Value, json};

use crate::Context;
use crate::data::{self, Order};
use crate::measure::{latency, peak_rss_mb};
use crate::postgres::{samples, store};

/// The stream's events are a millisecond apart from this instant on.
fn base() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000)
}

/// W10 (see the module docs).
pub async fn w10_load_as_of(context: &Context) -> Result<Value> {
    let events = context.size.log_events;
    let every = 100;
    let log = store(context, "w10").await?;
    let stream = Order::stream_id(&"w10")?;
    sqlx::query(
        "INSERT INTO annals_events (event_id, stream_id, version, event_type, schema_version, payload, recorded_at) \
         SELECT gen_random_uuid(), $1, g, 'bench.order.line_added', 1, $2::jsonb, \
                $3 + g * interval '1 millisecond' \
         FROM generate_series(1, $4) AS g",
    )
    .bind(stream.as_str())
    .bind(data::payload_json(1, 1))
    .bind(base())
    .bind(i64::try_from(events)?)
    .execute(log.pool())
    .await?;
    let codec = SnapshotCodec::new();
    let snapshots = log.snapshots();
    for version in (every..=events).step_by(usize::try_from(every)?) {
        let state = Payload::from_serialize(&json!({ "lines": version, "total_cents": 0 }))?;
        let (encoding, data) = codec.encode(&stream, version, Order::SNAPSHOT_VERSION, &state)?;
        snapshots
            .save(Snapshot {
                stream_id: stream.clone(),
                version,
                snapshot_version: Order::SNAPSHOT_VERSION,
                encoding,
                data,
                taken_at: chrono::Utc::now(),
            })
            .await?;
    }
    sqlx::query("ANALYZE annals_events")
        .execute(log.pool())
        .await?;

    let recording = RecordingStore::new(Arc::new(log.clone()));
    let orders: Repository<Order> =
        Repository::new(recording.clone()).with_snapshots(SnapshotSettings::new().every(every));
    // Early in the stream: version 1,050 (a snapshot at 1,000, 50 events).
    let target = 1_050u64.min(events);
    let instant = base() + chrono::Duration::milliseconds(i64::try_from(target)?);
    let loaded = orders.load_as_of("w10", instant).await?;
    anyhow::ensure!(
        loaded.version == target && u64::from(loaded.state.lines) == target,
        "load_as_of found version {} ({} lines), not {target}",
        loaded.version,
        loaded.state.lines
    );
    let before = recording.stream_reads();
    orders.load_as_of("w10", instant).await?;
    let reads = recording.stream_reads() - before;

    let count = context.size.samples.min(100);
    let as_of = samples(count, || async {
        orders.load_as_of("w10", instant).await?;
        Ok(())
    })
    .await?;
    let at = samples(count, || async {
        orders.load_at("w10", target).await?;
        Ok(())
    })
    .await?;
    Ok(json!({
        "workload": "W10 load_as_of early in a long stream",
        "annals": latency(as_of),
        "baselines": { "load_at the same version": latency(at) },
        "extra": {
            "stream events": events,
            "snapshot every": every,
            "stream reads per load": reads,
            "snapshot loads per load": 1,
            "reads per load before (walking the snapshots down, a snapshot load and a stream read each)": 2 * (events - target) / every,
        },
        "peak_rss_mb": peak_rss_mb(),
    }))
}
