//! Five worker processes run the same two owned readers (a SQL projection
//! and a transactional subscription) against a PostgreSQL server this test
//! owns, while events keep arriving. The test kills a holder with SIGKILL,
//! pauses the holders with SIGSTOP past their leases and lets them go on
//! with SIGCONT (their late batches must be refused), and crashes and
//! restarts PostgreSQL under them. Afterwards the read model equals what one
//! clean run builds, each event's transactional effect exists exactly once,
//! and every takeover is measured and printed.

use std::collections::HashSet;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use annals::prelude::*;
use annals_tests::backends::{DATABASE_URL_VAR, OwnPostgres};
use annals_tests::domain::UserEvent;

/// Each reader's holder may be another process: SIGKILL takes up to two,
/// SIGSTOP up to two more, and one must be left to take over.
const WORKERS: usize = 5;
const ROLES: [&str; 3] = ["admin", "auditor", "viewer"];
const ROUNDS: usize = 80;
const PER_ROUND: usize = 10;
/// The workers' lease (see `reader_worker`).
const LEASE: Duration = Duration::from_secs(2);

/// Kills the workers even when the test fails (resuming paused ones).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            signal("CONT", child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run kill");
    assert!(status.success() || name == "CONT", "kill -{name} {pid}");
}

async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::query_scalar(sql).fetch_one(pool).await {
            Ok(value) => return value,
            Err(error) => {
                assert!(Instant::now() < until, "{sql}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The current holder of each reader's lease: its latest generation's pid.
async fn holders(pool: &sqlx::PgPool) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "SELECT DISTINCT ON (reader) reader, pid, generation FROM lease_holders \
         ORDER BY reader, generation DESC",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

/// Waits until both readers are held by processes outside `gone`; returns
/// how long that took.
async fn taken_over(pool: &sqlx::PgPool, gone: &HashSet<i64>, what: &str) -> Duration {
    let start = Instant::now();
    wait_for(what, Duration::from_secs(30), async || {
        let now = holders(pool).await;
        now.len() == 2 && now.iter().all(|(_, pid, _)| !gone.contains(pid))
    })
    .await;
    start.elapsed()
}

async fn progress(pool: &sqlx::PgPool) -> i64 {
    scalar(
        pool,
        "SELECT COALESCE(sum(users), 0)::bigint FROM role_counts",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_readers_survive_kill_pause_and_a_database_restart() {
    let server = OwnPostgres::start().await;
    let url = server.url();
    let schema = "failover";
    let store = PostgresEventStore::builder(url.clone())
        .schema(schema)
        .connect()
        .await
        .expect("connect");
    let pool = store.pool().clone();
    sqlx::raw_sql(
        "CREATE TABLE role_counts (role text PRIMARY KEY, users bigint NOT NULL); \
         CREATE TABLE effects (event_id uuid NOT NULL, pid bigint NOT NULL); \
         CREATE TABLE lease_holders (pid bigint NOT NULL, reader text NOT NULL, \
             generation bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());",
    )
    .execute(&pool)
    .await
    .expect("tables");

    let mut workers = Workers(
        (0..WORKERS)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_reader_worker"))
                    .arg(schema)
                    .env(DATABASE_URL_VAR, &url)
                    .spawn()
                    .expect("start a worker")
            })
            .collect(),
    );

    // Events keep arriving throughout, retried across the restart (an
    // append whose answer was lost is found by its conflict).
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
                    loop {
                        match store
                            .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
                            .await
                        {
                            Ok(_) => break,
                            Err(error) if error.is_conflict() => break,
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };

    wait_for(
        "both readers to be owned",
        Duration::from_secs(30),
        async || holders(&pool).await.len() == 2,
    )
    .await;
    wait_for("progress", Duration::from_secs(30), async || {
        progress(&pool).await >= 30
    })
    .await;

    // 1. SIGKILL every process that holds a lease.
    let killed: HashSet<i64> = holders(&pool).await.iter().map(|h| h.1).collect();
    for child in &mut workers.0 {
        if killed.contains(&i64::from(child.id())) {
            child.kill().expect("SIGKILL a holder");
            child.wait().expect("reap it");
        }
    }
    let after_kill = taken_over(&pool, &killed, "a takeover after SIGKILL").await;

    // 2. SIGSTOP the new holders past their leases; others take over; then
    // SIGCONT them: whatever they were doing is refused.
    let paused: HashSet<i64> = holders(&pool).await.iter().map(|h| h.1).collect();
    for pid in &paused {
        signal("STOP", u32::try_from(*pid).expect("pid"));
    }
    let after_pause = taken_over(&pool, &paused, "a takeover after SIGSTOP").await;
    let before = progress(&pool).await;
    wait_for(
        "progress under the new owner",
        Duration::from_secs(30),
        async || progress(&pool).await >= before + 20,
    )
    .await;
    for pid in &paused {
        signal("CONT", u32::try_from(*pid).expect("pid"));
    }

    // 3. Crash PostgreSQL under everyone and start it again.
    let before = progress(&pool).await;
    server.crash();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = Instant::now();
    server.restart().await;
    wait_for(
        "progress after the restart",
        Duration::from_secs(60),
        async || progress(&pool).await >= before + 20,
    )
    .await;
    let after_restart = restarted.elapsed();

    appender.await.expect("appender");
    let total = (ROUNDS * PER_ROUND) as i64;
    wait_for("every event applied", Duration::from_secs(60), async || {
        progress(&pool).await >= total
            && scalar(&pool, "SELECT count(*) FROM effects").await >= total
    })
    .await;
    // Time for a late, refused or duplicated write to show up.
    tokio::time::sleep(LEASE).await;

    // What one clean run builds, role by role.
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
    assert_eq!(counts, expected, "the read model equals one clean run");
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM effects")
            .fetch_one(&pool)
            .await
            .expect("effects");
    assert_eq!(
        (rows, distinct),
        (total, total),
        "each event's effect exactly once"
    );
    let generations: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reader, max(generation) FROM lease_holders GROUP BY reader ORDER BY reader",
    )
    .fetch_all(&pool)
    .await
    .expect("generations");
    println!(
        "takeover with a {LEASE:?} lease: after SIGKILL {after_kill:?}, after SIGSTOP {after_pause:?}; \
         progress {after_restart:?} after PostgreSQL restarted; lease generations {generations:?}"
    );
    assert!(
        after_kill <= LEASE * 2 && after_pause <= LEASE * 2,
        "takeover within the lease and a retry: {after_kill:?}, {after_pause:?}"
    );
    drop(workers);
}
