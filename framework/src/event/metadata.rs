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

    /// Sets the correlation id from a request id of any form (`req-42`, an
    /// HTTP `X-Request-Id`): a UUID is taken as it is; any other text maps
    /// to a fixed UUID of its own ([`correlation_uuid`]), and is kept as
    /// written in the [`CORRELATION_KEY_HEADER`] header.
    /// [`EventQuery::correlation_key`](crate::store::EventQuery::correlation_key)
    /// finds the events by the same text.
    ///
    /// ```
    /// use annals::Metadata;
    /// use annals::event::metadata::correlation_uuid;
    ///
    /// let metadata = Metadata::new().with_correlation_key("req-42");
    /// assert_eq!(metadata.correlation_id, Some(correlation_uuid("req-42")));
    /// assert_eq!(metadata.headers["correlation-key"], "req-42");
    /// ```
    pub fn with_correlation_key(mut self, key: &str) -> Self {
        self.correlation_id = Some(correlation_uuid(key));
        if Uuid::parse_str(key).is_err() {
            self.headers
                .insert(CORRELATION_KEY_HEADER.to_owned(), key.to_owned());
        }
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

/// The header keeping a correlation key that is not a UUID as written (see
/// [`Metadata::with_correlation_key`]).
pub const CORRELATION_KEY_HEADER: &str = "correlation-key";

/// The correlation id of a request id of any form: the UUID itself when it
/// is one, else a name-based UUID (version 5) of the text, the same in every
/// process.
pub fn correlation_uuid(key: &str) -> Uuid {
    /// The namespace of Annals' name-based correlation ids.
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f0e_2a4c_51b3_4f7a_9d2e_8c1b_7a35_d904);
    Uuid::parse_str(key).unwrap_or_else(|_| Uuid::new_v5(&NAMESPACE, key.as_bytes()))
}

/// The header holding a command id (see [`Metadata::with_command_id`]).
pub const COMMAND_ID_HEADER: &str = "command-id";

/// Serialises the free-form headers as stored (and hashed) by every backend.
pub(crate) fn headers_json(headers: &BTreeMap<String, String>) -> String {
    // A map of strings always serialises.
    serde_json::to_string(headers).unwrap_or_else(|_| "{}".to_owned())
}
