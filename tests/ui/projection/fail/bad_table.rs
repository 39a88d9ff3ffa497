#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.tenant.created")]
struct TenantCreated {
    name: String,
}

struct Directory;

#[annals::projection(
    name = "directory",
    table(
        name = "tenant_directory",
        columns(tenant_id = "varchar", name = "text?"),
        primary_key(tenant_id, name),
        index(created_at),
    ),
    table(name = "Bad Name", columns(id = "text")),
)]
impl Directory {
    fn created(&mut self, event: &TenantCreated) {}
}

fn main() {}
