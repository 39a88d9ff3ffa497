//! Subscriptions against every backend.

mod memory {
    annals_tests::subscription_suite!(memory);
}

mod sqlite {
    annals_tests::subscription_suite!(sqlite);
}

mod postgres {
    annals_tests::subscription_suite!(postgres);
}

/// A checkpoint that cannot be loaded at start-up (here: the application
/// role lacks SELECT on the checkpoints table for a moment) is retried with
/// backoff and shown in the status; the subscription starts once it loads
/// (it used to end for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_is_retried_and_shown_in_the_status() {
    use annals::prelude::*;
    use annals::store::PostgresEventStore;
    use annals::subscription::{EventSink, Subscription};
    use annals_tests::backends::{fresh_postgres_store, postgres_url};

    #[derive(Default)]
    struct Count(usize);
    #[annals::async_trait]
    impl EventSink for Count {
        async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), annals::error::BoxError> {
            self.0 += 1;
            Ok(())
        }
    }

    let owner = fresh_postgres_store().await;
    let role = format!("app_{}", uuid::Uuid::now_v7().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(owner.pool())
        .await
        .expect("role");
    owner.grant_tenant_access(&role).await.expect("grant");
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(owner.pool())
        .await
        .expect("schema");
    let revoke = format!("REVOKE SELECT ON annals_checkpoints FROM {role}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(revoke))
        .execute(owner.pool())
        .await
        .expect("revoke");
    let base = postgres_url();
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    let app = PostgresEventStore::builder(format!("{scheme}://{role}@{host}"))
        .schema(schema)
        .migrate(false)
        .connect()
        .await
        .expect("connect");
    let acme = std::sync::Arc::new(app.for_tenant("acme").await.expect("handle"));
    acme.append(
        &StreamId::new("user-1").expect("stream"),
        ExpectedVersion::NoStream,
        vec![NewEvent::json("test.started", &serde_json::json!({})).expect("event")],
    )
    .await
    .expect("append");

    let handle = Subscription::new(acme, "late")
        .retry_delay(std::time::Duration::from_millis(20))
        .poll_interval(std::time::Duration::from_millis(20))
        .start(Count::default());
    let failing = handle
        .wait_until(|status| status.last_error.is_some())
        .await
        .expect("the failure shows");
    let error = failing.last_error.unwrap_or_default();
    assert!(error.contains("cannot load the checkpoint"), "{error}");
    let grant = format!("GRANT SELECT ON annals_checkpoints TO {role}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(grant))
        .execute(owner.pool())
        .await
        .expect("grant");
    let running = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        handle.wait_until(|status| status.delivered == 1 && status.last_error.is_none()),
    )
    .await
    .expect("started in time")
    .expect("status");
    assert!(running.caught_up || running.delivered == 1);
    assert_eq!(handle.stop().await.expect("stop").0, 1);
}
