#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.tenant.created")]
struct TenantCreated {
    name: String,
}

#[derive(Default)]
struct Directory {
    names: Vec<String>,
}

#[annals::projection(name = "directory")]
impl Directory {
    fn created(&self, event: &TenantCreated) {}
}

fn main() {}
