//! Caching: a byte cache trait ([`EventCache`]) with an in-process
//! implementation ([`InProcessCache`]), a Redis one (`RedisCache`, feature
//! `redis`) and a two-level stack ([`TwoLevelCache`]). The repository keeps
//! aggregate state in it ([`Repository::with_cache`](crate::Repository::with_cache));
//! [`CachingEventStore`] keeps streams' events.
//!
//! The cache is never the source of truth. A cache that fails (Redis down)
//! is logged and counted, and the repository reads the store instead; a
//! stale entry cannot make a command succeed on stale state, because loads
//! always read the events after the cached version, and appends still check
//! the expected version.

pub(crate) mod caching_store;
mod in_process;
#[cfg(feature = "redis")]
mod redis;
mod stats;
mod two_level;

use std::sync::Arc;

use async_trait::async_trait;

pub use caching_store::{CachingEventStore, DEFAULT_MAX_CACHED_EVENTS};
pub use in_process::{InProcessCache, InProcessCacheBuilder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisCache, RedisCacheBuilder};
pub use stats::{CacheStats, StatsRecorder};
pub use two_level::TwoLevelCache;

/// A cached value: immutable bytes shared without copying.
pub type CacheValue = Arc<[u8]>;

/// What a cache entry is about. Rendered as `t{len}:{tenant}:{kind}:{id}`
/// for a tenant's entry and `_:{kind}:{id}` for an entry of the unscoped
/// store (Redis adds its key prefix). The tenant is length-prefixed and the
/// kind is a fixed word, so the rendering is unambiguous whatever the tenant
/// and id hold: entries of different tenants, or of a tenant and the
/// unscoped store, never share a key (a tenant named `_`, or one whose name
/// contains `:`, included).
///
/// ```
/// use annals::cache::CacheKey;
///
/// assert_eq!(CacheKey::new(Some("acme"), "state", "user-1@1").render(), "t4:acme:state:user-1@1");
/// assert_eq!(CacheKey::new(None, "stream", "user-1").render(), "_:stream:user-1");
/// // A tenant cannot forge another's key, nor the unscoped store's.
/// assert_ne!(
///     CacheKey::new(Some("a:state:x"), "state", "y").render(),
///     CacheKey::new(Some("a"), "state", "x:state:y").render(),
/// );
/// assert_ne!(CacheKey::new(Some("_"), "stream", "s").render(), CacheKey::new(None, "stream", "s").render());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The tenant the entry belongs to, if any.
    pub tenant: Option<String>,
    /// The kind of entry: `state`, `stream`, ... (a fixed word without `:`).
    pub kind: &'static str,
    /// The entry's id within its kind (a stream id, an event id).
    pub id: String,
}

impl CacheKey {
    /// A key of `kind` for `id`, in `tenant`.
    pub fn new(tenant: Option<&str>, kind: &'static str, id: impl Into<String>) -> Self {
        CacheKey {
            tenant: tenant.map(str::to_owned),
            kind,
            id: id.into(),
        }
    }

    /// The key as one string.
    pub fn render(&self) -> String {
        match &self.tenant {
            Some(tenant) => format!("t{}:{tenant}:{}:{}", tenant.len(), self.kind, self.id),
            None => format!("_:{}:{}", self.kind, self.id),
        }
    }
}

/// A failure of the cache itself (never of the data it holds).
#[derive(Debug, thiserror::Error)]
#[error("{cache} cache: {operation} failed: {message}")]
pub struct CacheError {
    /// Which cache (`in-process`, `redis`).
    pub cache: &'static str,
    /// What it was doing.
    pub operation: &'static str,
    /// The underlying error, without secrets.
    pub message: String,
}

/// A cache of byte values. Implementations record [`CacheStats`].
///
/// Implement it to put Annals' caching on another store (memcached, a
/// database table); the repository and [`CachingEventStore`] only need
/// these four operations, and treat every error as "not cached".
#[async_trait]
pub trait EventCache: Send + Sync + std::fmt::Debug {
    /// Short name for logs: `in-process`, `redis`, `two-level`.
    fn name(&self) -> &'static str;

    /// The value under `key`, if cached.
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheValue>, CacheError>;

    /// Stores `value` under `key`.
    async fn put(&self, key: &CacheKey, value: CacheValue) -> Result<(), CacheError>;

    /// Removes these keys (missing ones are fine).
    async fn remove(&self, keys: &[CacheKey]) -> Result<(), CacheError>;

    /// Hits, misses, evictions, errors and latency so far.
    fn stats(&self) -> CacheStats;
}
