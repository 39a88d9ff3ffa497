#![allow(dead_code, unused_variables)]

#[annals::event]
enum UserEvent {
    #[event(name = "iam.user.changed")]
    EmailChanged { email: String },
    #[event(name = "iam.user.changed")]
    Renamed { name: String },
}

fn main() {}
