#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered", version = 2, upcast(json = from_v1))]
struct UserRegistered {
    email: String,
}

fn from_v1(value: serde_json::Value) -> serde_json::Value {
    value
}

fn main() {}
