#![allow(dead_code)]

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Address {
    city: String,
}

#[annals::event(name = "iam.user.moved")]
struct UserMoved {
    address: Address,
}

fn main() {}
