#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered", version = 2, upcast(from = 2, json = from_v2))]
struct UserRegistered {
    email: String,
}

fn from_v2(value: serde_json::Value) -> serde_json::Value {
    value
}

fn main() {}
