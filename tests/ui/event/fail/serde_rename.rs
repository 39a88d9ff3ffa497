#![allow(dead_code, unused_variables)]

#[annals::event]
enum UserEvent {
    #[serde(rename = "registered")]
    #[event(name = "iam.user.registered")]
    Registered { email: String },
}

fn main() {}
