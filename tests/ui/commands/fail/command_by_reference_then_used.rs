// One mistake, one error: a malformed handler still stands for its command
// (a placeholder Handle impl), so executing the command adds no
// "does not handle the command" on top.

use annals::prelude::*;

#[annals::event(name = "ui.counter.incremented")]
struct Incremented {
    by: u32,
}

#[annals::aggregate(name = "ui_counter", events(Incremented))]
#[derive(Default, Debug)]
struct Counter {
    total: u32,
}

impl Apply<Incremented> for Counter {
    fn apply(&mut self, event: &Incremented) {
        self.total += event.by;
    }
}

#[derive(Clone)]
struct Increment {
    by: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("out of range")]
struct OutOfRange;

#[annals::commands]
impl Counter {
    fn increment(&self, command: &Increment) -> Result<Vec<Incremented>, OutOfRange> {
        Ok(vec![Incremented { by: command.by }])
    }
}

async fn run(counters: Repository<Counter>) {
    let _ = counters
        .execute("c-1", &Increment { by: 1 }, Metadata::new())
        .await;
}

fn main() {}
