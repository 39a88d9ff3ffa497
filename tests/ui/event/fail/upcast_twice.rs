#![allow(dead_code, unused_variables)]

#[annals::event(
    name = "iam.user.registered",
    version = 3,
    upcast(from = 1, json = from_v1),
    upcast(from = 1, json = from_v1)
)]
struct UserRegistered {
    email: String,
}

fn from_v1(value: serde_json::Value) -> serde_json::Value {
    value
}

fn main() {}
