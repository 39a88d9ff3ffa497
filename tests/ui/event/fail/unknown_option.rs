#![allow(dead_code, unused_variables)]

#[annals::event(nmae = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

fn main() {}
