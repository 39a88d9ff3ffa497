#![allow(dead_code, unused_variables)]

struct TenantCreated {
    name: String,
}

struct Directory;

#[annals::projection(name = "directory")]
impl Directory {
    fn created(&mut self, event: &TenantCreated) {}
}

fn main() {}
