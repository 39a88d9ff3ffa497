//! Timing, percentiles and peak memory.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The process's peak resident set (VmHWM) in MiB, if Linux tells.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak resident set, so the next [`peak_rss_mb`] covers only
/// what follows (Linux: `5` to `/proc/self/clear_refs`).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Items per second.
pub fn per_second(items: u64, took: Duration) -> f64 {
    items as f64 / took.as_secs_f64().max(1e-9)
}

/// Runs a workload's two sides in turns over the items `0..total`, `turn`
/// items at a time, the baseline going first every other turn, and returns
/// how long each side took in all: both are measured over the same minutes
/// of a shared machine (and its disk), not one side's minutes after the
/// other's. `annals` and `baseline` get the range of items of each turn
/// (what they return is dropped).
pub async fn in_turns<A, FA, TA, B, FB, TB>(
    total: u64,
    turn: u64,
    mut annals: A,
    mut baseline: B,
) -> anyhow::Result<(Duration, Duration)>
where
    A: FnMut(std::ops::Range<u64>) -> FA,
    FA: std::future::Future<Output = anyhow::Result<TA>>,
    B: FnMut(std::ops::Range<u64>) -> FB,
    FB: std::future::Future<Output = anyhow::Result<TB>>,
{
    let (mut annals_took, mut baseline_took) = (Duration::ZERO, Duration::ZERO);
    for (index, first) in (0..total).step_by(turn.max(1) as usize).enumerate() {
        let items = first..(first + turn.max(1)).min(total);
        if index % 2 == 1 {
            let (outcome, took) = timed(baseline(items.clone())).await;
            outcome?;
            baseline_took += took;
        }
        let (outcome, took) = timed(annals(items.clone())).await;
        outcome?;
        annals_took += took;
        if index % 2 == 0 {
            let (outcome, took) = timed(baseline(items)).await;
            outcome?;
            baseline_took += took;
        }
    }
    Ok((annals_took, baseline_took))
}

/// Runs `f`, returning its value and how long it took.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = f.await;
    (value, started.elapsed())
}

/// p50 and p99 of latencies, in milliseconds.
pub fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        samples
            .get(((samples.len().saturating_sub(1)) as f64 * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.5), at(0.99))
}

/// A throughput result: `{ "per_s": x }`.
pub fn rate(per_s: f64) -> Value {
    json!({ "per_s": per_s })
}

/// A latency result: `{ "p50_ms": a, "p99_ms": b }`.
pub fn latency(samples: Vec<Duration>) -> Value {
    let (p50, p99) = percentiles(samples);
    json!({ "p50_ms": p50, "p99_ms": p99 })
}

/// Runs `work(0) .. work(workers - 1)` as concurrent tasks and returns how
/// long they took together; the first worker error (or panic) is returned.
pub async fn in_workers<F, Fut>(workers: u64, work: F) -> anyhow::Result<Duration>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|worker| tokio::spawn(work(worker)))
        .collect();
    for task in tasks {
        task.await
            .map_err(|error| anyhow::anyhow!("a worker panicked: {error}"))??;
    }
    Ok(started.elapsed())
}
