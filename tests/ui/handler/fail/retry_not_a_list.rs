#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[annals::handler(retry = 3)]
async fn welcome(event: &UserRegistered) {}

fn main() {}
