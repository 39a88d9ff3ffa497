//! Reading older schema versions of an event: JSON-to-JSON steps and typed
//! conversions declared with `#[event(upcast(...))]`, applied on every read.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::event::DecodeError;
use crate::event::payload::Payload;

/// One declared upcast of an event type.
#[derive(Debug, Clone, Copy)]
pub enum Upcaster<T> {
    /// Turns a payload of version `from` into one of version `from + 1`.
    Json {
        /// The version this step reads.
        from: u32,
        /// The step.
        step: fn(Value) -> Result<Value, String>,
    },
    /// Decodes a payload of version `from` as an old Rust type and converts
    /// it straight to the current event.
    Typed {
        /// The version this conversion reads.
        from: u32,
        /// The conversion.
        convert: fn(Value) -> Result<T, DecodeError>,
    },
}

/// Decodes a stored payload of `stored` version into the current version
/// `current`, applying upcasters step by step. `finish` decodes a payload of
/// the current version.
///
/// ```
/// use annals::event::upcast::{decode_versioned, Upcaster};
/// use annals::Payload;
/// use serde_json::{json, Value};
///
/// #[derive(Debug, PartialEq, serde::Deserialize)]
/// struct Renamed { display_name: String }
///
/// fn v1_to_v2(mut v: Value) -> Result<Value, String> {
///     let name = v["name"].take();
///     Ok(json!({ "display_name": name }))
/// }
///
/// let old = Payload::from_serialize(&json!({ "name": "Ada" }))?;
/// let upcasters = [Upcaster::Json { from: 1, step: v1_to_v2 }];
/// let event: Renamed = decode_versioned(&old, 1, 2, &upcasters, |v| serde_json::from_value(v))?;
/// assert_eq!(event, Renamed { display_name: "Ada".into() });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_versioned<T>(
    payload: &Payload,
    stored: u32,
    current: u32,
    upcasters: &[Upcaster<T>],
    finish: fn(Value) -> Result<T, serde_json::Error>,
) -> Result<T, DecodeError> {
    if stored > current {
        return Err(DecodeError::UnsupportedVersion {
            found: stored,
            supported: current,
        });
    }
    let mut value: Value = payload.decode()?;
    let mut version = stored;
    while version < current {
        let step = upcasters.iter().find(|upcaster| match upcaster {
            Upcaster::Json { from, .. } | Upcaster::Typed { from, .. } => *from == version,
        });
        match step {
            Some(Upcaster::Typed { convert, .. }) => return convert(value),
            Some(Upcaster::Json { step, .. }) => {
                value = step(value).map_err(|reason| DecodeError::Upcast {
                    from: version,
                    reason,
                })?;
                version += 1;
            }
            None => {
                return Err(DecodeError::UnsupportedVersion {
                    found: stored,
                    supported: current,
                });
            }
        }
    }
    Ok(finish(value)?)
}

/// Decodes a payload as `T` (used by typed upcasters for the old type).
pub fn decode_old<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    Ok(serde_json::from_value(value)?)
}

/// What a JSON upcast function may return: the new payload, or a `Result`
/// of it whose error explains why the old payload cannot be upcast.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not what a JSON upcast returns",
    label = "the upcast function returns `{Self}`",
    note = "a `json = ...` upcast is `fn(serde_json::Value) -> serde_json::Value` (or `-> Result<serde_json::Value, E>`); for an old Rust type use `typed = ...`"
)]
pub trait IntoUpcastResult {
    /// Normalises to a `Result`.
    fn into_upcast_result(self) -> Result<Value, String>;
}

impl IntoUpcastResult for Value {
    fn into_upcast_result(self) -> Result<Value, String> {
        Ok(self)
    }
}

impl<E: std::fmt::Display> IntoUpcastResult for Result<Value, E> {
    fn into_upcast_result(self) -> Result<Value, String> {
        self.map_err(|error| error.to_string())
    }
}
