#![allow(dead_code, unused_variables)]

struct Directory;

#[annals::projection(name = "directory")]
impl Default for Directory {
    fn default() -> Self {
        Directory
    }
}

fn main() {}
