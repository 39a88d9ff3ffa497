//! What a decision appends (`Appends`): events for an aggregate's instance
//! land on its stream, and a stream id that is no valid one comes back from
//! `Decisions::execute` as a typed store error naming it, with nothing
//! written. A decision executed again under the same command id returns the
//! first outcome instead of deciding again.

use std::sync::Arc;

use annals::prelude::*;
use annals::store::{Criterion, EventCriteria, LogPosition};

#[annals::event(name = "test.decision_member.joined", tags(email))]
struct Joined {
    email: String,
}

#[annals::aggregate(name = "decision_member", events(Joined))]
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
            assert!(reason.contains("decision_member-ada\\nbob"), "{reason}");
        }
        other => panic!("expected an invalid stream id, got {other:?}"),
    }
    let log = store.read_all(LogPosition::START, 10).await.expect("read");
    assert!(log.is_empty(), "nothing is written: {log:?}");

    let joined = decisions.execute(&Join("ada"), Metadata::new()).await;
    assert_eq!(joined.expect("a valid id is appended").results.len(), 1);
    let stream = StreamId::new("decision_member-ada").expect("id");
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

#[tokio::test]
async fn a_decision_retried_under_its_command_id_returns_the_first_outcome() {
    let store = Arc::new(InMemoryEventStore::new());
    let decisions = Decisions::new(store.clone()).for_tenant("acme");
    let request = || Metadata::new().with_command_id("req-42");
    let first = decisions
        .execute(&Join("ada"), request())
        .await
        .expect("first");
    assert!(!first.repeated);
    let stream = StreamId::new("decision_member-ada").expect("id");
    let events = store.load_stream(&stream).await.expect("read");
    assert!(
        events[0].tags.contains(&"command:req-42".to_owned()),
        "{:?}",
        events[0].tags
    );

    // The same request again (the client lost the answer): the first
    // outcome, and nothing appended. Without the command id, the decision
    // would append a second event to the stream.
    let again = decisions
        .execute(&Join("ada"), request())
        .await
        .expect("again");
    assert!(again.repeated);
    assert_eq!(
        (again.results, again.position),
        (first.results, first.position)
    );
    assert_eq!(store.load_stream(&stream).await.expect("read").len(), 1);

    // Another tenant's request with the same id is its own.
    let globex = Decisions::new(store.clone()).for_tenant("globex");
    let theirs = globex
        .execute(&Join("bob"), request())
        .await
        .expect("globex");
    assert!(!theirs.repeated);

    // A new id decides again.
    let next = decisions
        .execute(&Join("ada"), Metadata::new().with_command_id("req-43"))
        .await
        .expect("next");
    assert!(!next.repeated);
    assert_eq!(store.load_stream(&stream).await.expect("read").len(), 2);
}
