#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered", version = 2, upcast(from = 1))]
struct UserRegistered {
    email: String,
}

fn main() {}
