#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.user.registered")]
struct UserRegistered<T> {
    email: T,
}

fn main() {}
