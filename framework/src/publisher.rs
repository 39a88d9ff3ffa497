//! Publishing committed events: to in-process subscribers (subscribe and
//! unsubscribe by event type at run time), to Redis Streams (feature
//! `redis`) and to NATS JetStream (feature `nats`). The publisher is an [`EventSink`]: behind a
//! [`Subscription`](crate::subscription::Subscription) it forwards every
//! committed event at least once, and a failed Redis write makes the
//! subscription offer the event again, so nothing is lost when Redis or the
//! process goes away between append and publish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::BoxError;
use crate::event::envelope::RecordedEvent;
use crate::subscription::EventSink;

/// Identifies an in-process subscriber, to unsubscribe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriberId(u64);

struct Subscriber {
    event_types: Vec<String>,
    sender: mpsc::Sender<Arc<RecordedEvent>>,
}

/// Publisher counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Events forwarded (to every destination that wanted them).
    pub published: u64,
    /// Forwarding attempts that failed; each is retried (the subscription
    /// offers the event again), so this is also the number of retries. The
    /// publisher's lag is its subscription's
    /// [`lag`](crate::subscription::SubscriptionStatus::lag).
    pub failed: u64,
    /// In-process subscribers dropped because their receiver was gone.
    pub dropped_subscribers: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Forwards events to in-process subscribers and, optionally, Redis Streams.
///
/// ```
/// use annals::prelude::*;
/// use annals::publisher::Publisher;
/// use annals::subscription::EventSink;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let mut publisher = Publisher::new();
/// let (_id, mut registrations) = publisher.subscribe(&["iam.user.registered"], 100);
///
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::new("user-1")?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::json("iam.user.registered", &1)?]).await?;
/// let event = store.read_stream(&stream, 1, 1).await?.remove(0);
///
/// publisher.handle(&event).await?;
/// assert_eq!(registrations.recv().await.map(|e| e.event_id), Some(event.event_id));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Publisher {
    subscribers: Arc<RwLock<HashMap<u64, Subscriber>>>,
    next_id: Arc<AtomicU64>,
    counters: Arc<Counters>,
    #[cfg(feature = "redis")]
    redis: Option<RedisStreams>,
    #[cfg(feature = "nats")]
    jetstream: Option<JetStream>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subscribers = self.subscribers.read().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("Publisher")
            .field("subscribers", &subscribers)
            .finish()
    }
}

impl Publisher {
    /// A publisher with no subscribers.
    pub fn new() -> Self {
        Publisher::default()
    }

    /// Subscribes to these event types (every type when empty); events
    /// arrive on the returned channel, which holds up to `capacity` (a full
    /// channel makes publishing wait: slow subscribers apply back-pressure).
    pub fn subscribe(
        &self,
        event_types: &[&str],
        capacity: usize,
    ) -> (SubscriberId, mpsc::Receiver<Arc<RecordedEvent>>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber = Subscriber {
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            sender,
        };
        if let Ok(mut subscribers) = self.subscribers.write() {
            subscribers.insert(id, subscriber);
        }
        (SubscriberId(id), receiver)
    }

    /// Removes a subscriber; `false` if it was not subscribed.
    pub fn unsubscribe(&self, id: SubscriberId) -> bool {
        self.subscribers
            .write()
            .map(|mut subscribers| subscribers.remove(&id.0).is_some())
            .unwrap_or(false)
    }

    /// Also writes every event to Redis Streams.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn with_redis_streams(mut self, streams: RedisStreams) -> Self {
        self.redis = Some(streams);
        self
    }

    /// Also writes every event to a NATS JetStream stream.
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    pub fn with_jetstream(mut self, jetstream: JetStream) -> Self {
        self.jetstream = Some(jetstream);
        self
    }

    /// The counters so far.
    pub fn stats(&self) -> PublisherStats {
        PublisherStats {
            published: self.counters.published.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped_subscribers: self.counters.dropped.load(Ordering::Relaxed),
        }
    }

    #[tracing::instrument(name = "annals.publisher.publish", skip_all, fields(event_type = %event.event_type, stream = %event.stream_id, version = event.version))]
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            redis.add(event).await?;
        }
        #[cfg(feature = "nats")]
        if let Some(jetstream) = &self.jetstream {
            jetstream.add(event).await?;
        }
        let targets: Vec<(u64, mpsc::Sender<Arc<RecordedEvent>>)> = self
            .subscribers
            .read()
            .map(|subscribers| {
                subscribers
                    .iter()
                    .filter(|(_, s)| {
                        s.event_types.is_empty() || s.event_types.contains(&event.event_type)
                    })
                    .map(|(id, s)| (*id, s.sender.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if targets.is_empty() {
            return Ok(());
        }
        let shared = Arc::new(event.clone());
        for (id, sender) in targets {
            if sender.send(shared.clone()).await.is_err() {
                // The receiver is gone: the subscriber left without unsubscribing.
                self.unsubscribe(SubscriberId(id));
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventSink for Publisher {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        match self.publish(event).await {
            Ok(()) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }
}

#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use jetstream::{DEFAULT_DUPLICATE_WINDOW, JetStream};
#[cfg(feature = "nats")]
mod jetstream;

#[cfg(feature = "redis")]
pub use redis_streams::RedisStreams;

#[cfg(feature = "redis")]
mod redis_streams {
    use std::time::Duration;

    use redis::aio::ConnectionManagerConfig;

    use crate::error::{BoxError, Result};
    use crate::event::envelope::RecordedEvent;
    use crate::redis_connection::RedisConnection;

    /// Writes events to Redis Streams with `XADD`: one stream per aggregate
    /// type (`{prefix}:events:{category}`) or one for everything. Each entry
    /// carries the event id, so a consumer recognises a redelivery; read
    /// them with consumer groups (`XREADGROUP`).
    ///
    /// An entry's id is the event's log position (`{commit}-{sequence}`),
    /// which only grows along the log: an event published again (the
    /// process died after `XADD` and before its checkpoint moved) is
    /// recognised by Redis and not added twice, so each event is in its
    /// stream once. A stream whose entries come from elsewhere (`XADD *`,
    /// another database's log under the same prefix) is an error, never a
    /// silent skip: give each log its own prefix.
    /// Streams are never trimmed unless [`max_len`](Self::max_len) says so,
    /// and [`wait_for_replicas`](Self::wait_for_replicas) makes each entry
    /// wait for Redis replicas before the checkpoint moves on.
    #[derive(Clone)]
    pub struct RedisStreams {
        connection: RedisConnection,
        prefix: String,
        single_stream: Option<String>,
        max_len: Option<u64>,
        replicas: Option<(u32, Duration)>,
    }

    impl RedisStreams {
        /// Connects (lazily) to `url`, one server or a Redis Cluster's
        /// comma-separated node URLs (each stream is one key, on the node
        /// of its slot); streams are named `{prefix}:events:{category}`.
        pub fn new(url: &str, prefix: impl Into<String>) -> Result<Self> {
            let timeout = Duration::from_millis(500);
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1);
            let connection = RedisConnection::open(url, config, timeout)?;
            Ok(RedisStreams {
                connection,
                prefix: prefix.into(),
                single_stream: None,
                max_len: None,
                replicas: None,
            })
        }

        /// After each entry, waits (Redis `WAIT`) until `replicas` replicas
        /// have it, for at most `timeout`; fewer is an error, so the event is
        /// offered again and the checkpoint does not move past it. The
        /// connection answers within 500 ms, so a longer `timeout` fails as
        /// a timeout (an error too, never a pass).
        ///
        /// ```no_run
        /// use annals::publisher::RedisStreams;
        /// use std::time::Duration;
        ///
        /// let streams = RedisStreams::new("redis://127.0.0.1:6379", "iam")?
        ///     .wait_for_replicas(1, Duration::from_millis(200));
        /// # Ok::<(), annals::Error>(())
        /// ```
        pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
            self.replicas = Some((replicas, timeout));
            self
        }

        /// Writes every event to this one stream instead.
        pub fn single_stream(mut self, key: impl Into<String>) -> Self {
            self.single_stream = Some(key.into());
            self
        }

        /// Trims each stream to about this many entries (`MAXLEN ~`). Off by
        /// default: trimming drops entries whether or not every consumer
        /// group has read them, so set it only to a retention you accept.
        pub fn max_len(mut self, entries: u64) -> Self {
            self.max_len = Some(entries);
            self
        }

        /// The stream an event goes to.
        pub fn stream_key(&self, event: &RecordedEvent) -> String {
            match &self.single_stream {
                Some(key) => key.clone(),
                None => format!("{}:events:{}", self.prefix, event.stream_id.category()),
            }
        }

        /// Redis refused `event`'s entry id as not past the stream's newest:
        /// confirms the entry there is this very event (same id, same event
        /// id), or one trimmed away by `max_len`. Anything else (a stream
        /// written with `XADD *`, by another program, or from the log of
        /// another or recreated database, whose positions start over) is an
        /// error naming the stream, never a silent skip.
        async fn check_published(
            &self,
            key: &str,
            entry_id: &str,
            event: &RecordedEvent,
        ) -> Result<(), BoxError> {
            // [[id, [field, value, field, value, ...]]]
            let found: Vec<(String, Vec<String>)> = self
                .connection
                .query(redis::cmd("XRANGE").arg(key).arg(entry_id).arg(entry_id))
                .await?;
            let event_id = event.event_id.to_string();
            let same_event = found.first().is_some_and(|(_, fields)| {
                fields
                    .chunks(2)
                    .any(|pair| pair[0] == "event_id" && pair.get(1) == Some(&event_id))
            });
            if same_event {
                return Ok(());
            }
            if found.is_empty() && self.max_len.is_some() {
                let oldest: Vec<(String, Vec<String>)> = self
                    .connection
                    .query(
                        redis::cmd("XRANGE")
                            .arg(key)
                            .arg("-")
                            .arg("+")
                            .arg("COUNT")
                            .arg(1),
                    )
                    .await?;
                let below_oldest = oldest
                    .first()
                    .and_then(|(id, _)| id.split_once('-'))
                    .and_then(|(ms, seq)| Some((ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?)))
                    .is_some_and(|oldest| {
                        (event.position.commit, event.position.sequence) < oldest
                    });
                if below_oldest {
                    // Published, then trimmed by the retention the user set.
                    return Ok(());
                }
            }
            Err(format!(
                "Redis stream `{key}` is past entry {entry_id} but does not hold event {event_id} there \
                 (entries from `XADD *`, another program, or the log of another or recreated \
                 database); publish to a new prefix"
            )
            .into())
        }

        pub(super) async fn add(&self, event: &RecordedEvent) -> Result<(), BoxError> {
            let metadata = serde_json::to_string(&event.metadata)?;
            let key = self.stream_key(event);
            let entry_id = format!("{}-{}", event.position.commit, event.position.sequence);
            let mut command = redis::cmd("XADD");
            command.arg(&key);
            if let Some(max_len) = self.max_len {
                command.arg("MAXLEN").arg("~").arg(max_len);
            }
            command
                .arg(&entry_id)
                .arg("event_id")
                .arg(event.event_id.to_string())
                .arg("stream_id")
                .arg(event.stream_id.as_str())
                .arg("version")
                .arg(event.version)
                .arg("event_type")
                .arg(&event.event_type)
                .arg("schema_version")
                .arg(event.schema_version)
                .arg("position")
                .arg(event.position.to_string())
                .arg("payload")
                .arg(event.payload.as_json())
                .arg("metadata")
                .arg(metadata);
            match self.connection.query::<String>(&command).await {
                Ok(_) => {}
                // The stream's newest id is at or past this one: this event
                // (or a later one) is in it already, from an earlier run,
                // unless the stream holds ids Annals did not give.
                Err(error) if error.to_string().contains("equal or smaller") => {
                    self.check_published(&key, &entry_id, event).await?;
                    tracing::debug!(stream = %key, entry = %entry_id, "already published; not added again");
                }
                Err(error) => return Err(error.into()),
            }
            // Also for an entry found already there: an earlier attempt may
            // have added it and then failed this wait.
            if let Some((replicas, timeout)) = self.replicas {
                let millis = u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let mut wait = redis::cmd("WAIT");
                wait.arg(replicas).arg(millis);
                // On a cluster: the node that holds the stream.
                let acknowledged: u32 = self.connection.query_at_key(wait, &key).await?;
                if acknowledged < replicas {
                    return Err(format!(
                        "entry {entry_id} of `{key}` reached {acknowledged} of {replicas} Redis replicas within {timeout:?}"
                    )
                    .into());
                }
            }
            Ok(())
        }
    }
}
