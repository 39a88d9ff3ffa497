#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.tenant.created")]
struct TenantCreated {
    name: String,
}

struct Directory;

#[annals::projection(name = "directory", table(columns(id = "text"), primary_key(id)))]
impl Directory {
    fn created(&mut self, event: &TenantCreated) {}
}

fn main() {}
