//! [`Redact`]: the value a personal-data field reads as once its data
//! subject is forgotten.

/// The value a `#[pii]` field's type reads as after its subject is
/// forgotten. Implemented for strings (`"[redacted]"`), options (`None`),
/// numbers (0), `bool` (`false`) and vectors (empty); implement it for your
/// own field types.
///
/// ```
/// use annals::pii::Redact;
///
/// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Debug, Clone, PartialEq)]
/// #[schemars(crate = "annals::schemars")]
/// struct PostalAddress { street: String, city: String }
///
/// impl Redact for PostalAddress {
///     fn redacted() -> Self {
///         PostalAddress { street: String::redacted(), city: String::redacted() }
///     }
/// }
///
/// assert_eq!(String::redacted(), "[redacted]");
/// assert_eq!(Option::<u32>::redacted(), None);
/// assert_eq!(PostalAddress::redacted().city, "[redacted]");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no redacted value, so it cannot be a `#[pii]` field",
    label = "this `#[pii]` field's type needs `annals::pii::Redact`",
    note = "implement `annals::pii::Redact` for `{Self}`: `fn redacted() -> Self` gives the value the field reads as once its subject is forgotten"
)]
pub trait Redact: Sized {
    /// The stand-in value.
    fn redacted() -> Self;
}

/// What a redacted string reads as.
pub const REDACTED_TEXT: &str = "[redacted]";

impl Redact for String {
    fn redacted() -> Self {
        REDACTED_TEXT.to_owned()
    }
}

impl<T> Redact for Option<T> {
    fn redacted() -> Self {
        None
    }
}

impl<T> Redact for Vec<T> {
    fn redacted() -> Self {
        Vec::new()
    }
}

impl Redact for bool {
    fn redacted() -> Self {
        false
    }
}

macro_rules! redact_to_zero {
    ($($number:ty => $zero:expr),* $(,)?) => {
        $(impl Redact for $number {
            fn redacted() -> Self {
                $zero
            }
        })*
    };
}

redact_to_zero!(
    u8 => 0, u16 => 0, u32 => 0, u64 => 0, u128 => 0, usize => 0,
    i8 => 0, i16 => 0, i32 => 0, i64 => 0, i128 => 0, isize => 0,
    f32 => 0.0, f64 => 0.0,
);
