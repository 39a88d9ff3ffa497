#![allow(dead_code, unused_variables)]

#[annals::event(name = "user registered")]
struct UserRegistered {
    email: String,
}

fn main() {}
