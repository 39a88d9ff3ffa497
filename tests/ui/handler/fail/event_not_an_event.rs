#![allow(dead_code, unused_variables)]

struct UserRegistered {
    email: String,
}

#[annals::handler]
async fn welcome(event: &UserRegistered) {}

fn main() {}
