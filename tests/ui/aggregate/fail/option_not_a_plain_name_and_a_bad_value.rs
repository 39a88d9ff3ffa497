#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[annals::aggregate(name = "user", annals::events(&UserRegistered))]
#[derive(Default)]
struct User {
    email: String,
}

impl annals::Apply<UserRegistered> for User {
    fn apply(&mut self, event: &UserRegistered) {
        self.email = event.email.clone();
    }
}

fn main() {}
