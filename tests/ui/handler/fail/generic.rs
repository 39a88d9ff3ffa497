#![allow(dead_code, unused_variables)]

#[annals::handler]
async fn welcome<E: annals::Event>(event: &E) {}

fn main() {}
