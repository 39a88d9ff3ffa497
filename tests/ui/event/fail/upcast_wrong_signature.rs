#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered", version = 2, upcast(from = 1, json = from_v1))]
struct UserRegistered {
    email: String,
}

fn from_v1(value: String) -> String {
    value
}

fn main() {}
