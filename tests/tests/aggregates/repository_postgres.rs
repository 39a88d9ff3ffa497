//! The repository suite against the postgres backend.

annals_tests::repository_suite!(postgres);

/// The ambiguous failure: the connection drops after the server committed
/// a command and before the answer arrives. Retried with its command id,
/// the command is not applied twice; its first outcome comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_retried_after_its_connection_was_cut_after_commit_applies_once() {
    use annals::prelude::*;
    use annals_tests::connection_cut::CutAfterCommit;
    use annals_tests::domain::{CreateTenant, SuspendTenant, Tenant};

    let proxy = CutAfterCommit::start(&annals_tests::backends::postgres_url()).await;
    let store = PostgresEventStore::builder(proxy.url())
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .without_group_commit()
        .connect()
        .await
        .expect("connect through the proxy");
    let tenants = Repository::<Tenant>::new(std::sync::Arc::new(store.clone()));
    tenants
        .execute(
            "acme",
            &CreateTenant {
                name: "Acme".into(),
            },
            Metadata::new(),
        )
        .await
        .expect("create");

    proxy.arm();
    let once = Metadata::new().with_command_id("req-7");
    let lost = tenants.execute("acme", &SuspendTenant, once.clone()).await;
    assert!(lost.is_err(), "the answer was lost: {lost:?}");
    assert_eq!(proxy.cuts(), 1, "the connection was cut after the commit");
    let stream = StreamId::new("tenant-acme").expect("stream id");
    assert_eq!(
        store.stream_version(&stream).await.expect("version"),
        2,
        "the server has the suspension"
    );

    let retried = tenants
        .execute("acme", &SuspendTenant, once)
        .await
        .expect("the retry gets the first outcome");
    assert!(retried.repeated);
    assert_eq!(retried.version, 2);
    assert_eq!(store.stream_version(&stream).await.expect("version"), 2);
}
