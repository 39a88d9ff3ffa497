#![allow(dead_code)]

#[annals::event(name = "iam.user.registered")]
#[serde(rename_all = "camelCase")]
struct UserRegistered {
    user_id: String,
    #[pii(subject = user_id)]
    email_address: String,
}

fn main() {}
