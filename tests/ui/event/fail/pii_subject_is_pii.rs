#![allow(dead_code)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    #[pii(subject = email)]
    user_id: String,
    #[pii(subject = user_id)]
    email: String,
}

fn main() {}
