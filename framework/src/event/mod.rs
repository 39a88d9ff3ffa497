//! The contract between a Rust event type and the store: a stable wire name,
//! a schema version, and encoding to and from a [`Payload`].

pub mod envelope;
pub mod metadata;
pub mod payload;
pub mod upcast;

pub use envelope::{NewEvent, RecordedEvent};
pub use metadata::Metadata;
pub use payload::Payload;

/// A domain event type that Annals can store and read back.
///
/// `#[event]` implements this for you; a hand-written implementation is
/// possible and looks like this:
///
/// ```
/// use annals::{DecodeError, Event, Payload};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct TenantCreated { name: String }
///
/// impl Event for TenantCreated {
///     const EVENT_TYPES: &'static [&'static str] = &["iam.tenant.created"];
///     fn event_type(&self) -> &'static str { "iam.tenant.created" }
///     fn schema_version(&self) -> u32 { 1 }
///     fn to_payload(&self) -> Result<Payload, serde_json::Error> {
///         Payload::from_serialize(self)
///     }
///     fn from_payload(event_type: &str, _version: u32, payload: &Payload) -> Result<Self, DecodeError> {
///         match event_type {
///             "iam.tenant.created" => Ok(payload.decode()?),
///             _ => Err(DecodeError::UnknownType),
///         }
///     }
/// }
///
/// let event = TenantCreated { name: "Acme".into() };
/// let payload = event.to_payload()?;
/// assert_eq!(TenantCreated::from_payload("iam.tenant.created", 1, &payload)?, event);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an Annals event",
    label = "not an event",
    note = "annotate the type with `#[annals::event]`"
)]
pub trait Event: Sized + Send + Sync + 'static {
    /// Every wire name this type reads and writes (one for a struct, one per
    /// variant for an enum).
    const EVENT_TYPES: &'static [&'static str];

    /// The stable wire name of this value (for an enum: of its variant).
    fn event_type(&self) -> &'static str;

    /// The schema version this build writes.
    fn schema_version(&self) -> u32;

    /// Encodes the value as JSON.
    fn to_payload(&self) -> Result<Payload, serde_json::Error>;

    /// The value's tags, for queries and append conditions (see
    /// [`crate::store::condition`]); `#[event(tags(...))]` derives them
    /// from fields. None by default.
    fn tags(&self) -> Vec<String> {
        Vec::new()
    }

    /// Decodes a stored payload of the given type name and schema version,
    /// upcasting older versions.
    fn from_payload(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> Result<Self, DecodeError>;
}

/// Why [`Event::from_payload`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The type name is not one of this Rust type's events.
    #[error("unknown event type")]
    UnknownType,
    /// The stored schema version is newer than this build, or has no upcast.
    #[error("schema version {found} is not supported (this build reads up to version {supported})")]
    UnsupportedVersion {
        /// Stored version.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// An upcast function refused the old payload.
    #[error("upcasting from schema version {from} failed: {reason}")]
    Upcast {
        /// The version the failing step reads.
        from: u32,
        /// Its explanation.
        reason: String,
    },
    /// The payload does not fit the Rust type.
    #[error(transparent)]
    Payload(#[from] serde_json::Error),
}

impl DecodeError {
    /// The error for a message that may be logged: serde's own message
    /// quotes the payload value it tripped over (`invalid type: string
    /// "ada@example.test", expected u32`), and a payload may hold personal
    /// data, so such values are withheld; the kind of value, what was
    /// expected and where stay. Field and variant names come from the Rust
    /// types and are kept, except an unknown variant's, which is data.
    ///
    /// ```
    /// use annals::event::DecodeError;
    ///
    /// let error: DecodeError = serde_json::from_str::<u32>(r#""ada@example.test""#)
    ///     .unwrap_err()
    ///     .into();
    /// let shown = error.without_values();
    /// assert!(shown.starts_with("invalid type: string, expected u32"), "{shown}");
    /// assert!(!shown.contains("ada@"));
    /// ```
    pub fn without_values(&self) -> String {
        let message = self.to_string();
        let DecodeError::Payload(_) = self else {
            return message;
        };
        for prefix in ["invalid type: ", "invalid value: "] {
            if let Some(rest) = message.strip_prefix(prefix)
                && let Some(expected) = rest.rfind(", expected")
            {
                // `string "…"`, `integer `5``, `map`: keep the kind only.
                let kind = rest[..expected].split(' ').next().unwrap_or_default();
                return format!("{prefix}{kind}{}", &rest[expected..]);
            }
        }
        if let Some(rest) = message.strip_prefix("unknown variant `")
            && let Some(end) = rest.rfind("`, expected")
        {
            return format!("unknown variant (value withheld){}", &rest[end + 1..]);
        }
        message
    }
}
