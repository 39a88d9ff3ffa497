#![allow(dead_code, unused_variables)]

#[derive(Default)]
struct Directory;

#[annals::projection(name = "directory")]
impl Directory {}

fn main() {}
