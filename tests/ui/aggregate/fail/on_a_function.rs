#![allow(dead_code, unused_variables)]

#[annals::aggregate(name = "user", events(UserRegistered))]
fn user() {}

fn main() {}
