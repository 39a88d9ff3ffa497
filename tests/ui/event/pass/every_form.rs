//! Every supported `#[event]` form: named, tuple and unit structs; enums with
//! named, tuple and unit variants; default and explicit names; versions;
//! JSON and typed upcasts; a type that already derives some traits.

use annals::Event;

#[annals::event(name = "iam.user.registered", version = 3, upcast(from = 1, json = v1_to_v2), upcast(from = 2, typed = from_v2))]
pub struct UserRegistered {
    pub email: String,
    #[serde(default)]
    pub display_name: String,
}

fn v1_to_v2(v1: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "mail": v1["email"] })
}

#[derive(serde::Deserialize)]
pub struct RegisteredV2 {
    mail: String,
}

fn from_v2(old: RegisteredV2) -> UserRegistered {
    UserRegistered { email: old.mail, display_name: String::new() }
}

#[annals::event]
#[derive(Debug, Clone)]
pub struct Pinged(u64, String);

#[annals::event(name = "iam.tenant.suspended")]
pub struct TenantSuspended;

#[annals::event]
pub enum RoleEvent {
    #[event(name = "iam.role.defined")]
    Defined { name: String, permissions: Vec<String> },
    #[event(name = "iam.role.renamed", version = 2, upcast(from = 1, json = renamed_v1))]
    Renamed(String),
    Retired,
}

fn renamed_v1(v1: serde_json::Value) -> Result<serde_json::Value, String> {
    v1.get("name").cloned().ok_or_else(|| "no name".to_owned())
}

fn main() {
    assert_eq!(UserRegistered::EVENT_TYPES, ["iam.user.registered"]);
    assert_eq!(Pinged::EVENT_TYPES, ["Pinged"]);
    assert_eq!(TenantSuspended.event_type(), "iam.tenant.suspended");
    assert_eq!(RoleEvent::EVENT_TYPES, ["iam.role.defined", "iam.role.renamed", "RoleEvent.Retired"]);
    assert_eq!(RoleEvent::Renamed("x".into()).schema_version(), 2);
    let _ = Pinged(1, "x".into()).clone();
}
