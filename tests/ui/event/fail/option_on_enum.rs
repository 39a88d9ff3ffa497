#![allow(dead_code, unused_variables)]

#[annals::event(version = 2)]
enum UserEvent {
    #[event(name = "iam.user.registered")]
    Registered { email: String },
}

fn main() {}
