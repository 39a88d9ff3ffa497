#![allow(dead_code)]

#[annals::event]
enum UserEvent {
    #[event(name = "iam.user.registered")]
    Registered {
        user_id: String,
        #[pii(subject = user_id)]
        email: String,
    },
}

fn main() {}
