#![allow(dead_code, unused_variables)]

// One mistake, one error: an aggregate whose options fail still implements
// `Aggregate` (with a placeholder event type), so code that uses it does not
// add "annotate the type with `#[aggregate]`" on top.

use annals::prelude::*;

#[annals::aggregate(name = "user")]
#[derive(Default)]
struct User {
    email: String,
}

fn stream_of(id: &str) -> annals::Result<StreamId> {
    User::stream_id(&id)
}

async fn load(users: Repository<User>) {
    let _ = users.load("ada").await;
}

fn main() {}
