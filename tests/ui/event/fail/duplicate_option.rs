#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered", name = "iam.user.created")]
struct UserRegistered {
    email: String,
}

fn main() {}
