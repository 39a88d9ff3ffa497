//! The Redis cache: shared by every process, with a key prefix and the
//! tenant in every key, over one auto-reconnecting multiplexed connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManagerConfig;

use super::{CacheError, CacheKey, CacheStats, CacheValue, EventCache, StatsRecorder};
use crate::error::{Error, Result};
use crate::redis_connection::RedisConnection;
use crate::store::redact_url;

const NAME: &str = "redis";

/// A cache in Redis. Connecting is lazy, so a process starts while Redis is
/// down; operations then fail fast (within the response timeout) and the
/// repository falls back to the store. The connection heals by itself when
/// Redis comes back.
///
/// ```no_run
/// use annals::cache::RedisCache;
/// use std::time::Duration;
///
/// # async fn run() -> annals::Result<()> {
/// let cache = RedisCache::builder("redis://127.0.0.1:6379")
///     .prefix("iam")
///     .time_to_live(Duration::from_secs(600))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisCache {
    connection: RedisConnection,
    /// The server's URL with any password hidden, for messages.
    shown_url: String,
    prefix: String,
    ttl: Option<Duration>,
    stats: Arc<StatsRecorder>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Options of a [`RedisCache`].
#[derive(Debug, Clone)]
pub struct RedisCacheBuilder {
    url: String,
    prefix: String,
    ttl: Option<Duration>,
    timeout: Duration,
}

impl RedisCacheBuilder {
    /// Prefix of every key (default `annals`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Expire entries this long after they were written (default: never).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long to wait for Redis before treating an operation as failed
    /// (default 250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Prepares the connection (lazily: Redis need not be up yet).
    pub async fn connect(self) -> Result<RedisCache> {
        let shown = redact_url(&self.url);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = RedisConnection::open(&self.url, config, self.timeout)?;
        Ok(RedisCache {
            connection,
            shown_url: shown,
            prefix: self.prefix,
            ttl: self.ttl,
            stats: Arc::new(StatsRecorder::named("redis")),
        })
    }
}

impl RedisCache {
    /// Checks that the server answers `PING`, for start-up checks and health
    /// reports (the cache itself never fails a request when Redis is down).
    pub async fn ping(&self) -> Result<()> {
        self.connection
            .query::<String>(&redis::cmd("PING"))
            .await
            .map(drop)
            .map_err(|error| Error::Backend {
                backend: "redis",
                operation: "ping",
                source: format!("no answer from {}: {error}", self.shown_url).into(),
            })
    }

    /// Options for the Redis server at `url` (`redis://[:password@]host:port[/db]`),
    /// or for a Redis Cluster: its nodes' URLs, comma-separated
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`; each entry is one
    /// key, on the node of its slot).
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: url.into(),
            prefix: "annals".to_owned(),
            ttl: None,
            timeout: Duration::from_millis(250),
        }
    }

    fn key(&self, key: &CacheKey) -> String {
        format!("{}:{}", self.prefix, key.render())
    }

    fn failed(&self, operation: &'static str) -> impl Fn(redis::RedisError) -> CacheError + '_ {
        move |error| {
            self.stats.error();
            CacheError {
                cache: NAME,
                operation,
                message: error.to_string(),
            }
        }
    }
}

#[async_trait]
impl EventCache for RedisCache {
    fn name(&self) -> &'static str {
        NAME
    }

    #[tracing::instrument(name = "annals.cache.get", skip_all, fields(cache = "redis"))]
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheValue>, CacheError> {
        let started = Instant::now();
        let found: Option<Vec<u8>> = self
            .connection
            .query(redis::cmd("GET").arg(self.key(key)))
            .await
            .map_err(self.failed("get"))?;
        self.stats.lookup(found.is_some());
        self.stats.timed(started.elapsed());
        Ok(found.map(CacheValue::from))
    }

    #[tracing::instrument(name = "annals.cache.put", skip_all, fields(cache = "redis"))]
    async fn put(&self, key: &CacheKey, value: CacheValue) -> Result<(), CacheError> {
        let started = Instant::now();
        let mut command = redis::cmd("SET");
        command.arg(self.key(key)).arg(&*value);
        if let Some(ttl) = self.ttl {
            command
                .arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        self.connection
            .query::<()>(&command)
            .await
            .map_err(self.failed("put"))?;
        self.stats.timed(started.elapsed());
        Ok(())
    }

    #[tracing::instrument(name = "annals.cache.remove", skip_all, fields(cache = "redis"))]
    async fn remove(&self, keys: &[CacheKey]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut command = redis::cmd("DEL");
        for key in keys {
            command.arg(self.key(key));
        }
        // On a cluster the client splits it by slot.
        self.connection
            .query::<()>(&command)
            .await
            .map_err(self.failed("remove"))?;
        self.stats.timed(started.elapsed());
        Ok(())
    }

    fn stats(&self) -> CacheStats {
        self.stats.snapshot()
    }
}
