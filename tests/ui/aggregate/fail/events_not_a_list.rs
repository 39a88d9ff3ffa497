#![allow(dead_code, unused_variables)]

#[annals::aggregate(name = "user", events = UserRegistered)]
#[derive(Default)]
struct User {
    email: String,
}

fn main() {}
