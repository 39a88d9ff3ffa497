//! Cache statistics: hits, misses, hit rate, evictions, errors, latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of a cache's counters.
///
/// ```
/// use annals::cache::StatsRecorder;
///
/// let recorder = StatsRecorder::default();
/// recorder.lookup(true);
/// recorder.lookup(true);
/// recorder.lookup(false);
/// let stats = recorder.snapshot();
/// assert_eq!((stats.hits, stats.misses), (2, 1));
/// assert!((stats.hit_rate() - 2.0 / 3.0).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheStats {
    /// Lookups that found a value.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries dropped for size or age.
    pub evictions: u64,
    /// Operations that failed (the cache was unreachable, ...).
    pub errors: u64,
    /// Operations timed.
    pub operations: u64,
    /// Mean time per operation.
    pub mean_latency: Duration,
}

impl CacheStats {
    /// Hits over lookups, 0 when there were none.
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// Lock-free counters behind [`CacheStats`].
#[derive(Debug, Default)]
pub struct StatsRecorder {
    /// The `cache` label of the lookups reported to `metrics` (see
    /// [`telemetry`](crate::observability::telemetry)); empty reports nothing.
    cache: &'static str,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    errors: AtomicU64,
    operations: AtomicU64,
    nanos: AtomicU64,
}

impl StatsRecorder {
    /// A recorder that also reports its lookups to `metrics` with the label
    /// `cache = name` (`Default` reports nothing there).
    pub fn named(name: &'static str) -> Self {
        StatsRecorder {
            cache: name,
            ..StatsRecorder::default()
        }
    }

    /// Counts a lookup.
    pub fn lookup(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        if !self.cache.is_empty() {
            crate::observability::telemetry::cache_lookup(self.cache, hit);
        }
    }

    /// Counts an eviction.
    pub fn eviction(&self) {
        self.evictions.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long an operation took.
    pub fn timed(&self, elapsed: Duration) {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> CacheStats {
        let operations = self.operations.load(Ordering::Relaxed);
        let nanos = self.nanos.load(Ordering::Relaxed);
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            operations,
            mean_latency: Duration::from_nanos(nanos.checked_div(operations).unwrap_or(0)),
        }
    }
}
