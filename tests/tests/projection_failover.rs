//! Several processes run the same SQL projection; a PostgreSQL lease keeps
//! exactly one active. Killing the active one with SIGKILL in the middle of
//! a stream hands over to another, and the read model ends exactly as a
//! single process would have built it: no event lost, none applied twice.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use annals::prelude::*;
use annals_tests::backends::{DATABASE_URL_VAR, postgres_url};
use annals_tests::domain::UserEvent;

const ROLES: [&str; 3] = ["admin", "auditor", "viewer"];
const ROUNDS: usize = 40;
const PER_ROUND: usize = 10;

/// Kills the workers even when the test fails.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("query")
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_projection_worker_hands_over_without_losing_or_repeating_events() {
    let schema = format!("failover_{}", uuid::Uuid::now_v7().simple());
    let store = PostgresEventStore::builder(postgres_url())
        .schema(schema.clone())
        .connect()
        .await
        .expect("connect");
    let pool = store.pool().clone();
    sqlx::raw_sql(
        "CREATE TABLE role_counts (role text PRIMARY KEY, users bigint NOT NULL); \
         CREATE TABLE lease_holders (pid bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());",
    )
    .execute(&pool)
    .await
    .expect("tables");

    let mut workers = Workers(
        (0..3)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_projection_worker"))
                    .arg(&schema)
                    .env(DATABASE_URL_VAR, postgres_url())
                    .spawn()
                    .expect("start a worker")
            })
            .collect(),
    );

    // Events keep arriving while the workers run.
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                for n in 0..PER_ROUND {
                    let stream = StreamId::new(format!("user-f{round}-{n}")).expect("stream id");
                    let role = ROLES[(round * PER_ROUND + n) % ROLES.len()];
                    let event =
                        NewEvent::from_event(&UserEvent::RoleAssigned { role: role.into() })
                            .expect("encode");
                    store
                        .append(&stream, ExpectedVersion::NoStream, vec![event])
                        .await
                        .expect("append");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    wait_for(
        "a worker to take the lease",
        Duration::from_secs(30),
        async || scalar(&pool, "SELECT count(*) FROM lease_holders").await == 1,
    )
    .await;
    let first: i64 = scalar(&pool, "SELECT pid FROM lease_holders").await;
    wait_for("progress", Duration::from_secs(30), async || {
        scalar(
            &pool,
            "SELECT COALESCE(sum(users), 0)::bigint FROM role_counts",
        )
        .await
            >= 30
    })
    .await;
    let holder = workers
        .0
        .iter_mut()
        .find(|child| i64::from(child.id()) == first)
        .expect("the lease holder is one of ours");
    holder.kill().expect("SIGKILL the active worker");
    holder.wait().expect("reap it");

    appender.await.expect("appender");
    let total = (ROUNDS * PER_ROUND) as i64;
    wait_for(
        "another worker to finish the stream",
        Duration::from_secs(60),
        async || {
            scalar(
                &pool,
                "SELECT COALESCE(sum(users), 0)::bigint FROM role_counts",
            )
            .await
                >= total
        },
    )
    .await;
    let holders: Vec<i64> = sqlx::query_scalar("SELECT pid FROM lease_holders ORDER BY at")
        .fetch_all(&pool)
        .await
        .expect("holders");
    assert_eq!(holders.len(), 2, "exactly one takeover: {holders:?}");
    assert_ne!(holders[1], first);

    // What a single process would have built, role by role.
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT role, users FROM role_counts ORDER BY role")
            .fetch_all(&pool)
            .await
            .expect("counts");
    let expected: Vec<(String, i64)> = ROLES
        .iter()
        .enumerate()
        .map(|(i, role)| {
            (
                (*role).to_owned(),
                (0..total as usize).filter(|n| n % ROLES.len() == i).count() as i64,
            )
        })
        .collect();
    assert_eq!(counts, expected);
    drop(workers);
}
