//! Metadata stored with every event: who did it, for which tenant, as part of
//! which request, caused by what.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Context recorded with an event. Every field is optional; each of them can
/// be queried (see [`EventQuery`](crate::store::EventQuery)).
///
/// ```
/// use annals::Metadata;
/// use uuid::Uuid;
///
/// let request = Uuid::now_v7();
/// let metadata = Metadata::new()
///     .with_tenant("acme")
///     .with_actor("admin@acme.test")
///     .with_correlation_id(request)
///     .with_header("client", "web");
/// assert_eq!(metadata.tenant_id.as_deref(), Some("acme"));
/// assert_eq!(metadata.headers["client"], "web");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// Ties together every event written while serving one request or process.
    pub correlation_id: Option<Uuid>,
    /// The event or command that caused this one.
    pub causation_id: Option<Uuid>,
    /// Who did it: a user id, a service name.
    pub actor: Option<String>,
    /// The tenant the event belongs to.
    pub tenant_id: Option<String>,
    /// A W3C `traceparent` (or similar) linking the event to a distributed trace.
    pub trace_context: Option<String>,
    /// Free-form string key/values.
    pub headers: BTreeMap<String, String>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Metadata::default()
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the actor.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Sets the tenant.
    pub fn with_tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// Sets the trace context.
    pub fn with_trace_context(mut self, trace_context: impl Into<String>) -> Self {
        self.trace_context = Some(trace_context.into());
        self
    }

    /// Adds a free-form header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Names the command these events come from (an HTTP
    /// `Idempotency-Key`, say), in the [`COMMAND_ID_HEADER`] header: a
    /// [`Repository::execute`](crate::Repository::execute) given it again
    /// (a retry after an ambiguous failure) returns the first outcome
    /// instead of deciding again.
    ///
    /// ```
    /// use annals::Metadata;
    ///
    /// let metadata = Metadata::new().with_command_id("req-42");
    /// assert_eq!(metadata.command_id(), Some("req-42"));
    /// ```
    pub fn with_command_id(self, command_id: impl Into<String>) -> Self {
        self.with_header(COMMAND_ID_HEADER, command_id)
    }

    /// The command id, if [`with_command_id`](Self::with_command_id) set one.
    pub fn command_id(&self) -> Option<&str> {
        self.headers.get(COMMAND_ID_HEADER).map(String::as_str)
    }
}

/// The header holding a command id (see [`Metadata::with_command_id`]).
pub const COMMAND_ID_HEADER: &str = "command-id";

/// Serialises the free-form headers as stored (and hashed) by every backend.
pub(crate) fn headers_json(headers: &BTreeMap<String, String>) -> String {
    // A map of strings always serialises.
    serde_json::to_string(headers).unwrap_or_else(|_| "{}".to_owned())
}
