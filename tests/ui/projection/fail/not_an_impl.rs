#![allow(dead_code, unused_variables)]

#[annals::projection(name = "directory")]
struct Directory;

fn main() {}
