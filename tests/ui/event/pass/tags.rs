//! Tags from fields: labelled by the field's name or a label of one's own,
//! on a struct and on an enum's variants (a field may give two tags).

use annals::Event;

#[annals::event(name = "iam.user.registered", tags(email, tenant = tenant_id))]
struct UserRegistered {
    email: String,
    tenant_id: u32,
    display_name: String,
}

#[annals::event]
enum RoleEvent {
    #[event(name = "iam.role.granted", tags(role, user = user_id, subject = user_id))]
    Granted { role: String, user_id: u64 },
    #[event(name = "iam.role.revoked")]
    Revoked { role: String },
}

fn main() {
    let registered = UserRegistered {
        email: "ada@example.test".into(),
        tenant_id: 7,
        display_name: "Ada".into(),
    };
    assert_eq!(registered.tags(), ["email:ada@example.test", "tenant:7"]);
    let granted = RoleEvent::Granted { role: "admin".into(), user_id: 42 };
    assert_eq!(granted.tags(), ["role:admin", "user:42", "subject:42"]);
    assert!(RoleEvent::Revoked { role: "admin".into() }.tags().is_empty());
    let new_event = annals::NewEvent::from_event(&registered).expect("encodes");
    assert_eq!(new_event.tags, ["email:ada@example.test", "tenant:7"]);
}
