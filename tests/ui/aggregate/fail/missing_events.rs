#![allow(dead_code, unused_variables)]

#[annals::aggregate(name = "user")]
#[derive(Default)]
struct User {
    email: String,
}

fn main() {}
