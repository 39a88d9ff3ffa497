#![allow(dead_code, unused_variables)]

#[annals::event(name)]
struct UserRegistered {
    email: String,
}

fn main() {}
