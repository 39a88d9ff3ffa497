#![allow(dead_code, unused_variables)]

use annals::Apply;

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[annals::event(name = "iam.user.deactivated")]
struct UserDeactivated;

#[annals::aggregate(name = "user", events(UserRegistered, UserDeactivated))]
#[derive(Default)]
struct User {
    email: String,
}

impl Apply<UserRegistered> for User {
    fn apply(&mut self, event: &UserRegistered) {
        self.email = event.email.clone();
    }
}

fn main() {}
