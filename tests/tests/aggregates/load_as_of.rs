//! `load_as_of` early in a long stream with many snapshots takes a number
//! of queries that grows with the logarithm of the stream's length (it
//! walked the snapshots down one by one, two queries each).

use std::sync::Arc;

use annals::aggregate::snapshot::SnapshotSettings;
use annals::prelude::*;
use annals::testing::RecordingStore;
use annals_tests::domain::{AssignRole, RegisterUser, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_early_in_a_long_stream_takes_a_bounded_number_of_reads() {
    let memory: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let recording = RecordingStore::new(memory);
    let store: Arc<dyn EventStore> = recording.clone();
    let users: Repository<User> =
        Repository::new(store.clone()).with_snapshots(SnapshotSettings::new().every(10));
    users
        .execute(
            "long",
            &RegisterUser {
                email: "long@acme.test".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("register");
    for n in 1..600 {
        users
            .execute(
                "long",
                &AssignRole {
                    role: format!("role-{n}"),
                },
                Metadata::new(),
            )
            .await
            .expect("assign");
    }
    let stream = User::stream_id(&"long").expect("stream id");
    let instant = store.read_stream(&stream, 50, 1).await.expect("read")[0].recorded_at;
    let expected = store
        .read_stream(&stream, 1, 1_000)
        .await
        .expect("read")
        .iter()
        .filter(|event| event.recorded_at <= instant)
        .count() as u64;
    assert!(expected >= 50);

    let before = recording.stream_reads();
    let then = users.load_as_of("long", instant).await.expect("load as of");
    let reads = recording.stream_reads() - before;
    assert_eq!(then.version, expected);
    assert_eq!(then.state.roles.len() as u64, expected - 1);
    // A stream_version, a binary search over 600 versions (10), a page of
    // events after the snapshot; the old walk read ~55 snapshots' events.
    assert!(reads <= 14, "load_as_of took {reads} stream reads");

    // Before the first event and after the last.
    let first = store.read_stream(&stream, 1, 1).await.expect("read")[0].recorded_at;
    let none = users
        .load_as_of("long", first - chrono::Duration::seconds(1))
        .await
        .expect("load as of");
    assert_eq!(none.version, 0);
    let now = users
        .load_as_of("long", chrono::Utc::now())
        .await
        .expect("load as of");
    assert_eq!(now.version, 600);
}
