#![allow(dead_code, unused_variables)]

#[annals::event]
enum UserEvent {
    #[event(name = "iam.user.registered")]
    #[event(version = 2)]
    Registered { email: String },
}

fn main() {}
