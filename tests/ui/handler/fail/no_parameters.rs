#![allow(dead_code, unused_variables)]

#[annals::handler]
async fn welcome() {}

fn main() {}
