#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.tenant.created")]
struct TenantCreated {
    name: String,
}

#[annals::event(name = "iam.tenant.renamed")]
struct TenantRenamed {
    name: String,
}

struct Directory;

#[annals::projection(name = "directory")]
impl Directory {
    fn created(&mut self, event: &TenantCreated, db: &mut Vec<String>) {
        db.push(event.name.clone());
    }

    fn renamed(&mut self, event: &TenantRenamed, db: &mut String) {
        db.push_str(&event.name);
    }
}

fn main() {}
