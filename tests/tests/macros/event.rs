//! `#[event]`: wire names (given and default), versions, payload shapes of
//! struct, newtype, unit and enum events, upcasting, and errors on read.

use annals::prelude::*;
use annals::{DecodeError, event};
use annals_tests::domain::{TenantCreated, TenantRenamed, TenantSuspended, UserEvent};
use serde_json::json;

/// No options: the wire name is the type's identifier.
#[event]
struct Pinged {
    at: u64,
}

/// No options on an enum: `Enum.Variant`.
#[event]
enum Heartbeat {
    Beat,
    Skipped { reason: String },
}

/// A tuple struct event.
#[event(name = "test.score")]
struct Score(u32, String);

fn round_trip<E: Event + PartialEq + std::fmt::Debug>(event: &E) -> (String, serde_json::Value) {
    let payload = event.to_payload().expect("encode");
    let decoded =
        E::from_payload(event.event_type(), event.schema_version(), &payload).expect("decode");
    assert_eq!(&decoded, event);
    (event.event_type().to_owned(), payload.to_value())
}

#[test]
fn struct_events_use_their_given_or_default_name_and_plain_payloads() {
    assert_eq!(
        round_trip(&TenantCreated {
            name: "Acme".into()
        }),
        ("test.tenant.created".into(), json!({ "name": "Acme" }))
    );
    assert_eq!(
        round_trip(&Pinged { at: 7 }),
        ("Pinged".into(), json!({ "at": 7 }))
    );
    assert_eq!(
        round_trip(&Score(3, "x".into())),
        ("test.score".into(), json!([3, "x"]))
    );
    assert_eq!(
        round_trip(&TenantSuspended),
        ("test.tenant.suspended".into(), json!(null))
    );
    assert_eq!(
        <TenantRenamed as Event>::EVENT_TYPES,
        ["test.tenant.renamed"]
    );
    assert_eq!(
        TenantRenamed {
            name: "n".into(),
            reason: "r".into()
        }
        .schema_version(),
        2
    );
}

#[test]
fn enum_events_store_only_the_variant_content() {
    let cases = [
        (
            UserEvent::Registered {
                email: "a@b.test".into(),
                display_name: "A".into(),
            },
            "test.user.registered",
            json!({ "email": "a@b.test", "display_name": "A" }),
        ),
        (
            UserEvent::RoleAssigned {
                role: "admin".into(),
            },
            "test.user.role_assigned",
            json!({ "role": "admin" }),
        ),
        (
            UserEvent::Renamed("Ada".into()),
            "test.user.renamed",
            json!("Ada"),
        ),
        (UserEvent::Deactivated, "test.user.deactivated", json!(null)),
    ];
    for (event, name, payload) in cases {
        assert_eq!(round_trip(&event), (name.to_owned(), payload));
    }
    assert_eq!(round_trip(&Heartbeat::Beat).0, "Heartbeat.Beat");
    assert_eq!(
        round_trip(&Heartbeat::Skipped { reason: "x".into() }).0,
        "Heartbeat.Skipped"
    );
    assert_eq!(
        <UserEvent as Event>::EVENT_TYPES,
        [
            "test.user.registered",
            "test.user.role_assigned",
            "test.user.renamed",
            "test.user.deactivated"
        ]
    );
}

#[test]
fn json_upcasts_turn_old_payloads_into_current_events() {
    let v1 = Payload::from_serialize(&json!({ "new_name": "Initech" })).expect("payload");
    let event = TenantRenamed::from_payload("test.tenant.renamed", 1, &v1).expect("upcast");
    assert_eq!(
        event,
        TenantRenamed {
            name: "Initech".into(),
            reason: "unspecified".into()
        }
    );

    let broken = Payload::from_serialize(&json!({ "title": "x" })).expect("payload");
    match TenantRenamed::from_payload("test.tenant.renamed", 1, &broken) {
        Err(DecodeError::Upcast { from: 1, reason }) => {
            assert!(reason.contains("new_name"), "{reason}")
        }
        other => panic!("expected an upcast error, got {other:?}"),
    }
}

#[test]
fn typed_upcasts_decode_the_old_shape() {
    let v1 = Payload::from_serialize(&json!({ "email": "old@b.test" })).expect("payload");
    let event = UserEvent::from_payload("test.user.registered", 1, &v1).expect("upcast");
    assert_eq!(
        event,
        UserEvent::Registered {
            email: "old@b.test".into(),
            display_name: "old@b.test".into()
        }
    );
}

#[test]
fn newer_or_unupcastable_versions_and_unknown_names_are_typed_errors() {
    let payload = Payload::from_serialize(&json!({ "name": "x", "reason": "y" })).expect("payload");
    match TenantRenamed::from_payload("test.tenant.renamed", 3, &payload) {
        Err(DecodeError::UnsupportedVersion {
            found: 3,
            supported: 2,
        }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    let role = Payload::from_serialize(&json!({ "role": "x" })).expect("payload");
    match UserEvent::from_payload("test.user.role_assigned", 0, &role) {
        Err(DecodeError::UnsupportedVersion {
            found: 0,
            supported: 1,
        }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert!(matches!(
        UserEvent::from_payload("test.user.exploded", 1, &role),
        Err(DecodeError::UnknownType)
    ));
    assert!(matches!(
        TenantCreated::from_payload("test.tenant.created", 1, &role),
        Err(DecodeError::Payload(_))
    ));
}
