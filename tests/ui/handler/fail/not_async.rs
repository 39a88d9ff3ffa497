#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[annals::handler]
fn welcome(event: &UserRegistered) {}

fn main() {}
