//! Publishing to a NATS JetStream stream (feature `nats`).

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};

use crate::error::{BoxError, Error, Result};
use crate::event::envelope::RecordedEvent;
use crate::store::redact_url;

/// How long JetStream remembers a message id to drop a republished event
/// by default: two minutes, JetStream's own default.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Writes events to one JetStream stream, in the log's order, each with
/// its event id as `Nats-Msg-Id`: an event published again (the relay's
/// process died after JetStream stored it and before its checkpoint moved,
/// or another instance took the relay over) is recognised by JetStream
/// and not stored twice, as long as it comes back within the stream's
/// duplicate window ([`DEFAULT_DUPLICATE_WINDOW`] unless
/// [`connect_with_window`](Self::connect_with_window) says otherwise).
///
/// Each event is one message on subject `{prefix}.{event type}` (a type's
/// characters other than letters, digits, `_` and `-` become `_` in the
/// subject), its payload the event's JSON envelope (id, stream, version,
/// position, type, schema version, payload, metadata, time, tags), with
/// headers `Annals-Event-Id`, `Annals-Stream-Id`, `Annals-Version`,
/// `Annals-Position`, `Annals-Event-Type` and, when it has one,
/// `Annals-Tenant`. A message is published only after the previous one is
/// acknowledged, so the stream holds the log's order; a failure (NATS
/// unreachable, no acknowledgement in time) is an error, and the
/// subscription the [`Publisher`](super::Publisher) runs behind offers the
/// event again after its retry delay: nothing is lost.
///
/// ```no_run
/// use annals::prelude::*;
/// use annals::publisher::{JetStream, Publisher};
/// use annals::subscription::Subscription;
///
/// # async fn run(store: std::sync::Arc<dyn EventStore>) -> annals::Result<()> {
/// let jetstream = JetStream::connect("nats://127.0.0.1:4222", "ANNALS", "annals").await?;
/// let publisher = Publisher::new().with_jetstream(jetstream);
/// // One owner across instances, checkpointed: see `Subscription`.
/// let running = Subscription::new(store, "jetstream-relay").start(publisher);
/// running.stop().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JetStream {
    context: jetstream::Context,
    stream: String,
    prefix: String,
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream")
            .field("stream", &self.stream)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl JetStream {
    /// Connects to NATS at `url` and opens stream `stream` (creating it,
    /// file-backed with subjects `{prefix}.>` and the default duplicate
    /// window, if it does not exist). Publishing waits up to 5 s for each
    /// acknowledgement.
    pub async fn connect(
        url: &str,
        stream: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Result<Self> {
        Self::connect_with_window(url, stream, prefix, DEFAULT_DUPLICATE_WINDOW).await
    }

    /// [`connect`](Self::connect), creating a missing stream with this
    /// duplicate window: how long after publishing an event a republished
    /// copy is still recognised. Make it longer than a relay takeover can
    /// take (its lease's time to live plus a batch).
    pub async fn connect_with_window(
        url: &str,
        stream: impl Into<String>,
        prefix: impl Into<String>,
        duplicate_window: Duration,
    ) -> Result<Self> {
        let shown = redact_url(url);
        let stream = stream.into();
        let prefix = prefix.into();
        if prefix.is_empty() || prefix.split('.').any(|token| !is_subject_token(token)) {
            return Err(Error::Config(format!(
                "the JetStream subject prefix {prefix:?} must be dot-separated tokens of letters, digits, `_` and `-`"
            )));
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|error| {
                Error::Config(format!("cannot connect to NATS at {shown}: {error}"))
            })?;
        let context = jetstream::new(client);
        let config = stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::File,
            duplicate_window,
            ..Default::default()
        };
        let opened = context
            .get_or_create_stream(config)
            .await
            .map_err(|error| {
                Error::Config(format!(
                    "cannot open JetStream stream {stream:?} at {shown}: {error}"
                ))
            })?;
        let subjects = &opened.cached_info().config.subjects;
        let wildcard = format!("{prefix}.>");
        if !subjects.contains(&wildcard) {
            return Err(Error::Config(format!(
                "JetStream stream {stream:?} at {shown} takes subjects {subjects:?}, not {wildcard:?}: give the relay its own stream or prefix"
            )));
        }
        Ok(JetStream {
            context,
            stream,
            prefix,
        })
    }

    /// The subject an event is published on.
    pub fn subject(&self, event: &RecordedEvent) -> String {
        let tokens: Vec<String> = event
            .event_type
            .split('.')
            .map(|token| {
                let cleaned: String = token
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                if cleaned.is_empty() {
                    "_".to_owned()
                } else {
                    cleaned
                }
            })
            .collect();
        format!("{}.{}", self.prefix, tokens.join("."))
    }

    /// Publishes one event and waits for JetStream to store it (or to
    /// report it a duplicate of one it holds).
    pub(super) async fn add(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let payload = serde_json::to_vec(event)?;
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(event.event_id.to_string())
            .header("Annals-Event-Id", event.event_id.to_string().as_str())
            .header("Annals-Stream-Id", event.stream_id.as_str())
            .header("Annals-Version", event.version.to_string().as_str())
            .header("Annals-Position", event.position.to_string().as_str())
            .header("Annals-Event-Type", event.event_type.as_str());
        if let Some(tenant) = &event.metadata.tenant_id {
            message = message.header("Annals-Tenant", tenant.as_str());
        }
        let ack = self
            .context
            .send_publish(self.subject(event), message)
            .await?
            .await?;
        if ack.stream != self.stream {
            return Err(format!(
                "event {} went to JetStream stream {:?}, not {:?}: another stream takes subject {}",
                event.event_id,
                ack.stream,
                self.stream,
                self.subject(event)
            )
            .into());
        }
        Ok(())
    }
}

/// Whether `token` may be one token of a NATS subject the relay builds.
fn is_subject_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
