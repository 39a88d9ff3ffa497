//! The handler registry: runs the handlers of each event in priority order,
//! with a timeout per attempt, retries with exponential backoff and jitter,
//! a circuit breaker per handler, dead letters for events that still fail,
//! and per-handler statistics. A panicking handler is caught and counted;
//! it never stops the runner.
//!
//! It is an [`EventSink`]: put it behind a
//! [`Subscription`](crate::subscription::Subscription) and every committed
//! event reaches the handlers at least once.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::error::{BoxError, Error, Result};
use crate::event::envelope::RecordedEvent;
use crate::registry::{self, HandlerDescriptor};
use crate::store::{EventQuery, EventStore};
use crate::subscription::EventSink;
use crate::subscription::dead_letter::DeadLetter;
use crate::subscription::handler::RetryPolicy;

/// Calls a handler registered at run time.
pub type DynHandler =
    Arc<dyn for<'a> Fn(&'a RecordedEvent) -> BoxFuture<'a, Result<(), BoxError>> + Send + Sync>;

/// A handler as the registry runs it.
#[derive(Clone)]
pub struct HandlerSpec {
    /// Its unique name.
    pub name: String,
    /// The event types it reacts to.
    pub event_types: Vec<String>,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// Longest one attempt may take.
    pub timeout: Option<Duration>,
    /// The handler.
    pub call: DynHandler,
}

impl std::fmt::Debug for HandlerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerSpec")
            .field("name", &self.name)
            .field("event_types", &self.event_types)
            .field("priority", &self.priority)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HandlerSpec {
    /// A handler with default priority (0), retry (3 attempts from 100 ms)
    /// and no timeout.
    pub fn new<F>(name: impl Into<String>, event_types: &[&str], call: F) -> Self
    where
        F: for<'a> Fn(&'a RecordedEvent) -> BoxFuture<'a, Result<(), BoxError>>
            + Send
            + Sync
            + 'static,
    {
        HandlerSpec {
            name: name.into(),
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            priority: 0,
            retry: RetryPolicy::DEFAULT,
            timeout: None,
            call: Arc::new(call),
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the timeout of one attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn from_descriptor(descriptor: &'static HandlerDescriptor) -> Self {
        let call = descriptor.call;
        HandlerSpec {
            name: descriptor.name.to_owned(),
            event_types: descriptor
                .event_types
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            priority: descriptor.priority,
            retry: descriptor.retry,
            timeout: descriptor.timeout,
            call: Arc::new(move |event| call(event)),
        }
    }
}

/// Counters of one handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// The handler.
    pub name: String,
    /// Events it handled.
    pub succeeded: u64,
    /// Attempts that failed (errors, timeouts and panics).
    pub failed_attempts: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Attempts that panicked.
    pub panics: u64,
    /// Events given up on and dead-lettered.
    pub dead_lettered: u64,
    /// Events skipped (dead-lettered) because its circuit was open.
    pub rejected_by_circuit: u64,
    /// Whether its circuit is open now.
    pub circuit_open: bool,
    /// Total time spent in it.
    pub busy: Duration,
}

/// Per-handler circuit state.
#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

/// What dispatching one event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Handlers that succeeded, in the order they ran.
    pub succeeded: Vec<String>,
    /// Handlers whose event was dead-lettered.
    pub dead_lettered: Vec<String>,
}

/// Runs handlers; see the module docs.
///
/// ```
/// use annals::subscription::handler_registry::{HandlerRegistry, HandlerSpec};
/// use annals::prelude::*;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals::Result<()> {
/// let store = Arc::new(InMemoryEventStore::new());
/// let registry = HandlerRegistry::new(store.clone()).with(HandlerSpec::new("audit", &["iam.user.registered"], |event| {
///     Box::pin(async move {
///         println!("audit: {}", event.stream_id);
///         Ok(())
///     })
/// }));
/// let stream = StreamId::new("user-1")?;
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::json("iam.user.registered", &1)?]).await?;
/// let event = &store.read_stream(&stream, 1, 1).await?[0];
/// let report = registry.dispatch(event).await?;
/// assert_eq!(report.succeeded, ["audit"]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HandlerRegistry {
    store: Arc<dyn EventStore>,
    handlers: Vec<HandlerSpec>,
    failure_threshold: u32,
    cool_down: Duration,
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
    stats: Arc<Mutex<HashMap<String, HandlerStats>>>,
}

impl std::fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRegistry")
            .field("handlers", &self.handlers)
            .field("failure_threshold", &self.failure_threshold)
            .field("cool_down", &self.cool_down)
            .finish()
    }
}

impl HandlerRegistry {
    /// An empty registry keeping dead letters in `store`; circuits open after
    /// 5 consecutive failed events and half-open after 30 s.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        HandlerRegistry {
            store,
            handlers: Vec::new(),
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
            breakers: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// A registry of every `#[handler]` linked into the program.
    pub fn from_inventory(store: Arc<dyn EventStore>) -> Self {
        registry::handlers().fold(HandlerRegistry::new(store), |registry, descriptor| {
            registry.with(HandlerSpec::from_descriptor(descriptor))
        })
    }

    /// Adds a handler (at run time).
    pub fn with(mut self, handler: HandlerSpec) -> Self {
        self.handlers.push(handler);
        self.handlers.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        self
    }

    /// Opens a handler's circuit after this many consecutive failed events.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// How long an open circuit waits before letting one event through.
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// The handlers, in the order they run.
    pub fn handlers(&self) -> &[HandlerSpec] {
        &self.handlers
    }

    /// Per-handler statistics.
    pub fn stats(&self) -> Vec<HandlerStats> {
        let open: Vec<String> = self
            .breakers
            .lock()
            .map(|breakers| {
                breakers
                    .iter()
                    .filter(|(_, b)| b.open_until.is_some_and(|until| until > Instant::now()))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let stats = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        self.handlers
            .iter()
            .map(|handler| {
                let mut entry = stats.get(&handler.name).cloned().unwrap_or_default();
                entry.name.clone_from(&handler.name);
                entry.circuit_open = open.contains(&handler.name);
                entry
            })
            .collect()
    }

    fn record(&self, name: &str, change: impl FnOnce(&mut HandlerStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            change(stats.entry(name.to_owned()).or_default());
        }
    }

    /// Whether the handler's circuit lets an event through now.
    fn circuit_allows(&self, name: &str) -> bool {
        let Ok(breakers) = self.breakers.lock() else {
            return true;
        };
        breakers
            .get(name)
            .and_then(|breaker| breaker.open_until)
            .is_none_or(|until| Instant::now() >= until)
    }

    fn circuit_result(&self, name: &str, success: bool) {
        let Ok(mut breakers) = self.breakers.lock() else {
            return;
        };
        let breaker = breakers.entry(name.to_owned()).or_default();
        if success {
            *breaker = Breaker::default();
        } else {
            breaker.consecutive_failures += 1;
            if breaker.consecutive_failures >= self.failure_threshold {
                breaker.open_until = Some(Instant::now() + self.cool_down);
                tracing::warn!(
                    handler = name,
                    failures = breaker.consecutive_failures,
                    "circuit opened"
                );
            }
        }
    }

    /// Runs every handler of the event's type, highest priority first. An
    /// event a handler still fails on is dead-lettered; the others still run.
    #[tracing::instrument(name = "annals.handler.dispatch", skip_all, fields(event_type = %event.event_type, stream = %event.stream_id, version = event.version))]
    pub async fn dispatch(&self, event: &RecordedEvent) -> Result<DispatchReport> {
        let mut report = DispatchReport::default();
        for handler in self
            .handlers
            .iter()
            .filter(|h| h.event_types.contains(&event.event_type))
        {
            if !self.circuit_allows(&handler.name) {
                self.record(&handler.name, |s| s.rejected_by_circuit += 1);
                self.dead_letter(handler, event, "the handler's circuit is open", 0)
                    .await?;
                report.dead_lettered.push(handler.name.clone());
                continue;
            }
            match self.run_with_retries(handler, event).await {
                Ok(()) => {
                    self.circuit_result(&handler.name, true);
                    self.record(&handler.name, |s| s.succeeded += 1);
                    report.succeeded.push(handler.name.clone());
                }
                Err((error, attempts)) => {
                    self.circuit_result(&handler.name, false);
                    self.dead_letter(handler, event, &error, attempts).await?;
                    report.dead_lettered.push(handler.name.clone());
                }
            }
        }
        Ok(report)
    }

    /// One attempt: the call under the timeout, panics caught.
    async fn attempt(&self, handler: &HandlerSpec, event: &RecordedEvent) -> Result<(), String> {
        let started = Instant::now();
        let call = AssertUnwindSafe((handler.call)(event)).catch_unwind();
        // Err(()) means the attempt timed out.
        let outcome = match handler.timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| ()),
            None => Ok(call.await),
        };
        let elapsed = started.elapsed();
        self.record(&handler.name, |s| s.busy += elapsed);
        match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(error.to_string()),
            Ok(Err(panic)) => {
                self.record(&handler.name, |s| s.panics += 1);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".to_owned());
                Err(format!("the handler panicked: {message}"))
            }
            Err(()) => {
                self.record(&handler.name, |s| s.timeouts += 1);
                Err(format!(
                    "the handler took longer than {:?}",
                    handler.timeout.unwrap_or_default()
                ))
            }
        }
    }

    async fn run_with_retries(
        &self,
        handler: &HandlerSpec,
        event: &RecordedEvent,
    ) -> Result<(), (String, u32)> {
        let attempts = handler.retry.attempts.max(1);
        let mut delay = handler.retry.backoff;
        for attempt in 1..=attempts {
            match self.attempt(handler, event).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    self.record(&handler.name, |s| s.failed_attempts += 1);
                    crate::observability::telemetry::handler_failed(&handler.name);
                    tracing::warn!(handler = %handler.name, attempt, %error, event = %event.event_id, "handler failed");
                    if attempt == attempts {
                        return Err((error, attempts));
                    }
                    // Exponential backoff with ±50 % jitter.
                    let jittered = delay.mul_f64(0.5 + fastrand::f64());
                    tokio::time::sleep(jittered).await;
                    delay = delay.saturating_mul(2);
                }
            }
        }
        Err(("no attempt was made".to_owned(), 0))
    }

    async fn dead_letter(
        &self,
        handler: &HandlerSpec,
        event: &RecordedEvent,
        error: &str,
        attempts: u32,
    ) -> Result<()> {
        self.record(&handler.name, |s| s.dead_lettered += 1);
        crate::observability::telemetry::dead_lettered(&handler.name);
        self.store
            .dead_letters()
            .save(DeadLetter {
                id: Uuid::now_v7(),
                handler: handler.name.clone(),
                event_id: event.event_id,
                stream_id: event.stream_id.clone(),
                version: event.version,
                event_type: event.event_type.clone(),
                error: error.to_owned(),
                attempts,
                failed_at: Utc::now().trunc_subsecs(6),
                retry_requested_at: None,
            })
            .await
    }

    /// Dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.store.dead_letters().list(limit).await
    }

    /// Runs the dead letters an operator asked to retry
    /// ([`DeadLetterStore::request_retry`](crate::subscription::dead_letter::DeadLetterStore::request_retry),
    /// `annals dead-letters retry`) whose handler this registry has, up to
    /// `limit`, longest waiting first: each gets one round of its retries
    /// (ignoring the circuit). A success deletes the dead letter; a failure
    /// keeps it with the new error and clears the request. Letters of
    /// handlers this registry lacks wait for the registry that has them.
    ///
    /// A registry running as a [`Subscription`](crate::subscription::Subscription)'s
    /// sink does this whenever the subscription is caught up, so requests
    /// are served within its poll interval by whichever instance holds the
    /// subscription's lease.
    pub async fn run_requested_retries(&self, limit: usize) -> Result<RequestedRetries> {
        let mut outcome = RequestedRetries::default();
        for letter in self.store.dead_letters().retry_requests(limit).await? {
            let Some(handler) = self.handlers.iter().find(|h| h.name == letter.handler) else {
                continue;
            };
            let page = self
                .store
                .query(&EventQuery::new().event_id(letter.event_id).limit(1))
                .await?;
            let Some(event) = page.events.first() else {
                let error = format!("event {} is not in the store", letter.event_id);
                self.store
                    .dead_letters()
                    .retry_failed(letter.id, &error, 0)
                    .await?;
                outcome.failed.push(letter.id);
                continue;
            };
            match self.run_with_retries(handler, event).await {
                Ok(()) => {
                    self.circuit_result(&handler.name, true);
                    self.record(&handler.name, |s| s.succeeded += 1);
                    self.store.dead_letters().delete(letter.id).await?;
                    tracing::info!(handler = %handler.name, dead_letter = %letter.id, "a requested retry succeeded");
                    outcome.succeeded.push(letter.id);
                }
                Err((error, attempts)) => {
                    self.circuit_result(&handler.name, false);
                    self.store
                        .dead_letters()
                        .retry_failed(letter.id, &error, attempts)
                        .await?;
                    outcome.failed.push(letter.id);
                }
            }
        }
        Ok(outcome)
    }

    /// Runs a dead letter's handler on its event again (one round of
    /// retries, ignoring the circuit). On success the dead letter is
    /// deleted and `true` returned; on failure it stays.
    pub async fn retry_dead_letter(&self, letter: &DeadLetter) -> Result<bool> {
        let handler = self
            .handlers
            .iter()
            .find(|h| h.name == letter.handler)
            .ok_or_else(|| {
                Error::invalid(
                    "dead letter",
                    format!("no handler named `{}` is registered", letter.handler),
                )
            })?;
        let page = self
            .store
            .query(&EventQuery::new().event_id(letter.event_id).limit(1))
            .await?;
        let event = page.events.first().ok_or_else(|| {
            Error::invalid(
                "dead letter",
                format!("event {} is not in the store", letter.event_id),
            )
        })?;
        match self.run_with_retries(handler, event).await {
            Ok(()) => {
                self.circuit_result(&handler.name, true);
                self.record(&handler.name, |s| s.succeeded += 1);
                self.store.dead_letters().delete(letter.id).await
            }
            Err(_) => Ok(false),
        }
    }
}

/// What [`HandlerRegistry::run_requested_retries`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestedRetries {
    /// Dead letters whose handler succeeded this time (deleted).
    pub succeeded: Vec<Uuid>,
    /// Dead letters whose handler failed again (kept; request cleared).
    pub failed: Vec<Uuid>,
}

/// How many requested retries a caught-up registry runs at a time.
const REQUESTED_RETRIES_PER_IDLE: usize = 100;

#[async_trait]
impl EventSink for HandlerRegistry {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        // Handler failures become dead letters; only a failure to record
        // one stops delivery (and the event comes again).
        self.dispatch(event).await.map(drop).map_err(BoxError::from)
    }

    async fn idle(&mut self) -> Result<(), BoxError> {
        self.run_requested_retries(REQUESTED_RETRIES_PER_IDLE)
            .await
            .map(drop)
            .map_err(BoxError::from)
    }
}
