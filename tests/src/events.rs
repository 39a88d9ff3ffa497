//! A typed event enum implementing [`annals::Event`] by hand, the way the
//! `#[event]` macro will generate it.

use annals::{DecodeError, Event, Payload};
use serde::{Deserialize, Serialize};

/// Events of a test user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserEvent {
    /// `test.user.registered`
    Registered {
        /// The user's email.
        email: String,
    },
    /// `test.user.renamed`
    Renamed {
        /// The new display name.
        name: String,
    },
}

#[derive(Deserialize)]
struct Registered {
    email: String,
}

#[derive(Deserialize)]
struct Renamed {
    name: String,
}

impl Event for UserEvent {
    const EVENT_TYPES: &'static [&'static str] = &["test.user.registered", "test.user.renamed"];

    fn event_type(&self) -> &'static str {
        match self {
            UserEvent::Registered { .. } => "test.user.registered",
            UserEvent::Renamed { .. } => "test.user.renamed",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn to_payload(&self) -> Result<Payload, serde_json::Error> {
        Payload::from_serialize(self)
    }

    fn from_payload(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> Result<Self, DecodeError> {
        if schema_version > 1 {
            return Err(DecodeError::UnsupportedVersion {
                found: schema_version,
                supported: 1,
            });
        }
        match event_type {
            "test.user.registered" => {
                let Registered { email } = payload.decode()?;
                Ok(UserEvent::Registered { email })
            }
            "test.user.renamed" => {
                let Renamed { name } = payload.decode()?;
                Ok(UserEvent::Renamed { name })
            }
            _ => Err(DecodeError::UnknownType),
        }
    }
}
