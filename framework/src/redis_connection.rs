//! The Redis connection the cache and the stream publisher share the shape
//! of: one server (`redis://host:port`), or a Redis Cluster named by
//! several comma-separated node URLs (`redis://a:7000,redis://b:7001`).
//!
//! Either connects lazily (a process starts while Redis is down) and heals
//! by itself. On a cluster every command Annals sends names one key and
//! goes to the node that owns its slot, except `DEL` of several keys, which
//! the client splits by slot, and `WAIT`, which goes to the node of the key
//! just written: no operation needs two keys in one slot, so keys carry no
//! hash tags.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, FromRedisValue, RedisError, RedisResult};

use crate::error::{Error, Result};
use crate::store::redact_url;

/// A single server's auto-reconnecting connection, or a cluster's.
#[derive(Clone)]
pub(crate) enum RedisConnection {
    Single(ConnectionManager),
    Cluster(Box<Cluster>),
}

/// A cluster client and its connection, made on first use.
#[derive(Clone)]
pub(crate) struct Cluster {
    client: ClusterClient,
    connection: Arc<tokio::sync::OnceCell<ClusterConnection>>,
    timeout: Duration,
}

impl RedisConnection {
    /// Prepares the connection to `url` (one server, or several
    /// comma-separated node URLs of a cluster) without connecting yet;
    /// `config` sets up a single server's, `timeout` bounds a cluster's
    /// connects and responses. Errors name the URL, password hidden.
    pub(crate) fn open(
        url: &str,
        config: ConnectionManagerConfig,
        timeout: Duration,
    ) -> Result<Self> {
        let shown = redact_url(url);
        if url.contains(',') {
            let nodes: Vec<&str> = url
                .split(',')
                .map(str::trim)
                .filter(|node| !node.is_empty())
                .collect();
            let client = ClusterClient::builder(nodes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(|error| {
                    Error::Config(format!("invalid Redis Cluster nodes {shown}: {error}"))
                })?;
            return Ok(RedisConnection::Cluster(Box::new(Cluster {
                client,
                connection: Arc::default(),
                timeout,
            })));
        }
        let client = redis::Client::open(url)
            .map_err(|error| Error::Config(format!("invalid Redis URL {shown}: {error}")))?;
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| Error::Config(format!("cannot set up Redis at {shown}: {error}")))?;
        Ok(RedisConnection::Single(connection))
    }

    /// Runs one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        match self {
            RedisConnection::Single(connection) => {
                command.query_async(&mut connection.clone()).await
            }
            RedisConnection::Cluster(cluster) => {
                command.query_async(&mut cluster.connection().await?).await
            }
        }
    }

    /// Runs a command that names no key (`WAIT`) on the node that holds
    /// `key` (on a single server, the server).
    pub(crate) async fn query_at_key<T: FromRedisValue>(
        &self,
        command: Cmd,
        key: &str,
    ) -> RedisResult<T> {
        match self {
            RedisConnection::Single(_) => self.query(&command).await,
            RedisConnection::Cluster(cluster) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key.as_bytes(), SlotAddr::Master),
                ));
                let value = cluster
                    .connection()
                    .await?
                    .route_command(command, route)
                    .await?;
                T::from_redis_value(value).map_err(RedisError::from)
            }
        }
    }
}

impl Cluster {
    /// The connection, made now if it was not yet (a failed attempt is
    /// tried again at the next command).
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| async {
                tokio::time::timeout(self.timeout, self.client.get_async_connection())
                    .await
                    .map_err(|_| {
                        RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no Redis Cluster node answered in time",
                        ))
                    })?
            })
            .await
            .cloned()
    }
}
