//! What a decision appends (`Appends`): events for an aggregate's instance
//! land on its stream, and a stream id that is no valid one comes back from
//! `Decisions::execute` as a typed store error naming it, with nothing
//! written.

use std::sync::Arc;

use annals::prelude::*;
use annals::store::{Criterion, EventCriteria, LogPosition};

#[annals::event(name = "test.member.joined", tags(email))]
struct Joined {
    email: String,
}

#[annals::aggregate(name = "member", events(Joined))]
#[derive(Default)]
struct Member;

impl Apply<Joined> for Member {
    fn apply(&mut self, _event: &Joined) {}
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

/// Joins the member with the given id (which may be no valid stream id).
struct Join(&'static str);

impl Decision for Join {
    type State = ();
    type Error = Never;

    fn criteria(&self) -> EventCriteria {
        Criterion::tagged(["email:ada@x.test"]).into()
    }

    fn evolve(&self, _state: &mut (), _event: &RecordedEvent) -> annals::Result<()> {
        Ok(())
    }

    fn decide(&self, _state: &()) -> Result<Appends, Never> {
        let joined = Joined {
            email: "ada@x.test".into(),
        };
        Ok(Appends::new().to::<Member>(self.0, [joined]))
    }
}

#[tokio::test]
async fn an_append_that_does_not_encode_is_a_typed_store_error_and_nothing_is_written() {
    let store = Arc::new(InMemoryEventStore::new());
    let decisions = Decisions::new(store.clone());
    let refused = decisions.execute(&Join("ada\nbob"), Metadata::new()).await;
    match refused {
        Err(CommandError::Store(annals::Error::InvalidInput { field, reason })) => {
            assert_eq!(field, "stream id");
            assert!(reason.contains("member-ada\\nbob"), "{reason}");
        }
        other => panic!("expected an invalid stream id, got {other:?}"),
    }
    let log = store.read_all(LogPosition::START, 10).await.expect("read");
    assert!(log.is_empty(), "nothing is written: {log:?}");

    let joined = decisions.execute(&Join("ada"), Metadata::new()).await;
    assert_eq!(joined.expect("a valid id is appended").results.len(), 1);
    let stream = StreamId::new("member-ada").expect("id");
    let events = store.load_stream(&stream).await.expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].tags, ["email:ada@x.test"]);
}

#[test]
fn no_events_append_nothing() {
    assert!(Appends::new().to::<Member>("ada", []).is_empty());
    let joined = Joined {
        email: "ada@x.test".into(),
    };
    assert!(!Appends::new().to::<Member>("ada", [joined]).is_empty());
}
