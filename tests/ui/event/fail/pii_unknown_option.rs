#![allow(dead_code)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    user_id: String,
    #[pii(owner = user_id)]
    email: String,
}

fn main() {}
