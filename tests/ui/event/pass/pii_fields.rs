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
    variants_register_their_own_pii_fields();
}

/// On an enum event, each variant's fields name a subject in the same variant.
#[annals::event]
enum AccountEvent {
    #[event(name = "ui.pii.account_opened")]
    Opened {
        account_id: String,
        #[pii(subject = account_id)]
        holder: String,
    },
    #[event(name = "ui.pii.account_closed")]
    Closed,
}

fn variants_register_their_own_pii_fields() {
    let opened = annals::registry::event("ui.pii.account_opened").expect("registered");
    assert_eq!((opened.pii[0].field, opened.pii[0].subject), ("holder", "account_id"));
    let closed = annals::registry::event("ui.pii.account_closed").expect("registered");
    assert!(closed.pii.is_empty());
}
