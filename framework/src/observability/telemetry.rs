//! What Annals reports through the [`metrics`](https://docs.rs/metrics)
//! facade. Install any `metrics` recorder (a Prometheus exporter, say) and
//! these appear; without one they cost next to nothing.
//!
//! | metric | kind | labels | what |
//! | --- | --- | --- | --- |
//! | `annals_append_seconds` | histogram | `backend` | time of each successful append |
//! | `annals_events_appended_total` | counter | `backend` | events stored |
//! | `annals_append_failures_total` | counter | `backend` | appends refused or failed (conflicts included) |
//! | `annals_cache_hits_total` | counter | `cache` | cache lookups that found a value |
//! | `annals_cache_misses_total` | counter | `cache` | cache lookups that did not |
//! | `annals_cached_states_dropped_total` | counter | `aggregate`, `reason` | repository cache entries dropped: `undecodable`, `history` (they summarise another history than the store's), `behind` (an append found the stream further on) |
//! | `annals_handler_failures_total` | counter | `handler` | failed handler attempts |
//! | `annals_dead_letters_total` | counter | `handler` | events given up on and dead-lettered |
//! | `annals_projection_lag_events` | gauge | `projection` | about how many events of the log the projection has not applied (positions up to the head its last read saw) |
//! | `annals_projection_lag_seconds` | gauge | `projection` | age of the last applied event when it was applied |
//!
//! Labels carry names only (backend, cache kind, handler, projection),
//! never stream ids, payloads or metadata: nothing personal reaches a
//! metrics system.
//!
//! Spans (`tracing`) are named `annals.<component>.<operation>`: the stores'
//! reads and appends, the repository's load and execute, cache gets and
//! puts, publishing, handler dispatch and projection batches. Their fields
//! are likewise names, counts and stream ids, never payloads.
//!
//! ```
//! assert_eq!(annals::observability::telemetry::EVENTS_APPENDED, "annals_events_appended_total");
//! ```

use std::time::Duration;

/// Histogram: seconds per successful append (label `backend`).
pub const APPEND_SECONDS: &str = "annals_append_seconds";
/// Counter: events stored (label `backend`).
pub const EVENTS_APPENDED: &str = "annals_events_appended_total";
/// Counter: appends that returned an error (label `backend`).
pub const APPEND_FAILURES: &str = "annals_append_failures_total";
/// Counter: cache hits (label `cache`).
pub const CACHE_HITS: &str = "annals_cache_hits_total";
/// Counter: cache misses (label `cache`).
pub const CACHE_MISSES: &str = "annals_cache_misses_total";
/// Counter: repository cache entries dropped (labels `aggregate`, `reason`).
pub const CACHED_STATES_DROPPED: &str = "annals_cached_states_dropped_total";
/// Counter: failed handler attempts (label `handler`).
pub const HANDLER_FAILURES: &str = "annals_handler_failures_total";
/// Counter: dead-lettered events (label `handler`).
pub const DEAD_LETTERS: &str = "annals_dead_letters_total";
/// Gauge: events not yet applied by a projection (label `projection`).
pub const PROJECTION_LAG_EVENTS: &str = "annals_projection_lag_events";
/// Gauge: age in seconds of the last applied event (label `projection`).
pub const PROJECTION_LAG_SECONDS: &str = "annals_projection_lag_seconds";

/// Runs `write` on `batch` and records its time and outcome: what every
/// store's `append_batch` is made of.
pub(crate) async fn measured_append<F, Fut>(
    backend: &'static str,
    batch: Vec<crate::store::StreamAppend>,
    write: F,
) -> crate::Result<Vec<crate::store::AppendResult>>
where
    F: FnOnce(Vec<crate::store::StreamAppend>) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Vec<crate::store::AppendResult>>>,
{
    let started = std::time::Instant::now();
    let events = batch.iter().map(|append| append.events.len()).sum();
    let outcome = write(batch).await;
    append(backend, events, started.elapsed(), &outcome);
    outcome
}

/// Records one append's outcome.
fn append<T, E>(backend: &'static str, events: usize, took: Duration, outcome: &Result<T, E>) {
    if outcome.is_ok() {
        metrics::histogram!(APPEND_SECONDS, "backend" => backend).record(took.as_secs_f64());
        metrics::counter!(EVENTS_APPENDED, "backend" => backend).increment(events as u64);
    } else {
        metrics::counter!(APPEND_FAILURES, "backend" => backend).increment(1);
    }
}

/// Records a cache lookup.
pub(crate) fn cache_lookup(cache: &'static str, hit: bool) {
    let name = if hit { CACHE_HITS } else { CACHE_MISSES };
    metrics::counter!(name, "cache" => cache).increment(1);
}

/// Records a repository cache entry dropped, and why.
pub(crate) fn cached_state_dropped(aggregate: &'static str, reason: &'static str) {
    metrics::counter!(CACHED_STATES_DROPPED, "aggregate" => aggregate, "reason" => reason)
        .increment(1);
}

/// Records a failed handler attempt.
pub(crate) fn handler_failed(handler: &str) {
    metrics::counter!(HANDLER_FAILURES, "handler" => handler.to_owned()).increment(1);
}

/// Records a dead-lettered event.
pub(crate) fn dead_lettered(handler: &str) {
    metrics::counter!(DEAD_LETTERS, "handler" => handler.to_owned()).increment(1);
}

/// Records how far behind a projection is.
pub(crate) fn projection_lag(projection: &'static str, events: Option<u64>, age: Duration) {
    if let Some(events) = events {
        metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => projection).set(events as f64);
    }
    metrics::gauge!(PROJECTION_LAG_SECONDS, "projection" => projection).set(age.as_secs_f64());
}

/// Records that a projection has applied everything in the log.
pub(crate) fn projection_caught_up(projection: &'static str) {
    metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => projection).set(0.0);
}
