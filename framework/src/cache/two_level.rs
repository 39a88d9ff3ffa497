//! Two caches stacked: the process's own first, then a shared one (Redis).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{CacheError, CacheKey, CacheStats, CacheValue, EventCache, StatsRecorder};

/// Looks in `near` first, then in `far` (filling `near` on a far hit);
/// writes and removals go to both. A failing `far` cache does not fail
/// operations that `near` can serve: its errors are counted and logged.
///
/// ```
/// use annals::cache::{EventCache, InProcessCache, TwoLevelCache};
/// use std::sync::Arc;
///
/// let stack = TwoLevelCache::new(Arc::new(InProcessCache::new()), Arc::new(InProcessCache::new()));
/// assert_eq!(stack.name(), "two-level");
/// ```
#[derive(Debug, Clone)]
pub struct TwoLevelCache {
    near: Arc<dyn EventCache>,
    far: Arc<dyn EventCache>,
    stats: Arc<StatsRecorder>,
}

impl TwoLevelCache {
    /// Stacks `near` (checked first) over `far`.
    pub fn new(near: Arc<dyn EventCache>, far: Arc<dyn EventCache>) -> Self {
        TwoLevelCache {
            near,
            far,
            stats: Arc::new(StatsRecorder::named("two_level")),
        }
    }

    /// The statistics of each level.
    pub fn level_stats(&self) -> (CacheStats, CacheStats) {
        (self.near.stats(), self.far.stats())
    }
}

#[async_trait]
impl EventCache for TwoLevelCache {
    fn name(&self) -> &'static str {
        "two-level"
    }

    #[tracing::instrument(name = "annals.cache.get", skip_all, fields(cache = "two_level"))]
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheValue>, CacheError> {
        let started = Instant::now();
        if let Some(value) = self.near.get(key).await? {
            self.stats.lookup(true);
            self.stats.timed(started.elapsed());
            return Ok(Some(value));
        }
        let far = self.far.get(key).await;
        self.stats.timed(started.elapsed());
        match far {
            Ok(Some(value)) => {
                self.stats.lookup(true);
                self.near.put(key, value.clone()).await?;
                Ok(Some(value))
            }
            Ok(None) => {
                self.stats.lookup(false);
                Ok(None)
            }
            Err(error) => {
                self.stats.error();
                Err(error)
            }
        }
    }

    #[tracing::instrument(name = "annals.cache.put", skip_all, fields(cache = "two_level"))]
    async fn put(&self, key: &CacheKey, value: CacheValue) -> Result<(), CacheError> {
        self.near.put(key, value.clone()).await?;
        self.far
            .put(key, value)
            .await
            .inspect_err(|_| self.stats.error())
    }

    #[tracing::instrument(name = "annals.cache.remove", skip_all, fields(cache = "two_level"))]
    async fn remove(&self, keys: &[CacheKey]) -> Result<(), CacheError> {
        self.near.remove(keys).await?;
        self.far
            .remove(keys)
            .await
            .inspect_err(|_| self.stats.error())
    }

    fn stats(&self) -> CacheStats {
        let mut stats = self.stats.snapshot();
        stats.evictions = self.near.stats().evictions + self.far.stats().evictions;
        stats
    }
}
