#![allow(dead_code, unused_variables)]

use annals::Apply;

struct UserRegistered {
    email: String,
}

#[annals::aggregate(name = "user", events(UserRegistered))]
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
