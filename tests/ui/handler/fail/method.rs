#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

struct Mailer;

impl Mailer {
    #[annals::handler]
    async fn welcome(&self, event: &UserRegistered) {}
}

fn main() {}
