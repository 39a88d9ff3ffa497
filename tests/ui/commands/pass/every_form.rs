//! Command handlers as methods: by value, destructured, each with its own
//! error type; helpers in another impl block.
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

#[derive(Clone)]
struct Double;

#[derive(Clone)]
struct Add(u32);

#[annals::commands]
impl Counter {
    fn increment(&self, command: Increment) -> Result<Vec<Incremented>, OutOfRange> {
        self.check(command.by)?;
        Ok(vec![Incremented { by: command.by }])
    }

    fn double(&self, _: Double) -> Result<Vec<Incremented>, std::convert::Infallible> {
        Ok(vec![Incremented { by: self.total }])
    }

    fn add(&self, Add(by): Add) -> std::result::Result<Vec<Incremented>, OutOfRange> {
        Ok(vec![Incremented { by }])
    }
}

impl Counter {
    fn check(&self, by: u32) -> Result<(), OutOfRange> {
        if (1..=10).contains(&by) { Ok(()) } else { Err(OutOfRange) }
    }
}

fn main() {
    let counter = Counter { total: 4 };
    assert_eq!(counter.handle(&Increment { by: 2 }).map(|events| events.len()).ok(), Some(1));
    assert!(counter.handle(&Increment { by: 20 }).is_err());
    assert_eq!(Handle::<Double>::handle(&counter, &Double).map(|e| e[0].by).ok(), Some(4));
    assert_eq!(Handle::<Add>::handle(&counter, &Add(3)).map(|e| e[0].by).ok(), Some(3));
}
