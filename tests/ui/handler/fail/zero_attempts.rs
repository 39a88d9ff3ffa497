#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[annals::handler(retry(attempts = 0))]
async fn welcome(event: &UserRegistered) {}

fn main() {}
