#![allow(dead_code)]

#[annals::event]
enum UserEvent {
    #[event(name = "iam.user.registered")]
    Registered(#[pii(subject = user_id)] String),
}

fn main() {}
