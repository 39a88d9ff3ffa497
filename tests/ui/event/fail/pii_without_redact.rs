#![allow(dead_code)]

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, annals::schemars::JsonSchema)]
#[schemars(crate = "annals::schemars")]
struct PostalAddress {
    city: String,
}

#[annals::event(name = "iam.user.moved")]
struct UserMoved {
    user_id: String,
    #[pii(subject = user_id)]
    address: PostalAddress,
}

fn main() {}
