//! The statements of a page query by tag or correlation id are planned
//! once, not for every page.
//!
//! PostgreSQL plans a prepared statement's first five executions with
//! their parameters, then keeps one generic plan if it costs no more than
//! those did. A page size bound as a parameter is planned as a tenth of the
//! matching rows, so the generic plan of a page by tag or correlation id
//! never won, and each page paid its planning (a third of a 1 ms page over
//! 1,000,000 events, in `cargo xtask bench`'s W6). (A page by type and time
//! is still planned each time: its bounds decide between the time index and
//! the type's, and PostgreSQL judges the plans made for them cheaper.)
//! `pg_prepared_statements` counts, per connection, the plans of each kind a
//! statement had: the store here has one connection, so they are the
//! store's.

use annals::prelude::*;
use annals::store::EventQuery;
use annals_tests::backends::postgres_url;
use serde_json::json;
use uuid::Uuid;

/// The page size.
const PAGE: usize = 17;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_query_reuses_its_plan_instead_of_planning_every_page() {
    let store = PostgresEventStore::builder(postgres_url())
        .schema(format!("t_{}", Uuid::now_v7().simple()))
        .max_connections(1)
        .connect()
        .await
        .expect("connect");
    // Enough events that a tenth of them is far more than a page (the
    // planner's guess for a bound limit), with statistics.
    let correlation = Uuid::now_v7();
    for half in 0..2 {
        let batch = (0..10)
            .map(|stream| {
                let events = (0..1_000)
                    .map(|number| {
                        NewEvent::json(
                            if number % 2 == 0 {
                                "test.even"
                            } else {
                                "test.odd"
                            },
                            &json!({ "number": number }),
                        )
                        .expect("event")
                        .with_tags(["region:eu"])
                        .with_metadata(Metadata::new().with_correlation_id(correlation))
                    })
                    .collect();
                StreamAppend::new(
                    StreamId::new(format!("plans-{half}-{stream}")).expect("stream id"),
                    ExpectedVersion::NoStream,
                    events,
                )
            })
            .collect();
        store.append_batch(batch).await.expect("append");
    }
    for table in ["annals_events", "annals_event_tags"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
            .execute(store.pool())
            .await
            .expect("analyze");
    }
    let all = store
        .query(&EventQuery::new().limit(300))
        .await
        .expect("the log")
        .events;
    assert_eq!(all.len(), 300);

    // Twelve pages of each query, each from another cursor.
    for page in 0..12 {
        let after = all[page * 20].position.sequence;
        let queries = [
            EventQuery::new().tag("region:eu"),
            EventQuery::new().correlation_id(correlation),
        ];
        for query in queries {
            let found = store
                .query(&query.after(after).limit(PAGE))
                .await
                .expect("a page");
            assert_eq!(found.events.len(), PAGE);
        }
    }

    let plans: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE 'SELECT position, %ORDER BY%' \
         AND generic_plans + custom_plans >= 12",
    )
    .fetch_all(store.pool())
    .await
    .expect("the connection's prepared statements");
    assert_eq!(plans.len(), 2, "one statement per query: {plans:#?}");
    for (statement, generic, custom) in &plans {
        assert!(
            *generic >= 6 && *custom <= 6,
            "after 12 pages the statement must run on its generic plan \
             ({generic} generic, {custom} custom plans): {statement}"
        );
    }
}
