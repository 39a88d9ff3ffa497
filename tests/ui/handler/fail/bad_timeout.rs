#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[annals::handler(timeout = "5 seconds")]
async fn welcome(event: &UserRegistered) {}

fn main() {}
