#![allow(dead_code)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    user_id: String,
    #[pii(subject = self::user_id)]
    email: String,
}

fn main() {}
