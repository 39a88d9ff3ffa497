#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered", version = 0)]
struct UserRegistered {
    email: String,
}

fn main() {}
