//! `#[pii]` on struct event fields: renamed keys, numeric subjects, every
//! built-in `Redact` type, and a user type with its own `Redact`.

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, annals::schemars::JsonSchema)]
#[schemars(crate = "annals::schemars")]
struct PostalAddress {
    city: String,
}

impl annals::pii::Redact for PostalAddress {
    fn redacted() -> Self {
        PostalAddress { city: String::new() }
    }
}

#[annals::event(name = "ui.pii.profile")]
struct Profile {
    #[serde(rename = "userId")]
    user_id: u64,
    #[pii(subject = user_id)]
    #[serde(rename = "mail")]
    email: String,
    #[pii(subject = user_id)]
    phone: Option<String>,
    #[pii(subject = user_id)]
    age: u8,
    #[pii(subject = user_id)]
    verified: bool,
    #[pii(subject = user_id)]
    aliases: Vec<String>,
    #[pii(subject = user_id)]
    address: PostalAddress,
}

fn main() {
    let descriptor = annals::registry::event("ui.pii.profile").expect("registered");
    let keys: Vec<(&str, &str)> = descriptor.pii.iter().map(|f| (f.field, f.subject)).collect();
    assert_eq!(keys[0], ("mail", "userId"));
    assert_eq!(keys.len(), 6);
}
