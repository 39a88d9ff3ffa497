#![allow(dead_code, unused_variables)]

// One mistake, one error: a projection with a malformed handler still
// implements `Projection` (with its well-formed handlers), so code that runs
// it does not add "not a projection" on top.

#[annals::event(name = "iam.tenant.created")]
struct TenantCreated {
    name: String,
}

#[annals::event(name = "iam.tenant.renamed")]
struct TenantRenamed {
    name: String,
}

#[derive(Default)]
struct Directory {
    names: Vec<String>,
}

#[annals::projection(name = "directory")]
impl Directory {
    fn created(&mut self, event: &TenantCreated) {
        self.names.push(event.name.clone());
    }

    fn renamed(&mut self, event: TenantRenamed) {}
}

async fn run(events: Vec<annals::RecordedEvent>) {
    let mut directory = Directory::default();
    let _ = annals::projection::project(&mut directory, &events, &mut ()).await;
}

fn main() {}
