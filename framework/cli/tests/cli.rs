//! The `annals` tool as an operator runs it: the built binary, against a
//! SQLite file and a PostgreSQL schema seeded through the library, checked
//! by its JSON output, its tables and its exit codes.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use annals::checkpoint::LeaseSettings;
use annals::error::BoxError;
use annals::pii::{MasterKey, PiiEventStore, SubjectKeyStore};
use annals::prelude::*;
use annals::store::{PostgresEventStore, SqliteEventStore};
use annals::subscription::dead_letter::DeadLetter;
use annals::subscription::handler::RetryPolicy;
use annals::subscription::handler_registry::{HandlerRegistry, HandlerSpec};
use annals::subscription::{EventSink, Subscription};
use annals_tests::backends::{TestStore, application_role, postgres_url, postgres_url_as};
use annals_tests::pii::{join_members, joined};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

const ANNALS: &str = env!("CARGO_BIN_EXE_annals");

/// What a run of the tool left: exit code and output.
#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Exited 0; the stdout.
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "annals failed: {self:?}");
        self.stdout
    }

    /// Exited 0 with a JSON document.
    fn json(self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
    }

    /// Exited with `code` and one line on stderr containing every part.
    fn failed(self, code: i32, parts: &[&str]) {
        assert_eq!(self.code, code, "exit code: {self:?}");
        let message = self.stderr.trim_end();
        assert_eq!(message.lines().count(), 1, "one line: {self:?}");
        assert!(message.starts_with("annals: "), "{self:?}");
        for part in parts {
            assert!(message.contains(part), "stderr lacks {part:?}: {self:?}");
        }
    }
}

/// What the seed wrote.
struct Seeded {
    /// acme's `user-1`, version 1 (tag `email:ada@example.test`,
    /// correlation key `req-1`).
    first: RecordedEvent,
    /// The last event of the log.
    head: LogPosition,
    /// A dead letter for acme's `user-2`.
    letter: DeadLetter,
}

/// A seeded store and the options naming it.
struct Target {
    backend: &'static str,
    test: TestStore,
    /// `--database-url` (and `--schema`) of the owner.
    args: Vec<String>,
    /// The same for a role a `--tenant` handle may use (PostgreSQL confines
    /// tenants by row-level security, which the owner bypasses).
    tenant_args: Vec<String>,
    keys: Arc<dyn SubjectKeyStore>,
    seeded: Seeded,
}

impl Target {
    async fn sqlite() -> Target {
        let test = TestStore::sqlite().await;
        let path = test
            .dir()
            .expect("a SQLite store has a directory")
            .join("events.db");
        let url = format!("sqlite:{}", path.display());
        let keys: Arc<dyn SubjectKeyStore> = Arc::new(
            SqliteEventStore::builder(&path)
                .open()
                .await
                .expect("reopen for keys"),
        );
        let args = vec!["--database-url".to_owned(), url];
        Target::seed("sqlite", test, args.clone(), args, keys).await
    }

    async fn postgres() -> Target {
        let schema = format!("cli_{}", Uuid::now_v7().simple());
        let owner = PostgresEventStore::builder(postgres_url())
            .schema(schema.clone())
            .connect()
            .await
            .expect("connect to the test PostgreSQL");
        let role = application_role(&owner).await;
        let keys: Arc<dyn SubjectKeyStore> = Arc::new(owner.clone());
        let args = vec![
            "--database-url".to_owned(),
            postgres_url(),
            "--schema".to_owned(),
            schema.clone(),
        ];
        let tenant_args = vec![
            "--database-url".to_owned(),
            postgres_url_as(&role),
            "--schema".to_owned(),
            schema,
        ];
        Target::seed(
            "postgres",
            TestStore::from_postgres(owner),
            args,
            tenant_args,
            keys,
        )
        .await
    }

    async fn seed(
        backend: &'static str,
        test: TestStore,
        args: Vec<String>,
        tenant_args: Vec<String>,
        keys: Arc<dyn SubjectKeyStore>,
    ) -> Target {
        let store = test.store.clone();
        let event = |tenant: Option<&str>, kind: &str, body: Value| {
            let mut metadata = Metadata::new().with_correlation_key("req-1");
            metadata.tenant_id = tenant.map(str::to_owned);
            NewEvent::json(kind, &body)
                .expect("JSON")
                .with_metadata(metadata)
        };
        let append = |id: &str, events: Vec<NewEvent>| {
            let store = store.clone();
            let id = StreamId::new(id).expect("stream id");
            async move {
                store
                    .append(&id, ExpectedVersion::NoStream, events)
                    .await
                    .expect("seed append")
            }
        };
        append(
            "user-1",
            vec![
                event(
                    Some("acme"),
                    "test.cli.registered",
                    json!({ "email": "ada@example.test" }),
                )
                .with_tags(["email:ada@example.test"]),
                event(
                    Some("acme"),
                    "test.cli.renamed",
                    json!({ "name": "<script>alert(1)</script>" }),
                ),
            ],
        )
        .await;
        let mut other = event(
            Some("acme"),
            "test.cli.registered",
            json!({ "email": "bob@example.test" }),
        );
        other.metadata = Metadata::new().with_correlation_key("req-2");
        other.metadata.tenant_id = Some("acme".to_owned());
        append("user-2", vec![other.with_tags(["email:bob@example.test"])]).await;
        append(
            "user-1",
            vec![event(
                Some("globex"),
                "test.cli.registered",
                json!({ "email": "eve@example.test" }),
            )],
        )
        .await;
        append("system-1", vec![event(None, "test.cli.booted", json!({}))]).await;
        // A query, not the gap-safe log: other tests' open transactions on
        // the same server hold the log's horizon back.
        let log = store
            .query(&annals::store::EventQuery::new())
            .await
            .expect("read the seed back")
            .events;
        assert_eq!(log.len(), 5, "the seed");
        let first = log[0].clone();
        let head = log.last().expect("seeded").position;
        let user_2 = log
            .iter()
            .find(|e| e.stream_id.as_str() == "user-2")
            .expect("user-2")
            .clone();

        let checkpoints = store.checkpoints();
        let lease = checkpoints
            .acquire("mailer", "worker-a", Duration::from_secs(600))
            .await
            .expect("acquire")
            .expect("free");
        checkpoints
            .commit(&lease, LogPosition::START, first.position)
            .await
            .expect("commit");
        checkpoints
            .save("projection:directory:v1", head)
            .await
            .expect("save");
        let letter = DeadLetter {
            id: Uuid::now_v7(),
            handler: "mailer".into(),
            event_id: user_2.event_id,
            stream_id: user_2.stream_id.clone(),
            version: 1,
            event_type: user_2.event_type.clone(),
            error: "smtp: connection refused".into(),
            attempts: 5,
            failed_at: chrono::Utc::now(),
            retry_requested_at: None,
        };
        store
            .dead_letters()
            .save(letter.clone())
            .await
            .expect("save dead letter");
        Target {
            backend,
            test,
            args,
            tenant_args,
            keys,
            seeded: Seeded {
                first,
                head,
                letter,
            },
        }
    }

    /// Runs `annals` with the owner's options and `arguments`.
    async fn run(&self, arguments: &[&str]) -> Outcome {
        run_with(&self.args, arguments).await
    }

    /// Runs `annals` confined to `tenant`.
    async fn run_as_tenant(&self, tenant: &str, arguments: &[&str]) -> Outcome {
        let mut all = vec!["--tenant", tenant];
        all.extend_from_slice(arguments);
        run_with(&self.tenant_args, &all).await
    }
}

async fn run_with(options: &[String], arguments: &[&str]) -> Outcome {
    let output = Command::new(ANNALS)
        .args(options)
        .args(arguments)
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("run annals");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Each case once on a SQLite file and once on a PostgreSQL schema.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Target::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Target::postgres().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    status_shows_counts_readers_and_dead_letters,
    streams_are_listed_filtered_paged_and_shown,
    a_tenant_sees_only_its_own,
    events_are_queried_by_type_correlation_and_tag,
    follow_prints_events_as_they_are_committed,
    a_subscription_is_moved_and_a_projection_is_not,
    dead_letters_are_listed_shown_and_discarded,
    verify_finds_a_tampered_event,
    forget_shreds_a_subject,
    migrate_reports_applies_and_prints_the_schema,
    bad_input_gets_one_line_and_an_exit_code,
    pause_and_resume_reach_a_running_subscription,
    a_dead_letter_retried_from_the_tool_is_run_by_the_service,
    export_and_import_move_the_log_exactly,
    a_damaged_export_imports_nothing,
);

async fn status_shows_counts_readers_and_dead_letters(t: Target) {
    let status = t.run(&["--json", "status"]).await.json();
    assert_eq!(status["healthy"], true);
    assert_eq!(status["store"]["backend"], t.backend);
    assert_eq!(status["events"]["total"], 5);
    assert_eq!(status["events"]["last_hour"], 5);
    assert_eq!(status["events"]["head"], t.seeded.head.to_string());
    assert_eq!(status["dead_letters"], 1);
    let readers = status["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 2, "{readers:?}");
    let mailer = &readers[0];
    assert_eq!(mailer["name"], "mailer");
    assert_eq!(mailer["kind"], "subscription");
    assert_eq!(mailer["owner"], "worker-a");
    assert_eq!(mailer["owned"], true);
    assert_eq!(mailer["position"], t.seeded.first.position.to_string());
    assert_eq!(
        mailer["lag_events"],
        t.seeded.head.sequence - t.seeded.first.position.sequence
    );
    let projection = &readers[1];
    assert_eq!(projection["name"], "projection:directory:v1");
    assert_eq!(projection["kind"], "projection");
    assert_eq!(projection["lag_events"], 0);
    assert_eq!(projection["owned"], false);

    let table = t.run(&["status"]).await.ok();
    for part in [
        "5 in all",
        "projection:directory:v1",
        "mailer",
        "worker-a",
        "dead letters   1",
    ] {
        assert!(table.contains(part), "status lacks {part:?}:\n{table}");
    }
    let projections = t.run(&["--json", "projections", "status"]).await.json();
    assert_eq!(projections["readers"].as_array().map(Vec::len), Some(1));
    let subscriptions = t.run(&["--json", "subscriptions", "status"]).await.json();
    assert_eq!(subscriptions["readers"][0]["name"], "mailer");
}

async fn streams_are_listed_filtered_paged_and_shown(t: Target) {
    let listed = t.run(&["--json", "streams", "list"]).await.json();
    let ids: Vec<(String, Value)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["stream_id"].as_str().unwrap_or("").to_owned(),
                s["tenant_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("system-1".to_owned(), Value::Null),
            ("user-1".to_owned(), json!("acme")),
            ("user-1".to_owned(), json!("globex")),
            ("user-2".to_owned(), json!("acme")),
        ]
    );
    assert_eq!(listed[1]["version"], 2);

    let users = t
        .run(&[
            "--json", "streams", "list", "--prefix", "user-", "--limit", "2",
        ])
        .await
        .json();
    assert_eq!(users.as_array().map(Vec::len), Some(2));
    assert_eq!(users[1]["tenant_id"], "globex");
    let table = t
        .run(&["streams", "list", "--prefix", "user-", "--limit", "2"])
        .await
        .ok();
    assert!(table.contains("the first 2"), "{table}");

    // One tenant's stream by an id two tenants use.
    let shown = t
        .run_as_tenant("acme", &["--json", "streams", "show", "user-1"])
        .await
        .json();
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["events"][1]["event_type"], "test.cli.renamed");
    assert_eq!(
        shown["events"][1]["payload"]["name"], "<script>alert(1)</script>",
        "payloads are shown as stored"
    );
    // The unscoped store cannot tell which one is meant, and says so.
    t.run(&["streams", "show", "user-1"])
        .await
        .failed(2, &["user-1"]);
    t.run(&["streams", "show", "nobody-1"])
        .await
        .failed(3, &["no stream \"nobody-1\""]);
}

async fn a_tenant_sees_only_its_own(t: Target) {
    let streams = t
        .run_as_tenant("globex", &["--json", "streams", "list"])
        .await
        .json();
    assert_eq!(
        streams.as_array().map(Vec::len),
        Some(1),
        "globex has one stream: {streams}"
    );
    assert_eq!(streams[0]["tenant_id"], "globex");
    let events = t
        .run_as_tenant(
            "globex",
            &["--json", "events", "--type", "test.cli.registered"],
        )
        .await
        .json();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
    assert_eq!(events[0]["payload"]["email"], "eve@example.test");
    // Another tenant's event, stream and dead letter do not exist for it.
    t.run_as_tenant("globex", &["event", &t.seeded.first.event_id.to_string()])
        .await
        .failed(3, &["no event"]);
    t.run_as_tenant("globex", &["streams", "show", "user-2"])
        .await
        .failed(3, &["user-2"]);
    let letters = t
        .run_as_tenant("globex", &["--json", "dead-letters", "list"])
        .await
        .json();
    assert_eq!(letters, json!([]));
    let status = t
        .run_as_tenant("globex", &["--json", "status"])
        .await
        .json();
    assert_eq!(status["events"]["total"], 1);
}

async fn events_are_queried_by_type_correlation_and_tag(t: Target) {
    let registered = t
        .run(&["--json", "events", "--type", "test.cli.registered"])
        .await
        .json();
    assert_eq!(registered.as_array().map(Vec::len), Some(3));
    let by_key = t
        .run(&["--json", "events", "--correlation-key", "req-2"])
        .await
        .json();
    assert_eq!(by_key.as_array().map(Vec::len), Some(1));
    assert_eq!(by_key[0]["stream_id"], "user-2");
    let by_tag = t
        .run(&["--json", "events", "--tag", "email:ada@example.test"])
        .await
        .json();
    assert_eq!(by_tag[0]["event_id"], t.seeded.first.event_id.to_string());
    let first_two = t.run(&["--json", "events", "--limit", "2"]).await.json();
    assert_eq!(first_two.as_array().map(Vec::len), Some(2));
    let none = t
        .run(&["--json", "events", "--until", "2000-01-01T00:00:00Z"])
        .await
        .json();
    assert_eq!(none, json!([]));

    let id = t.seeded.first.event_id.to_string();
    let event = t.run(&["--json", "event", &id]).await.json();
    assert_eq!(event["stream_id"], "user-1");
    assert_eq!(event["metadata"]["tenant_id"], "acme");
    assert_eq!(event["tags"], json!(["email:ada@example.test"]));
    let detail = t.run(&["event", &id]).await.ok();
    assert!(
        detail.contains("\"email\": \"ada@example.test\""),
        "{detail}"
    );
    assert!(detail.contains("test.cli.registered"), "{detail}");
    t.run(&["event", &Uuid::now_v7().to_string()])
        .await
        .failed(3, &["no event"]);
}

async fn follow_prints_events_as_they_are_committed(t: Target) {
    let mut child = Command::new(ANNALS)
        .args(&t.args)
        .args([
            "--json",
            "events",
            "--follow",
            "--after",
            &t.seeded.head.to_string(),
        ])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start annals events --follow");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut appended = Vec::new();
    for n in 0..3 {
        let event = NewEvent::json("test.cli.followed", &json!({ "n": n })).expect("JSON");
        appended.push(event.event_id.to_string());
        t.test
            .store
            .append(
                &StreamId::new(format!("followed-{n}")).expect("id"),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .expect("append");
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a followed event within 20 s")
            .expect("read stdout")
            .expect("the follower is still running");
        let event: Value = serde_json::from_str(&line).expect("one JSON event per line");
        seen.push(event["event_id"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(
        seen, appended,
        "every event after the start, once, in order"
    );

    // Ctrl-C stops it with the conventional code.
    assert_eq!(interrupt(&mut child).await, Some(130));

    // Whoever reads stdout stops (`annals events | head`): the next write
    // ends the follower quietly, with 0.
    let mut reader = Command::new(ANNALS)
        .args(&t.args)
        .args(["events", "--follow", "--after", &t.seeded.head.to_string()])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start a follower");
    drop(reader.stdout.take());
    append_one(&t, "after-the-pipe-closed", "test.cli.followed").await;
    let quiet = tokio::time::timeout(Duration::from_secs(20), reader.wait_with_output())
        .await
        .expect("the follower ends within 20 s of its closed pipe")
        .expect("wait");
    assert_eq!(quiet.status.code(), Some(0), "{quiet:?}");
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("annals:"),
        "no error: {quiet:?}"
    );
}

async fn a_subscription_is_moved_and_a_projection_is_not(t: Target) {
    let moved = t
        .run(&["--json", "subscriptions", "reset", "mailer", "--to", "0/0"])
        .await
        .json();
    assert_eq!(moved["from"], t.seeded.first.position.to_string());
    assert_eq!(moved["to"], "0/0");
    let checkpoint = t
        .test
        .store
        .checkpoints()
        .load("mailer")
        .await
        .expect("load")
        .expect("a row");
    assert_eq!(checkpoint.position, LogPosition::START);
    assert_eq!(
        checkpoint.owner.as_deref(),
        Some("worker-a"),
        "the lease stays"
    );

    t.run(&[
        "subscriptions",
        "reset",
        "projection:directory:v1",
        "--to",
        "0/0",
    ])
    .await
    .failed(2, &["projection:directory:v1", "projection"]);
    let projection = t
        .test
        .store
        .checkpoints()
        .load("projection:directory:v1")
        .await
        .expect("load")
        .expect("a row");
    assert_eq!(projection.position, t.seeded.head, "not moved");
    t.run(&["subscriptions", "reset", "nobody", "--to", "0/0"])
        .await
        .failed(3, &["nobody"]);
    let beyond = LogPosition::new(t.seeded.head.commit + 1000, t.seeded.head.sequence + 1000);
    t.run(&[
        "subscriptions",
        "reset",
        "mailer",
        "--to",
        &beyond.to_string(),
    ])
    .await
    .failed(2, &["beyond the head"]);
    t.run(&["subscriptions", "reset", "mailer", "--to", "seven"])
        .await
        .failed(2, &["seven"]);
}

async fn dead_letters_are_listed_shown_and_discarded(t: Target) {
    let id = t.seeded.letter.id.to_string();
    let listed = t.run(&["--json", "dead-letters", "list"]).await.json();
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["error"], "smtp: connection refused");
    let shown = t.run(&["--json", "dead-letters", "show", &id]).await.json();
    assert_eq!(shown["event"]["payload"]["email"], "bob@example.test");
    let table = t.run(&["dead-letters", "show", &id]).await.ok();
    assert!(table.contains("smtp: connection refused"), "{table}");

    t.run(&["dead-letters", "discard", &id]).await.ok();
    assert_eq!(
        t.test
            .store
            .dead_letters()
            .get(t.seeded.letter.id)
            .await
            .expect("get"),
        None
    );
    t.run(&["dead-letters", "discard", &id])
        .await
        .failed(3, &["no dead letter", &id]);
    t.run(&["dead-letters", "show", &id])
        .await
        .failed(3, &["no dead letter"]);
}

async fn verify_finds_a_tampered_event(t: Target) {
    let intact = t.run(&["--json", "verify"]).await.json();
    assert_eq!(intact["intact"], true);
    assert_eq!(intact["events_checked"], 5);
    assert_eq!(intact["streams_checked"], 4);
    let one = t
        .run(&["--json", "verify", "--stream", "system-1"])
        .await
        .json();
    assert_eq!(one["events_checked"], 1);

    tamper_user_2(&t).await;
    t.run(&["verify", "--no-progress"])
        .await
        .failed(4, &["broken", "user-2", "version 1"]);
    let report = run_with(&t.args, &["--json", "verify"]).await;
    assert_eq!(report.code, 4);
    let report: Value = serde_json::from_str(&report.stdout).expect("a JSON report");
    assert_eq!(report["first_break"]["stream_id"], "user-2");
}

async fn forget_shreds_a_subject(t: Target) {
    let master = MasterKey::generate();
    let pii = PiiEventStore::new(t.test.store.clone(), t.keys.clone(), master.clone());
    let member = StreamId::new("member-m1").expect("id");
    let event = NewEvent::from_event(&joined("m1", "ada@example.test")).expect("event");
    pii.append(&member, ExpectedVersion::NoStream, vec![event])
        .await
        .expect("append personal data");

    let forgotten = t.run(&["--json", "forget", "m1"]).await.json();
    assert_eq!(forgotten["subject"], "m1");
    assert_eq!(forgotten["streams"], json!(["member-m1"]));

    // A reader that never saw the key reads the field as redacted.
    let fresh = PiiEventStore::new(t.test.store.clone(), t.keys.clone(), master);
    let events = fresh.read_stream(&member, 1, 10).await.expect("read");
    assert_eq!(events[0].payload.to_value()["email"], "[redacted]");
    assert_eq!(events[0].payload.to_value()["plan"], "pro");
}

async fn migrate_reports_applies_and_prints_the_schema(t: Target) {
    let status = t.run(&["--json", "migrate", "status"]).await.json();
    assert_eq!(status["current"], true);
    assert_eq!(status["pending"], json!([]));
    assert_eq!(status["version"], status["supported"]);
    let sql = t.run(&["migrate", "sql"]).await.ok();
    assert!(sql.contains("nothing pending"), "{sql}");

    // An empty place: nothing there, nothing created by looking.
    let (empty, cleanup) = empty_place(t.backend);
    let looked = run_with(&empty, &["status"]).await;
    match t.backend {
        "sqlite" => looked.failed(3, &["no SQLite file"]),
        _ => {
            looked.failed(5, &["no Annals tables", "migrate apply"]);
            // Looking created no schema (a non-migrating connect used to).
            let schema = &empty[3];
            let dba = sqlx::PgPool::connect(&postgres_url())
                .await
                .expect("connect");
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(schema)
                    .fetch_one(&dba)
                    .await
                    .expect("look up the schema");
            assert!(!exists, "annals status created schema {schema}");
            dba.close().await;
        }
    }
    let pending = run_with(&empty, &["migrate", "sql"]).await;
    match t.backend {
        "sqlite" => pending.failed(3, &["no SQLite file"]),
        _ => {
            let sql = pending.ok();
            assert!(sql.contains("CREATE TABLE annals_events"), "{sql}");
        }
    }
    let applied = run_with(&empty, &["--json", "migrate", "apply"])
        .await
        .json();
    assert_eq!(applied["version"], status["supported"]);
    assert_eq!(
        applied["applied"].as_array().map(Vec::len),
        status["supported"].as_u64().map(|n| n as usize)
    );
    let now = run_with(&empty, &["--json", "status"]).await.json();
    assert_eq!(now["events"]["total"], 0);
    let again = run_with(&empty, &["migrate", "apply"]).await.ok();
    assert!(again.contains("nothing to apply"), "{again}");
    drop(cleanup);
}

/// The options naming a place on `backend` that holds nothing yet: a file
/// that does not exist (in the directory returned) or a schema that does
/// not.
fn empty_place(backend: &str) -> (Vec<String>, Option<tempfile::TempDir>) {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite:{}", dir.path().join("new.db").display());
            (vec!["--database-url".to_owned(), url], Some(dir))
        }
        _ => (
            vec![
                "--database-url".to_owned(),
                postgres_url(),
                "--schema".to_owned(),
                format!("cli_new_{}", Uuid::now_v7().simple()),
            ],
            None,
        ),
    }
}

/// An empty place with the schema applied, as an operator prepares an
/// import's target.
async fn empty_store(backend: &str) -> (Vec<String>, Option<tempfile::TempDir>) {
    let (place, dir) = empty_place(backend);
    run_with(&place, &["migrate", "apply"]).await.ok();
    (place, dir)
}

/// How many events the store holds, by `annals status`.
async fn total_events(place: &[String]) -> u64 {
    let status = run_with(place, &["--json", "status"]).await.json();
    status["events"]["total"].as_u64().expect("a total")
}

/// An export's lines as JSON.
fn export_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

/// An export's event lines and trailer without what belongs to the
/// store or the moment it was written: the header and each position.
fn portable(lines: &[Value]) -> Vec<Value> {
    lines[1..]
        .iter()
        .map(|line| {
            let mut line = line.clone();
            if let Some(fields) = line.as_object_mut() {
                fields.remove("position");
            }
            line
        })
        .collect()
}

/// The store a place names, opened through the library (with its key
/// tables).
async fn open_place(place: &[String]) -> (Arc<dyn EventStore>, Arc<dyn SubjectKeyStore>) {
    match place {
        [_, url] => {
            let path = url.strip_prefix("sqlite:").expect("a sqlite: URL");
            let store = SqliteEventStore::builder(path)
                .migrate(false)
                .open()
                .await
                .expect("open the SQLite file");
            (Arc::new(store.clone()), Arc::new(store))
        }
        [_, url, _, schema] => {
            let store = PostgresEventStore::builder(url.clone())
                .schema(schema.clone())
                .migrate(false)
                .connect()
                .await
                .expect("connect");
            (Arc::new(store.clone()), Arc::new(store))
        }
        other => panic!("not a place: {other:?}"),
    }
}

async fn export_and_import_move_the_log_exactly(t: Target) {
    // Personal data, under a key the import must bring along; and a
    // forgotten subject, which must stay forgotten.
    let master = MasterKey::generate();
    let pii = PiiEventStore::new(t.test.store.clone(), t.keys.clone(), master.clone());
    join_members(&pii, &["m1", "m2"]).await;
    t.run(&["forget", "m2"]).await.ok();

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("log.jsonl");
    let file = file.to_str().expect("a UTF-8 path");
    let summary = t.run(&["--json", "export", "-o", file]).await.json();
    assert_eq!(summary["events"], 7);
    assert_eq!(
        summary["streams"], 6,
        "user-1 of acme and of globex, user-2, system-1, member-m1, member-m2"
    );
    assert_eq!(summary["subject_keys"], 2, "m1's key and m2's tombstone");
    let exported = std::fs::read_to_string(file).expect("the export");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner alone");
    let lines = export_lines(&exported);
    assert_eq!(lines.len(), 11, "header, seven events, two keys, trailer");
    assert_eq!(lines[8]["subject_key"]["subject"], "m1");
    assert!(lines[9]["subject_key"]["wrapped_key"].is_null());
    assert_eq!(lines[0]["annals_export"], 1);
    assert_eq!(lines[0]["source"], t.backend);
    assert_eq!(lines[1]["event_id"], t.seeded.first.event_id.to_string());
    assert_eq!(lines[1]["tags"], json!(["email:ada@example.test"]));
    assert_eq!(lines[1]["metadata"]["tenant_id"], "acme");
    assert_eq!(
        lines[2]["payload"]["name"], "<script>alert(1)</script>",
        "payloads are the JSON they are"
    );
    assert_eq!(lines[10]["annals_export_end"]["digest"], summary["digest"]);
    // An existing file is kept unless --force.
    t.run(&["export", "-o", file])
        .await
        .failed(2, &["exists", "--force"]);
    t.run(&["export", "-o", file, "--force"]).await.ok();
    // On stdout, the file is the output.
    let piped = t.run(&["export"]).await.ok();
    assert_eq!(portable(&export_lines(&piped)), portable(&lines));

    // Into the other backend, and back out: the same events, links and
    // digest; the target's own chain holds.
    let other = if t.backend == "sqlite" {
        "postgres"
    } else {
        "sqlite"
    };
    let (target, _target_dir) = empty_store(other).await;
    let mut import = vec!["--json", "import", file];
    let imported = run_with(&target, &import).await.json();
    assert_eq!(imported["events"], 7);
    assert_eq!(imported["streams"], 6);
    assert_eq!(imported["subject_keys"], 2);
    assert_eq!(imported["source"], t.backend);
    let again = export_lines(&run_with(&target, &["export"]).await.ok());
    assert_eq!(again[0]["source"], other);
    assert_eq!(portable(&again), portable(&lines));
    let verified = run_with(&target, &["--json", "verify"]).await.json();
    assert_eq!(verified["intact"], true);
    assert_eq!(verified["events_checked"], 7);
    // The personal data opens there with the same master key; the
    // forgotten subject's does not.
    let (events, keys) = open_place(&target).await;
    let reader = PiiEventStore::new(events, keys, master);
    let read = |member: &'static str| {
        let reader = reader.clone();
        async move {
            reader
                .read_stream(
                    &StreamId::new(format!("member-{member}")).expect("id"),
                    1,
                    10,
                )
                .await
                .expect("read")[0]
                .payload
                .to_value()["email"]
                .clone()
        }
    };
    assert_eq!(read("m1").await, "m1@example.test");
    assert_eq!(read("m2").await, "[redacted]");
    // A subscription whose effects must not repeat starts at the head of
    // the imported log instead of its beginning.
    let head = imported["last_position"].as_str().expect("a position");
    run_with(&target, &["subscriptions", "reset", "mailer", "--to", head])
        .await
        .failed(3, &["mailer", "--create"]);
    let created = run_with(
        &target,
        &[
            "--json",
            "subscriptions",
            "reset",
            "mailer",
            "--to",
            head,
            "--create",
        ],
    )
    .await
    .json();
    assert_eq!(created["from"], Value::Null);
    let status = run_with(&target, &["--json", "subscriptions", "status"])
        .await
        .json();
    assert_eq!(status["readers"][0]["name"], "mailer");
    assert_eq!(status["readers"][0]["position"], head);
    assert_eq!(status["readers"][0]["lag_events"], 0);
    let shown = run_with(
        &target,
        &["--json", "event", &t.seeded.first.event_id.to_string()],
    )
    .await
    .json();
    assert_eq!(
        shown["recorded_at"],
        serde_json::to_value(t.seeded.first.recorded_at).expect("a time"),
        "the time it was first recorded"
    );
    // Into the same backend: every line but the positions byte for byte.
    let (same, _same_dir) = empty_store(t.backend).await;
    run_with(&same, &import).await.json();
    let copy = run_with(&same, &["export"]).await.ok();
    let strip_positions = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .map(|line| match line.find(r#""position":""#) {
                Some(start) => {
                    let end = line[start + 12..]
                        .find('"')
                        .map_or(line.len(), |n| start + 13 + n);
                    format!("{}{}", &line[..start], &line[end..])
                }
                None => line.to_owned(),
            })
            .collect()
    };
    assert_eq!(strip_positions(&copy), strip_positions(&exported));

    // A key changed in the file is named, and nothing is imported.
    let wrapped = lines[8]["subject_key"]["wrapped_key"]
        .as_str()
        .expect("m1's wrapped key");
    let flipped = if wrapped.starts_with('0') { "1" } else { "0" };
    let changed_key = exported.replacen(wrapped, &format!("{flipped}{}", &wrapped[1..]), 1);
    let changed_file = dir.path().join("changed-key.jsonl");
    std::fs::write(&changed_file, changed_key).expect("write");
    let (fresh, _fresh_dir) = empty_store(t.backend).await;
    run_with(&fresh, &["import", changed_file.to_str().expect("UTF-8")])
        .await
        .failed(
            2,
            &["line 9", "key of subject `m1`", "does not match its link"],
        );
    assert_eq!(total_events(&fresh).await, 0);

    // One tenant's events alone, from a handle confined to it.
    let acme = export_lines(&t.run_as_tenant("acme", &["export"]).await.ok());
    assert_eq!(acme[0]["tenant"], "acme");
    assert_eq!(acme.len(), 5, "header, acme's three events, trailer");
    assert!(
        acme[1..4]
            .iter()
            .all(|line| line["metadata"]["tenant_id"] == "acme")
    );

    // Importing where the streams already are: refused, nothing written.
    import.remove(0);
    t.run(&import)
        .await
        .failed(1, &["nothing was imported", "user-1"]);
    assert_eq!(total_events(&t.args).await, 7);
}

async fn a_damaged_export_imports_nothing(t: Target) {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = t.run(&["export"]).await.ok();
    let lines: Vec<&str> = good.lines().collect();
    let (target, _target_dir) = empty_store(t.backend).await;
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write the damaged file");
        path.to_str().expect("UTF-8").to_owned()
    };
    let import = |path: String| {
        let target = target.clone();
        async move { run_with(&target, &["import", &path]).await }
    };
    // Every damage ends the import with one line naming where, exit 2:
    // the earlier lines' events, already written in the transaction, are
    // rolled back.
    let mut cut_json = lines.clone();
    let broken = cut_json[5][..20].to_owned();
    cut_json[5] = &broken;
    import(write("bad-json.jsonl", cut_json.join("\n")))
        .await
        .failed(2, &["line 6 is not an event", "nothing was imported"]);
    let edited = good.replacen("bob@example.test", "mallory@example.test", 1);
    assert_ne!(edited, good);
    import(write("edited.jsonl", edited))
        .await
        .failed(2, &["does not match its link", "changed"]);
    import(write("cut.jsonl", lines[..6].join("\n")))
        .await
        .failed(2, &["line 6", "without its trailer", "cut short"]);
    let mut spliced = lines.clone();
    spliced.remove(4);
    import(write("spliced.jsonl", spliced.join("\n")))
        .await
        .failed(2, &["trailer", "4 in 3", "spliced"]);
    let mut reordered = lines.clone();
    reordered.swap(2, 3);
    import(write("reordered.jsonl", reordered.join("\n")))
        .await
        .failed(2, &["trailer"]);
    let mut gap = lines.clone();
    gap.remove(1);
    import(write("gap.jsonl", gap.join("\n")))
        .await
        .failed(2, &["line 2", "user-1", "version 2 after none"]);
    import(write("not-an-export.jsonl", "hello\n".to_owned()))
        .await
        .failed(2, &["line 1", "not an Annals export"]);
    import(write("empty.jsonl", String::new()))
        .await
        .failed(2, &["empty"]);
    import(dir.path().join("missing.jsonl").display().to_string())
        .await
        .failed(3, &["no export file"]);
    assert_eq!(total_events(&target).await, 0, "nothing was written");

    // Ctrl-C in the middle: the events already sent are rolled back.
    let mut child = Command::new(ANNALS)
        .args(&target)
        .args(["import", "-"])
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start annals import -");
    let mut stdin = child.stdin.take().expect("piped");
    use tokio::io::AsyncWriteExt;
    stdin
        .write_all(format!("{}\n", lines[..5].join("\n")).as_bytes())
        .await
        .expect("send four events");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(interrupt(&mut child).await, Some(130));
    drop(stdin);
    assert_eq!(total_events(&target).await, 0, "nothing was written");

    // The whole file, at last, goes in.
    let whole = write("good.jsonl", good.clone());
    run_with(&target, &["import", "--no-progress", &whole])
        .await
        .ok();
    assert_eq!(total_events(&target).await, 5);

    // A tampered store is not exported (a backup would launder it).
    tamper_user_2(&t).await;
    let refused_file = dir.path().join("refused.jsonl");
    let refused_path = refused_file.to_str().expect("UTF-8");
    t.run(&["export", "-o", refused_path])
        .await
        .failed(4, &["nothing exported", "broken", "user-2", "--no-verify"]);
    assert!(!refused_file.exists(), "no file for a refused export");
    t.run(&["export", "--no-verify", "-o", refused_path])
        .await
        .ok();
    assert!(refused_file.exists());
}

async fn bad_input_gets_one_line_and_an_exit_code(t: Target) {
    run_with(&[], &["status"])
        .await
        .failed(2, &["--database-url", "DATABASE_URL"]);
    run_with(
        &[
            "--database-url".to_owned(),
            "mysql://root:hunter2@db/app".to_owned(),
        ],
        &["status"],
    )
    .await
    .failed(2, &["mysql://root:***@db/app"]);
    let unreachable = run_with(
        &[
            "--database-url".to_owned(),
            "postgres://annals:hunter2@127.0.0.1:1/annals".to_owned(),
        ],
        &["status"],
    )
    .await;
    assert!(!unreachable.stderr.contains("hunter2"), "{unreachable:?}");
    unreachable.failed(1, &["127.0.0.1:1"]);
    let usage = t.run(&["event", "not-a-uuid"]).await;
    assert_eq!(usage.code, 2, "{usage:?}");
    assert!(usage.stderr.contains("not-a-uuid"), "{usage:?}");
    t.run(&["events", "--since", "yesterday"])
        .await
        .code
        .eq(&2)
        .then_some(())
        .expect("a bad time is a usage error");
    t.run(&["streams", "show", " padded"])
        .await
        .failed(2, &["stream id", "whitespace"]);
    t.run(&["--table-prefix", "nope_", "status"])
        .await
        .failed(5, &["no Annals tables"]);
    if t.backend == "postgres" {
        // The owner passes row-level security by: a tenant handle on it
        // would not be confined, so it is refused.
        let refused = t.run(&["--tenant", "acme", "status"]).await;
        assert_eq!(refused.code, 2, "{refused:?}");
        assert!(refused.stderr.contains("role"), "{refused:?}");
    }
}

/// On PostgreSQL an event committed after an older, still open
/// transaction is beyond a gap-safe read until that transaction ends: the
/// export waits for it instead of leaving the event out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_waits_for_events_an_open_transaction_holds_back() {
    let t = Target::postgres().await;
    let schema = t.args[3].clone();
    let pool = sqlx::PgPool::connect(&postgres_url())
        .await
        .expect("connect");
    let mut open = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .expect("take a transaction id");
    append_one(&t, "committed-after", "test.cli.late").await;
    let export = tokio::spawn({
        let args = t.args.clone();
        async move { run_with(&args, &["export", "--no-progress"]).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !export.is_finished(),
        "the export waits for the open transaction"
    );
    open.rollback().await.expect("end the open transaction");
    let exported = tokio::time::timeout(Duration::from_secs(20), export)
        .await
        .expect("the export ends once the transaction does")
        .expect("join")
        .ok();
    let lines = export_lines(&exported);
    assert_eq!(lines.len(), 8, "header, six events, trailer: {schema}");
    assert_eq!(lines[6]["stream_id"], "committed-after");
    pool.close().await;
}

/// A store signing its chain with a key: `verify` needs the key, given on
/// the command line or in ANNALS_CHAIN_KEYS, and says which one it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_a_keyed_store_takes_its_keys() {
    use annals::hash_chain::{ChainKey, ChainKeys};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keyed.db");
    let secret = "7f".repeat(32);
    let keyed = SqliteEventStore::builder(&path)
        .chain_keys(ChainKeys::new(ChainKey::from_hex(3, &secret).expect("key")))
        .open()
        .await
        .expect("open");
    let event = NewEvent::json("test.cli.signed", &json!({})).expect("JSON");
    keyed
        .append(
            &StreamId::new("signed-1").expect("id"),
            ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .expect("append");
    let url = vec![
        "--database-url".to_owned(),
        format!("sqlite:{}", path.display()),
    ];

    run_with(&url, &["verify", "--no-progress"])
        .await
        .failed(4, &["signed-1", "key 3"]);
    let with_key = format!("3:{secret}");
    let intact = run_with(&url, &["--json", "verify", "--chain-key", &with_key])
        .await
        .json();
    assert_eq!(intact["intact"], true);
    let from_env = Command::new(ANNALS)
        .args(&url)
        .args(["--json", "verify"])
        .env(
            "ANNALS_CHAIN_KEYS",
            format!("9:{},{with_key}", "01".repeat(32)),
        )
        .output()
        .await
        .expect("run annals");
    assert_eq!(from_env.status.code(), Some(0), "{from_env:?}");
    let wrong = run_with(&url, &["verify", "--chain-key", "3:abc"]).await;
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(!wrong.stderr.contains(&secret));

    // Export checks the chain with the keys; the importing store signs the
    // copy with the keys it is given.
    run_with(&url, &["export", "--no-progress"])
        .await
        .failed(4, &["nothing exported", "signed-1"]);
    let file = dir.path().join("signed.jsonl");
    let file = file.to_str().expect("UTF-8");
    run_with(
        &url,
        &[
            "export",
            "--no-progress",
            "--chain-key",
            &with_key,
            "-o",
            file,
        ],
    )
    .await
    .ok();
    let (copy, _copy_dir) = empty_store("sqlite").await;
    run_with(
        &copy,
        &["import", "--no-progress", "--chain-key", &with_key, file],
    )
    .await
    .ok();
    let signed = run_with(&copy, &["--json", "verify", "--chain-key", &with_key])
        .await
        .json();
    assert_eq!(signed["intact"], true);
    run_with(&copy, &["verify", "--no-progress"])
        .await
        .failed(4, &["signed-1", "key 3"]);
}

/// Counts what it is handed.
struct Tally(Arc<AtomicU64>);

#[annals::async_trait]
impl EventSink for Tally {
    async fn handle(&mut self, _: &RecordedEvent) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Changes the payload of `user-2`'s event behind Annals' back, as someone
/// with the database's credentials could: its link no longer matches.
async fn tamper_user_2(t: &Target) {
    let changed = t
        .test
        .tamper(
            "UPDATE annals_events SET payload = '{\"email\": \"mallory@example.test\"}' \
             WHERE stream_id = 'user-2'",
        )
        .await;
    assert_eq!(changed, Some(1));
}

/// Sends SIGINT (Ctrl-C) to a running `annals` and returns its exit code,
/// waiting up to 10 s for it to stop.
async fn interrupt(child: &mut tokio::process::Child) -> Option<i32> {
    let pid = child.id().expect("running").to_string();
    let signalled = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(signalled.success());
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("annals stops within 10 s of Ctrl-C")
        .expect("wait")
        .code()
}

/// Waits up to 20 s for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn append_one(t: &Target, stream: &str, kind: &str) {
    let event = NewEvent::json(kind, &json!({})).expect("JSON");
    t.test
        .store
        .append(
            &StreamId::new(stream).expect("id"),
            ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .expect("append");
}

/// A lease renewed every 100 ms: the running reader notices a pause fast.
fn quick_lease() -> LeaseSettings {
    LeaseSettings::new(Duration::from_millis(300))
}

async fn pause_and_resume_reach_a_running_subscription(t: Target) {
    let handled = Arc::new(AtomicU64::new(0));
    let running = Subscription::new(t.test.store.clone(), "tally")
        .lease(quick_lease())
        .poll_interval(Duration::from_millis(50))
        .start(Tally(handled.clone()));
    eventually("the seed delivered", || handled.load(Ordering::SeqCst) == 5).await;

    let paused = t
        .run(&["--json", "subscriptions", "pause", "tally"])
        .await
        .json();
    assert_eq!(paused["paused"], true);
    eventually("the owner pausing", || running.status().paused).await;
    append_one(&t, "paused-1", "test.cli.while_paused").await;
    append_one(&t, "paused-2", "test.cli.while_paused").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        5,
        "nothing delivered while paused"
    );
    let status = t.run(&["--json", "subscriptions", "status"]).await.json();
    let tally = status["readers"]
        .as_array()
        .and_then(|readers| readers.iter().find(|r| r["name"] == "tally"))
        .expect("tally listed")
        .clone();
    assert_eq!(tally["paused"], true);
    assert_eq!(tally["owned"], true, "a paused owner keeps its lease");
    let table = t.run(&["subscriptions", "status"]).await.ok();
    assert!(table.contains("paused"), "{table}");

    t.run(&["subscriptions", "resume", "tally"]).await.ok();
    eventually("the events after the pause", || {
        handled.load(Ordering::SeqCst) == 7
    })
    .await;
    assert!(!running.status().paused);

    t.run(&["subscriptions", "pause", "nobody"])
        .await
        .failed(3, &["nobody"]);
    t.run(&["projections", "pause", "tally"])
        .await
        .failed(3, &["no projection named \"tally\""]);
    t.run(&["subscriptions", "pause", "projection:directory:v1"])
        .await
        .failed(2, &["projections pause"]);
    // A projection by its bare name.
    let projection = t
        .run(&["--json", "projections", "pause", "directory"])
        .await
        .json();
    assert_eq!(projection["name"], "projection:directory:v1");

    // A rebuild request, by the projection's name: its owner acts on it
    // (tests/tests/readers/projection_runner.rs runs that part).
    let rebuild = t
        .run(&["--json", "projections", "rebuild", "directory"])
        .await
        .json();
    assert_eq!(rebuild["rebuild_requested"], true);
    let row = t
        .test
        .store
        .checkpoints()
        .load("projection:directory:v1")
        .await
        .expect("load")
        .expect("row");
    assert!(row.rebuild_requested);
    let status = t.run(&["projections", "status"]).await.ok();
    assert!(status.contains("paused"), "{status}");
    t.run(&["projections", "rebuild", "nobody"])
        .await
        .failed(3, &["nobody"]);
    running.stop().await.expect("stop");
}

async fn a_dead_letter_retried_from_the_tool_is_run_by_the_service(t: Target) {
    let broken = Arc::new(AtomicBool::new(true));
    let succeeded = Arc::new(AtomicU64::new(0));
    let handler = {
        let (broken, succeeded) = (broken.clone(), succeeded.clone());
        HandlerSpec::new("flaky", &["test.cli.flaky"], move |_event| {
            let (broken, succeeded) = (broken.clone(), succeeded.clone());
            Box::pin(async move {
                if broken.load(Ordering::SeqCst) {
                    return Err(BoxError::from("the mail server is down"));
                }
                succeeded.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        })
        .retry(RetryPolicy {
            attempts: 1,
            backoff: Duration::from_millis(1),
        })
    };
    let registry = HandlerRegistry::new(t.test.store.clone()).with(handler);
    let running = Subscription::new(t.test.store.clone(), "handlers")
        .lease(quick_lease())
        .poll_interval(Duration::from_millis(50))
        .start(registry);
    append_one(&t, "flaky-1", "test.cli.flaky").await;
    let letters = t.test.store.dead_letters();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dead letter within 20 s"
        );
        let found = letters
            .list(10)
            .await
            .expect("list")
            .into_iter()
            .find(|letter| letter.handler == "flaky");
        if let Some(found) = found {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = dead.id.to_string();

    // Still broken: the retry fails, the letter stays with the request
    // cleared and one more attempt counted.
    t.run(&["dead-letters", "retry", &id]).await.ok();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failed retry within 20 s"
        );
        let kept = letters.get(dead.id).await.expect("get").expect("kept");
        if kept.retry_requested_at.is_none() && kept.attempts > dead.attempts {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(succeeded.load(Ordering::SeqCst), 0);

    // Repaired: retried from the tool, the service runs it and the letter
    // leaves the list.
    broken.store(false, Ordering::SeqCst);
    let requested = t
        .run(&["--json", "dead-letters", "retry", &id])
        .await
        .json();
    assert_eq!(requested["retry_requested"], id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while letters.get(dead.id).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        succeeded.load(Ordering::SeqCst),
        1,
        "the handler ran once more"
    );
    let listed = t.run(&["--json", "dead-letters", "list"]).await.json();
    assert!(
        listed
            .as_array()
            .is_some_and(|all| all.iter().all(|l| l["id"] != id.as_str())),
        "{listed}"
    );
    t.run(&["dead-letters", "retry", &id])
        .await
        .failed(3, &["no dead letter"]);
    running.stop().await.expect("stop");
}

/// A log restored into another cluster with pg_dump/pg_restore: the tool
/// refuses it naming the fix (exit 5), `annals restamp` repairs it, and the
/// tool reads it afterwards; a second restamp finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restamp_repairs_a_log_restored_into_another_cluster() {
    let old = annals_tests::backends::OwnPostgres::start().await;
    old.use_transaction_ids(5_000);
    let source = PostgresEventStore::builder(old.url())
        .schema("moved")
        .connect()
        .await
        .expect("the old cluster's store");
    for n in 0..20 {
        source
            .append(
                &StreamId::new(format!("moved-{}", n % 3)).expect("id"),
                ExpectedVersion::Any,
                vec![NewEvent::json("cli.moved", &json!({ "n": n })).expect("event")],
            )
            .await
            .expect("append");
    }
    drop(source);
    let new = annals_tests::backends::OwnPostgres::start().await;
    old.dump_schema_into(&new, "moved");
    let options = vec![
        "--database-url".to_owned(),
        new.url(),
        "--schema".to_owned(),
        "moved".to_owned(),
    ];

    let refused = run_with(&options, &["status"]).await;
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("restored from another PostgreSQL cluster")
            && refused.stderr.contains("annals restamp"),
        "{}",
        refused.stderr
    );
    let tenant = run_with(&options, &["--tenant", "t1", "restamp"]).await;
    assert_eq!(tenant.code, 2, "{}", tenant.stderr);

    let restamped = run_with(&options, &["restamp"]).await;
    assert_eq!(restamped.code, 0, "{}", restamped.stderr);
    assert!(
        restamped.stdout.starts_with("re-stamped 20 events"),
        "{}",
        restamped.stdout
    );
    let status = run_with(&options, &["--json", "status"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let verify = run_with(&options, &["verify"]).await;
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    let again = run_with(&options, &["--json", "restamp"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report: Value = serde_json::from_str(&again.stdout).expect("JSON");
    assert_eq!(report["events"], 0);
}
