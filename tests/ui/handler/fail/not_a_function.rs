#![allow(dead_code, unused_variables)]

#[annals::handler(priority = 1)]
struct Welcome;

fn main() {}
