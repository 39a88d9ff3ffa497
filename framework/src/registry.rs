//! What the macros registered: every event type, aggregate, projection and
//! handler linked into the program, found through `inventory` with no wiring.
//!
//! The runtime, `annals-codegen` and `cargo xtask schema` all read these same
//! descriptors.
//!
//! ```
//! #[annals::event(name = "doc.tenant.created", version = 2, upcast(from = 1, json = from_v1))]
//! struct TenantCreated { name: String }
//!
//! fn from_v1(v1: serde_json::Value) -> serde_json::Value {
//!     serde_json::json!({ "name": v1["title"] })
//! }
//!
//! let descriptor = annals::registry::event("doc.tenant.created").expect("registered");
//! assert_eq!(descriptor.version, 2);
//! assert_eq!(descriptor.upcasts_from, &[1]);
//! assert!(descriptor.rust_type.ends_with("::TenantCreated"));
//! annals::registry::validate()?;
//! # Ok::<(), annals::Error>(())
//! ```

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::subscription::handler::{HandlerFn, RetryPolicy};

/// One event type name at one schema version, as `#[event]` registered it.
#[derive(Debug)]
pub struct EventDescriptor {
    /// The stable wire name.
    pub name: &'static str,
    /// The schema version this build writes.
    pub version: u32,
    /// The Rust type (and variant) that carries it, for messages.
    pub rust_type: &'static str,
    /// Older versions it can read through an upcast.
    pub upcasts_from: &'static [u32],
    /// The JSON Schema (draft 2020-12) of the payload this version writes,
    /// derived from the Rust type by `schemars`; doc comments become
    /// descriptions.
    pub json_schema: fn() -> serde_json::Value,
    /// The fields marked `#[pii(subject = ...)]`, which
    /// [`PiiEventStore`](crate::pii::PiiEventStore) encrypts per data subject.
    pub pii: &'static [PiiField],
}

/// A field of an event marked `#[pii(subject = ...)]`: personal data of a
/// data subject, encrypted under that subject's key and redacted once the
/// subject is forgotten (see [`crate::pii`]).
///
/// ```
/// #[annals::event(name = "doc.pii.registered")]
/// struct Registered {
///     user_id: String,
///     #[pii(subject = user_id)]
///     #[serde(rename = "mail")]
///     email: String,
/// }
///
/// let descriptor = annals::registry::event("doc.pii.registered").expect("registered");
/// let field = &descriptor.pii[0];
/// assert_eq!((field.field, field.subject), ("mail", "user_id"));
/// assert_eq!((field.redacted)(), serde_json::json!("[redacted]"));
/// ```
#[derive(Debug)]
pub struct PiiField {
    /// The field's JSON key in the payload.
    pub field: &'static str,
    /// The JSON key of the field that identifies the data subject.
    pub subject: &'static str,
    /// The value the field reads as once its subject is forgotten: the
    /// field type's [`Redact`](crate::pii::Redact) value.
    pub redacted: fn() -> serde_json::Value,
}

/// An aggregate, as `#[aggregate]` registered it.
#[derive(Debug)]
pub struct AggregateDescriptor {
    /// The aggregate type name (its stream category).
    pub name: &'static str,
    /// The Rust type of its state.
    pub rust_type: &'static str,
    /// The event type names it accepts.
    pub event_types: fn() -> Vec<&'static str>,
    /// The shape version of its snapshots.
    pub snapshot_version: u32,
    /// Snapshot every this many events, if set.
    pub snapshot_every: Option<u64>,
}

/// A projection, as `#[projection]` registered it.
#[derive(Debug)]
pub struct ProjectionDescriptor {
    /// Its stable name.
    pub name: &'static str,
    /// Its version.
    pub version: u32,
    /// The Rust type of the read model.
    pub rust_type: &'static str,
    /// The event type names it handles.
    pub event_types: fn() -> Vec<&'static str>,
    /// The SQL read-model tables it declares with `table(...)`, for which
    /// `annals-codegen` writes DDL.
    pub tables: &'static [ReadModelTable],
}

/// A SQL read-model table a projection declares.
#[derive(Debug)]
pub struct ReadModelTable {
    /// The table name.
    pub name: &'static str,
    /// Its columns, in order.
    pub columns: &'static [ReadModelColumn],
    /// The primary-key columns (read models are upserted by key).
    pub primary_key: &'static [&'static str],
    /// Secondary indexes, each a list of columns.
    pub indexes: &'static [&'static [&'static str]],
}

/// One column of a [`ReadModelTable`].
#[derive(Debug)]
pub struct ReadModelColumn {
    /// The column name.
    pub name: &'static str,
    /// Its portable type.
    pub column_type: ColumnType,
    /// Whether it may hold NULL.
    pub nullable: bool,
}

/// The portable column types of read-model tables, with their SQL type per
/// backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `"text"`: PostgreSQL `text`, SQLite `TEXT`.
    Text,
    /// `"integer"` (64-bit): PostgreSQL `bigint`, SQLite `INTEGER`.
    Integer,
    /// `"real"` (64-bit float): PostgreSQL `double precision`, SQLite `REAL`.
    Real,
    /// `"boolean"`: PostgreSQL `boolean`, SQLite `INTEGER` (0 or 1).
    Boolean,
    /// `"uuid"`: PostgreSQL `uuid`, SQLite `TEXT`.
    Uuid,
    /// `"timestamp"`: PostgreSQL `timestamptz`, SQLite `TEXT` (RFC 3339).
    Timestamp,
    /// `"json"`: PostgreSQL `jsonb`, SQLite `TEXT`.
    Json,
    /// `"bytes"`: PostgreSQL `bytea`, SQLite `BLOB`.
    Bytes,
}

/// A handler, as `#[handler]` registered it.
#[derive(Debug)]
pub struct HandlerDescriptor {
    /// Its stable name (by default the function's module path and name).
    pub name: &'static str,
    /// The Rust function.
    pub rust_path: &'static str,
    /// The event type names it reacts to.
    pub event_types: &'static [&'static str],
    /// Higher runs first among the handlers of one event (default 0).
    pub priority: i32,
    /// Retry policy on failure.
    pub retry: RetryPolicy,
    /// Longest a single attempt may take, if limited.
    pub timeout: Option<Duration>,
    /// Calls the handler with a stored event.
    pub call: HandlerFn,
}

inventory::collect!(EventDescriptor);
inventory::collect!(AggregateDescriptor);
inventory::collect!(ProjectionDescriptor);
inventory::collect!(HandlerDescriptor);

/// Every registered event type and version.
pub fn events() -> impl Iterator<Item = &'static EventDescriptor> {
    inventory::iter::<EventDescriptor>.into_iter()
}

/// Every registered aggregate.
pub fn aggregates() -> impl Iterator<Item = &'static AggregateDescriptor> {
    inventory::iter::<AggregateDescriptor>.into_iter()
}

/// Every registered projection.
pub fn projections() -> impl Iterator<Item = &'static ProjectionDescriptor> {
    inventory::iter::<ProjectionDescriptor>.into_iter()
}

/// Every registered handler.
pub fn handlers() -> impl Iterator<Item = &'static HandlerDescriptor> {
    inventory::iter::<HandlerDescriptor>.into_iter()
}

/// The handlers of one event type, highest priority first (ties by name).
pub fn handlers_for(event_type: &str) -> Vec<&'static HandlerDescriptor> {
    let mut found: Vec<_> = handlers()
        .filter(|handler| handler.event_types.contains(&event_type))
        .collect();
    found.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(b.name)));
    found
}

/// The event descriptor of a type name (its current version).
pub fn event(name: &str) -> Option<&'static EventDescriptor> {
    events().find(|event| event.name == name)
}

/// The aggregates that accept an event type.
pub fn aggregates_for_event(event_type: &str) -> Vec<&'static AggregateDescriptor> {
    aggregates()
        .filter(|aggregate| (aggregate.event_types)().contains(&event_type))
        .collect()
}

/// Checks that no two Rust items claim the same event name and version, the
/// same projection name and version, or the same aggregate or handler name.
/// Call it at startup; the repository calls it on first use.
pub fn validate() -> Result<()> {
    fn unique<T: 'static>(
        kind: &'static str,
        items: impl Iterator<Item = &'static T>,
        key: impl Fn(&T) -> String,
        owner: impl Fn(&T) -> &'static str,
    ) -> Result<()> {
        let mut seen: HashMap<String, &'static str> = HashMap::new();
        for item in items {
            let (name, rust) = (key(item), owner(item));
            if let Some(first) = seen.insert(name.clone(), rust) {
                let (first, second) = if first <= rust {
                    (first, rust)
                } else {
                    (rust, first)
                };
                return Err(Error::DuplicateRegistration {
                    kind,
                    name,
                    first,
                    second,
                });
            }
        }
        Ok(())
    }
    unique(
        "event",
        events(),
        |e| format!("{} v{}", e.name, e.version),
        |e| e.rust_type,
    )?;
    unique(
        "aggregate",
        aggregates(),
        |a| a.name.to_owned(),
        |a| a.rust_type,
    )?;
    unique(
        "projection",
        projections(),
        // Two versions of one projection may run side by side (blue/green).
        |p| format!("{} v{}", p.name, p.version),
        |p| p.rust_type,
    )?;
    unique(
        "handler",
        handlers(),
        |h| h.name.to_owned(),
        |h| h.rust_path,
    )
}

/// [`validate`], run once per process; later calls repeat the first outcome.
pub(crate) fn validate_once() -> Result<()> {
    type Duplicate = (&'static str, String, &'static str, &'static str);
    static OUTCOME: std::sync::OnceLock<Option<Duplicate>> = std::sync::OnceLock::new();
    let outcome = OUTCOME.get_or_init(|| match validate() {
        Err(Error::DuplicateRegistration {
            kind,
            name,
            first,
            second,
        }) => Some((kind, name, first, second)),
        _ => None,
    });
    match outcome {
        Some((kind, name, first, second)) => Err(Error::DuplicateRegistration {
            kind,
            name: name.clone(),
            first,
            second,
        }),
        None => Ok(()),
    }
}
