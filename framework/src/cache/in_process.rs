//! The in-process cache: bounded by bytes, with a time to live, on moka.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use moka::notification::RemovalCause;

use super::{CacheError, CacheKey, CacheStats, CacheValue, EventCache, StatsRecorder};

/// A cache in the process's memory, bounded by the bytes it holds (keys and
/// values), evicting the least useful entries (moka's TinyLFU) and entries
/// older than the time to live.
///
/// ```
/// use annals::cache::{CacheKey, EventCache, InProcessCache};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let cache = InProcessCache::builder().max_bytes(64 << 20).time_to_live(Duration::from_secs(300)).build();
/// let key = CacheKey::new(Some("acme"), "state", "user-1");
/// cache.put(&key, b"state bytes".as_slice().into()).await?;
/// assert_eq!(cache.get(&key).await?.as_deref(), Some(b"state bytes".as_slice()));
/// assert_eq!(cache.stats().hits, 1);
/// # Ok::<(), annals::cache::CacheError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct InProcessCache {
    entries: Cache<String, CacheValue>,
    stats: Arc<StatsRecorder>,
}

impl std::fmt::Debug for InProcessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCache")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish()
    }
}

/// Options of an [`InProcessCache`].
#[derive(Debug, Clone)]
pub struct InProcessCacheBuilder {
    max_bytes: u64,
    time_to_live: Option<Duration>,
}

impl InProcessCacheBuilder {
    /// Most bytes held, keys included (default 64 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Drop entries this long after they were written (default: never).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// Builds the cache.
    pub fn build(self) -> InProcessCache {
        let stats = Arc::new(StatsRecorder::named("in_process"));
        let listener_stats = stats.clone();
        let mut builder = Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(|key: &String, value: &CacheValue| {
                u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, _value, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    listener_stats.eviction();
                }
            });
        if let Some(ttl) = self.time_to_live {
            builder = builder.time_to_live(ttl);
        }
        InProcessCache {
            entries: builder.build(),
            stats,
        }
    }
}

impl InProcessCache {
    /// A cache of up to 64 MiB with no time to live.
    pub fn new() -> Self {
        InProcessCache::builder().build()
    }

    /// Options.
    pub fn builder() -> InProcessCacheBuilder {
        InProcessCacheBuilder {
            max_bytes: 64 << 20,
            time_to_live: None,
        }
    }

    /// Applies pending evictions now (moka runs them lazily); for tests and
    /// accurate statistics.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

impl Default for InProcessCache {
    fn default() -> Self {
        InProcessCache::new()
    }
}

#[async_trait]
impl EventCache for InProcessCache {
    fn name(&self) -> &'static str {
        "in-process"
    }

    #[tracing::instrument(name = "annals.cache.get", skip_all, fields(cache = "in_process"))]
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheValue>, CacheError> {
        let started = Instant::now();
        let found = self.entries.get(&key.render()).await;
        self.stats.lookup(found.is_some());
        self.stats.timed(started.elapsed());
        Ok(found)
    }

    #[tracing::instrument(name = "annals.cache.put", skip_all, fields(cache = "in_process"))]
    async fn put(&self, key: &CacheKey, value: CacheValue) -> Result<(), CacheError> {
        let started = Instant::now();
        self.entries.insert(key.render(), value).await;
        self.stats.timed(started.elapsed());
        Ok(())
    }

    #[tracing::instrument(name = "annals.cache.remove", skip_all, fields(cache = "in_process"))]
    async fn remove(&self, keys: &[CacheKey]) -> Result<(), CacheError> {
        for key in keys {
            self.entries.invalidate(&key.render()).await;
        }
        Ok(())
    }

    fn stats(&self) -> CacheStats {
        self.stats.snapshot()
    }
}
