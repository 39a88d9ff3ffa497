#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[annals::handler]
async fn welcome(event: &UserRegistered, envelope: &annals::RecordedEvent, extra: u32) {}

fn main() {}
