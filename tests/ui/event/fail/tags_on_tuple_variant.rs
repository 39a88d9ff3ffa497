#[annals::event]
enum UserEvent {
    #[event(name = "iam.user.registered", tags(email))]
    Registered(String),
}

fn main() {}
