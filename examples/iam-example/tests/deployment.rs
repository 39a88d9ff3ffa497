//! The original design's deployment on one machine: three `iam-example
//! serve` processes over a PostgreSQL primary with a streaming replica, a
//! 3-master Redis Cluster and NATS JetStream, all on loopback. A load
//! generator sends commands to all three instances; mid-run one instance is
//! SIGKILLed and one Redis master is stopped. Afterwards no acknowledged
//! command is lost, every read model equals a single-process rebuild, and
//! the JetStream stream equals the log. The figures (commands per second,
//! takeover time, replica lag) go to stdout and to
//! `target/tmp/deployment-figures.txt`, which `cargo xtask test` prints.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annals::pii::{MasterKey, PiiEventStore};
use annals::projection::Projection;
use annals::projection::runner::{PostgresReadModel, ProjectionRunner};
use annals::store::{EventStore, LogPosition, PostgresEventStore};
use annals_test_servers::{OwnNats, OwnPostgres, OwnRedisCluster};
use iam_domain::audit::AuditTrail;
use iam_domain::directory::TenantDirectory;
use iam_domain::permissions::UserPermissions;
use iam_example::backend::RELAY_STREAM;
use iam_example::client::JsonClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

const SCHEMA: &str = "iam_deploy";
/// 32 zero bytes: every instance and the rebuild use the same key.
const MASTER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const TENANTS: usize = 4;
const WORKERS: usize = 12;
const LOAD: Duration = Duration::from_secs(24);
/// The instances' lease: a dead owner's projections move within about
/// 1.2 times this.
const LEASE_SECONDS: u64 = 3;

/// One `iam-example serve` process.
struct Instance {
    name: String,
    base: String,
    child: Child,
}

async fn start_instance(
    name: &str,
    primary: &str,
    replica: &str,
    redis: &str,
    nats: &str,
) -> Instance {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iam-example"))
        .args(["serve", "--listen", "127.0.0.1:0", "--instance", name])
        .args(["--database-url", primary, "--schema", SCHEMA])
        .args([
            "--replica-url",
            replica,
            "--redis-url",
            redis,
            "--nats-url",
            nats,
        ])
        .args(["--lease", &LEASE_SECONDS.to_string()])
        .env("ANNALS_MASTER_KEY", MASTER_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start iam-example serve");
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::time::timeout(
        Duration::from_secs(60),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .unwrap_or_else(|_| panic!("instance {name} did not start within 60 s"))
    .expect("read stdout")
    .unwrap_or_else(|| panic!("instance {name} exited before listening"));
    let base = line
        .strip_prefix("iam-example serving on ")
        .expect("the address")
        .trim_end_matches('/')
        .to_owned();
    Instance {
        name: name.to_owned(),
        base,
        child,
    }
}

/// A command the load generator sent, acknowledged (2xx) by some instance.
#[derive(Debug, Clone)]
struct Acknowledged {
    tenant: String,
    request: String,
}

/// What the load generator saw.
#[derive(Debug, Default)]
struct Tally {
    acknowledged: Vec<Acknowledged>,
    /// Attempts that got no answer or a 5xx and were retried elsewhere
    /// with the same idempotency key.
    retried: usize,
    /// Commands refused with a 4xx (none are expected).
    refused: Vec<String>,
}

/// Sends one command, retrying on another instance (same idempotency
/// key) until one acknowledges it or 60 s pass.
/// Where commands go: the instances, round-robin.
struct Targets<'a> {
    client: &'a JsonClient,
    bases: &'a [String],
    tally: &'a Mutex<Tally>,
}

async fn send(
    targets: &Targets<'_>,
    first: usize,
    method: &str,
    path: &str,
    request: &str,
    body: Option<Value>,
) -> bool {
    let Targets {
        client,
        bases,
        tally,
    } = targets;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        let base = &bases[(first + attempt) % bases.len()];
        attempt += 1;
        let answer = client
            .send(
                method,
                &format!("{base}{path}"),
                &[
                    ("x-actor", "load@deploy"),
                    ("x-correlation-id", request),
                    ("idempotency-key", request),
                ],
                body.as_ref(),
            )
            .await;
        match answer {
            Ok(answer) if (200..300).contains(&answer.status) => return true,
            Ok(answer) if answer.status < 500 => {
                tally.lock().await.refused.push(format!(
                    "{method} {path}: {} {}",
                    answer.status, answer.text
                ));
                return false;
            }
            _ => tally.lock().await.retried += 1,
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path} ({request}) was not acknowledged within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One load worker: registers users and assigns them roles, now and then
/// grants a role a permission, round-robin over the instances, until
/// `stop`.
async fn worker(
    worker: usize,
    client: JsonClient,
    bases: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let tenant = format!("d{}", (worker + n) % TENANTS);
        let user = format!("{tenant}-w{worker}u{n}");
        let first = worker + n;
        let record = |request: String, acknowledged: bool| {
            let tenant = tenant.clone();
            let tally = tally.clone();
            async move {
                if acknowledged {
                    tally
                        .lock()
                        .await
                        .acknowledged
                        .push(Acknowledged { tenant, request });
                }
            }
        };
        let request = format!("register-{user}");
        let done = send(
            &Targets {
                client: &client,
                bases: &bases,
                tally: &tally,
            },
            first,
            "POST",
            &format!("/tenants/{tenant}/users"),
            &request,
            Some(json!({
                "id": user,
                "email": format!("w{worker}u{n}@{tenant}.example"),
                "display_name": format!("Worker {worker} user {n}"),
            })),
        )
        .await;
        record(request, done).await;
        let role = format!("{tenant}-{}", ["ops", "dev"][n % 2]);
        let request = format!("assign-{user}");
        let done = send(
            &Targets {
                client: &client,
                bases: &bases,
                tally: &tally,
            },
            first + 1,
            "PUT",
            &format!("/tenants/{tenant}/users/{user}/roles/{role}"),
            &request,
            None,
        )
        .await;
        record(request, done).await;
        if n % 10 == 9 {
            let request = format!("grant-w{worker}n{n}");
            let done = send(
                &Targets {
                    client: &client,
                    bases: &bases,
                    tally: &tally,
                },
                first + 2,
                "PUT",
                &format!("/tenants/{tenant}/roles/{role}/permissions/load.w{worker}n{n}"),
                &request,
                None,
            )
            .await;
            record(request, done).await;
        }
        n += 1;
    }
}

/// The instance owning each projection (state, owner), from `/health`, or
/// `None` when the instance does not answer.
async fn owners(client: &JsonClient, base: &str) -> Option<Vec<(String, String)>> {
    let health = client
        .send("GET", &format!("{base}/health"), &[], None)
        .await
        .ok()?;
    Some(
        health.json["projections"]
            .as_array()?
            .iter()
            .map(|projection| {
                (
                    projection["state"].as_str().unwrap_or_default().to_owned(),
                    projection["owner"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

/// The log's head on the primary.
async fn head(store: &dyn EventStore) -> LogPosition {
    let mut head = LogPosition::START;
    loop {
        let batch = store.read_all(head, 5_000).await.expect("read the log");
        match batch.last() {
            Some(last) => head = last.position,
            None => return head,
        }
    }
}

/// Waits until reader `name`'s checkpoint reaches `head`.
async fn wait_for_checkpoint(store: &dyn EventStore, name: &str, head: LogPosition) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let position = store
            .checkpoints()
            .load(name)
            .await
            .expect("load the checkpoint")
            .map(|checkpoint| checkpoint.position);
        if position.is_some_and(|position| position >= head) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not reach {head} within 120 s (at {position:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn checkpoint<P: Projection>() -> String {
    ProjectionRunner::<()>::checkpoint_name::<P>()
}

/// Rebuilds the three read models from the log in one process, into
/// schema `target`, up to `head`.
async fn rebuild(url: &str, target: &str, events: Arc<dyn EventStore>, head: LogPosition) {
    let store = PostgresEventStore::builder(url.to_owned())
        .schema(target.to_owned())
        .connect()
        .await
        .expect("the rebuild's schema");
    for projection in annals::registry::projections() {
        for table in projection.tables {
            let ddl = annals_codegen::read_model_ddl::create_table(
                annals_codegen::Dialect::Postgres,
                table,
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(store.pool())
                .await
                .expect("create a read-model table");
        }
    }
    let model = || PostgresReadModel::for_store(&store);
    let directory = ProjectionRunner::new(events.clone(), model()).start(TenantDirectory);
    let permissions = ProjectionRunner::new(events.clone(), model()).start(UserPermissions);
    let audit = ProjectionRunner::new(events, model()).start(AuditTrail);
    let timeout = Duration::from_secs(300);
    directory
        .wait_until(timeout, |status| status.position >= head)
        .await
        .expect("the directory rebuilt");
    permissions
        .wait_until(timeout, |status| status.position >= head)
        .await
        .expect("the permissions rebuilt");
    audit
        .wait_until(timeout, |status| status.position >= head)
        .await
        .expect("the audit trail rebuilt");
    directory.stop().await.expect("stop");
    permissions.stop().await.expect("stop");
    audit.stop().await.expect("stop");
}

/// The JetStream stream's messages: (`Nats-Msg-Id`, payload).
async fn stream_messages(url: &str) -> Vec<(String, String)> {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let context = async_nats::jetstream::new(client);
    let mut stream = context.get_stream(RELAY_STREAM).await.expect("the stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut messages = Vec::new();
    for sequence in 1..=last {
        let message = stream
            .get_raw_message(sequence)
            .await
            .unwrap_or_else(|error| panic!("message {sequence}: {error}"));
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        messages.push((id, String::from_utf8_lossy(&message.payload).into_owned()));
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_over_a_replica_a_redis_cluster_and_nats_lose_nothing() {
    // The topology, all on loopback.
    let primary = OwnPostgres::start().await;
    let replica = primary.start_replica().await;
    let mut redis = OwnRedisCluster::start().await;
    let nats = OwnNats::start().await;
    let (primary_url, replica_url) = (primary.url(), replica.url());
    let mut instances = Vec::new();
    for name in ["iam-1", "iam-2", "iam-3"] {
        instances.push(
            start_instance(name, &primary_url, &replica_url, &redis.url(), &nats.url()).await,
        );
    }
    let client = JsonClient::new(Duration::from_secs(10));
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();

    // Tenants and their roles.
    let tally = Arc::new(Mutex::new(Tally::default()));
    for t in 0..TENANTS {
        let tenant = format!("d{t}");
        let created = send(
            &Targets {
                client: &client,
                bases: &bases,
                tally: &tally,
            },
            t,
            "POST",
            "/tenants",
            &format!("tenant-{tenant}"),
            Some(json!({"id": tenant, "name": format!("Deploy {t}")})),
        )
        .await;
        assert!(created, "{:?}", tally.lock().await.refused);
        for role in ["ops", "dev"] {
            let defined = send(
                &Targets {
                    client: &client,
                    bases: &bases,
                    tally: &tally,
                },
                t + 1,
                "POST",
                &format!("/tenants/{tenant}/roles"),
                &format!("role-{tenant}-{role}"),
                Some(json!({
                    "id": format!("{tenant}-{role}"),
                    "name": role,
                    "permissions": [format!("{role}.read")],
                })),
            )
            .await;
            assert!(defined, "{:?}", tally.lock().await.refused);
        }
    }

    // One instance relays to JetStream; the others stand by.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut holders = 0;
        for base in &bases {
            let health = client
                .send("GET", &format!("{base}/health"), &[], None)
                .await
                .expect("health answers");
            assert_eq!(health.status, 200, "{}", health.text);
            holders += usize::from(health.json["relay"]["held"] == true);
        }
        if holders == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{holders} instances hold the relay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Replica lag, sampled on the primary while the load runs.
    let stop = Arc::new(AtomicBool::new(false));
    let lag_samples = {
        let stop = stop.clone();
        let url = primary_url.clone();
        tokio::spawn(async move {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            let mut samples: Vec<(i64, f64)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sample: Option<(Option<i64>, Option<f64>)> = sqlx::query_as(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, \
                     (EXTRACT(EPOCH FROM replay_lag) * 1000)::float8 FROM pg_stat_replication",
                )
                .fetch_optional(&pool)
                .await
                .expect("pg_stat_replication");
                if let Some((bytes, millis)) = sample {
                    samples.push((bytes.unwrap_or(0), millis.unwrap_or(0.0)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            samples
        })
    };

    // The load, against all three instances.
    let shared_bases = Arc::new(bases.clone());
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(worker(
                w,
                client.clone(),
                shared_bases.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    // A third of the way in: SIGKILL the instance owning the most
    // projections; measure how long until the survivors hold their leases
    // and until they have caught up.
    tokio::time::sleep(LOAD / 3).await;
    let seen = owners(&client, &bases[0]).await.expect("health answers");
    let victim = (0..instances.len())
        .max_by_key(|&i| {
            seen.iter()
                .filter(|(_, owner)| *owner == instances[i].name)
                .count()
        })
        .expect("three instances");
    assert!(
        seen.iter()
            .any(|(_, owner)| *owner == instances[victim].name),
        "no projection has an owner: {seen:?}"
    );
    let mut killed = instances.remove(victim);
    let killed_at = Instant::now();
    killed.child.start_kill().expect("SIGKILL");
    killed.child.wait().await.expect("reaped");
    let survivors: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    let takeover = {
        let client = client.clone();
        let survivors = survivors.clone();
        let killed_name = killed.name.clone();
        let names: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
        tokio::spawn(async move {
            // Until both survivors agree each projection's owner is a
            // survivor (the lease moved), then until each owner reports it
            // running (caught up with the log that grew meanwhile).
            let mut moved = None;
            loop {
                let first = owners(&client, &survivors[0]).await.unwrap_or_default();
                let second = owners(&client, &survivors[1]).await.unwrap_or_default();
                let agreed = first.len() == 3
                    && second.len() == 3
                    && first.iter().zip(&second).all(|((_, owner), (_, other))| {
                        owner == other && *owner != killed_name && !owner.is_empty()
                    });
                if agreed && moved.is_none() {
                    moved = Some(killed_at.elapsed());
                }
                let running = agreed
                    && first.iter().zip(&second).all(|((a, owner), (b, _))| {
                        (*owner == names[0] && a == "running")
                            || (*owner == names[1] && b == "running")
                    });
                if let (true, Some(moved)) = (running, moved) {
                    return (moved, killed_at.elapsed());
                }
                assert!(
                    killed_at.elapsed() < Duration::from_secs(120),
                    "the survivors did not take the projections over within 120 s: {first:?} {second:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Halfway: stop one Redis master; the caches fall back to the store.
    tokio::time::sleep(LOAD / 2 - LOAD / 3).await;
    redis.stop_node(1);

    tokio::time::sleep(LOAD - LOAD / 2).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a load worker panicked");
    }
    let load_took = started.elapsed();
    let takeover = takeover.await.expect("takeover measured");
    let lag_samples = lag_samples.await.expect("lag sampled");
    let tally = Arc::try_unwrap(tally).expect("workers done").into_inner();
    assert!(
        tally.refused.is_empty(),
        "commands refused: {:?}",
        &tally.refused[..tally.refused.len().min(5)]
    );
    let acknowledged = tally.acknowledged.len();
    assert!(acknowledged > 0, "no command acknowledged");

    // The log on the primary: every acknowledged command is there.
    let store = PostgresEventStore::builder(primary_url.clone())
        .schema(SCHEMA)
        .connect()
        .await
        .expect("the primary's store");
    // The survivors' readers catch up with the log; the head is read
    // again until it stands still (an event whose transaction committed
    // while an older one was open is held back from the gap-safe read for
    // that long). Then the survivors stop, cleanly.
    let readers = [
        checkpoint::<TenantDirectory>(),
        checkpoint::<UserPermissions>(),
        checkpoint::<AuditTrail>(),
        "iam-jetstream-relay".to_owned(),
    ];
    let mut settled = head(&store).await;
    loop {
        for name in &readers {
            wait_for_checkpoint(&store, name, settled).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = head(&store).await;
        if now == settled {
            break;
        }
        settled = now;
    }
    for instance in &mut instances {
        let pid = instance.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(60), instance.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 60 s of SIGTERM", instance.name))
            .expect("wait");
        assert!(status.success(), "{} exited with {status}", instance.name);
    }

    // Nothing else writes now: the whole log, and every acknowledged
    // command in it, in its tenant.
    let head = head(&store).await;
    assert_eq!(head, settled, "the log moved after the readers caught up");
    let mut requests = BTreeSet::new();
    let mut from = LogPosition::START;
    let mut log_ids = Vec::new();
    loop {
        let batch = store.read_all(from, 5_000).await.expect("read");
        let Some(last) = batch.last() else { break };
        from = last.position;
        for event in &batch {
            log_ids.push(event.event_id.to_string());
            if let Some(key) = event.metadata.headers.get("correlation-key") {
                requests.insert((
                    event.metadata.tenant_id.clone().unwrap_or_default(),
                    key.clone(),
                ));
            }
        }
    }
    let lost: Vec<&Acknowledged> = tally
        .acknowledged
        .iter()
        .filter(|command| !requests.contains(&(command.tenant.clone(), command.request.clone())))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged commands are not in the log, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    // Every read model equals a single-process rebuild of the same log.
    let master_key = MasterKey::from_base64(MASTER_KEY).expect("key");
    let events: Arc<dyn EventStore> = Arc::new(PiiEventStore::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        master_key,
    ));
    rebuild(&primary_url, "iam_rebuild", events, head).await;
    let mut rows = Vec::new();
    for projection in annals::registry::projections() {
        for table in projection.tables {
            let name = table.name;
            let (differing, count): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT \
                   (SELECT count(*) FROM ((TABLE {SCHEMA}.{name} EXCEPT ALL TABLE iam_rebuild.{name}) \
                      UNION ALL (TABLE iam_rebuild.{name} EXCEPT ALL TABLE {SCHEMA}.{name})) d), \
                   (SELECT count(*) FROM {SCHEMA}.{name})"
            )))
            .fetch_one(store.pool())
            .await
            .expect("compare the tables");
            assert_eq!(
                differing, 0,
                "read-model table {name} differs from a single-process rebuild in {differing} rows"
            );
            rows.push(format!("{name} {count}"));
        }
    }

    // JetStream holds the log, in order, once each, personal data
    // encrypted.
    let messages = stream_messages(&nats.url()).await;
    let stream_ids: Vec<String> = messages.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        stream_ids.len(),
        log_ids.len(),
        "JetStream holds {} messages for {} events",
        stream_ids.len(),
        log_ids.len()
    );
    assert!(stream_ids == log_ids, "JetStream's order is not the log's");
    assert!(
        messages
            .iter()
            .all(|(_, payload)| !payload.contains(".example\"")),
        "an email address in plain text left the process"
    );

    // The figures.
    let max_lag_bytes = lag_samples
        .iter()
        .map(|(bytes, _)| *bytes)
        .max()
        .unwrap_or(0);
    let mut lag_millis: Vec<f64> = lag_samples.iter().map(|(_, millis)| *millis).collect();
    lag_millis.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        lag_millis
            .get(((lag_millis.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let figures = format!(
        "deployment test: 3 instances ({}, owning {} of 3 projections, SIGKILLed at {:.1} s), PostgreSQL primary + streaming replica, \
         3-master Redis Cluster (one master stopped at {:.1} s), NATS JetStream; {WORKERS} clients\n\
         commands acknowledged: {acknowledged} in {:.1} s = {:.0} commands/s across the instances \
         ({} attempts retried on another instance)\n\
         takeover: the survivors held every projection's lease {:.2} s after the SIGKILL (lease {LEASE_SECONDS} s), \
         and had caught up with the log that grew meanwhile after {:.2} s\n\
         replica lag while loaded: replay lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; at most {} bytes behind ({} samples)\n\
         log: {} events; read models equal to a rebuild ({}); JetStream: {} messages, the log's ids in order\n",
        killed.name,
        seen.iter()
            .filter(|(_, owner)| *owner == killed.name)
            .count(),
        (LOAD / 3).as_secs_f64(),
        (LOAD / 2).as_secs_f64(),
        load_took.as_secs_f64(),
        acknowledged as f64 / load_took.as_secs_f64(),
        tally.retried,
        takeover.0.as_secs_f64(),
        takeover.1.as_secs_f64(),
        percentile(0.5),
        percentile(0.99),
        percentile(1.0),
        max_lag_bytes,
        lag_samples.len(),
        log_ids.len(),
        rows.join(", "),
        stream_ids.len(),
    );
    print!("{figures}");
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("deployment-figures.txt");
    std::fs::write(&file, &figures).expect("write the figures");
    drop(replica);
    drop(primary);
}
