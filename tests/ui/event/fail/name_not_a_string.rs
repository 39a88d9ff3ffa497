#![allow(dead_code, unused_variables)]

#[annals::event(name = iam_user_registered)]
struct UserRegistered {
    email: String,
}

fn main() {}
