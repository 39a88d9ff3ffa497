#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[annals::handler(priority = 9999999999)]
async fn welcome(event: &UserRegistered) {}

fn main() {}
