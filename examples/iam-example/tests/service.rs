//! `iam-example serve`: the IAM service over HTTP, on SQLite and
//! PostgreSQL, as one instance and as two sharing a schema, in-process and
//! as a process.

use std::process::Stdio;
use std::time::Duration;

use annals::pii::MasterKey;
use iam_example::client::{JsonClient, JsonResponse};
use iam_example::config::{Database, ServeConfig};
use iam_example::serve::{self, RunningService};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A server `cargo xtask test` started; a missing one fails the test.
fn server(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this test needs {variable}: run it with `cargo xtask test`, or start servers \
             with `cargo xtask services up` and export the variables it prints"
        ),
    }
}

fn postgres(schema_tag: &str) -> Database {
    Database::Postgres {
        url: server("ANNALS_TEST_DATABASE_URL"),
        schema: format!("iam_{schema_tag}_{}", uuid::Uuid::now_v7().simple()),
    }
}

/// A client of one service instance.
struct Api {
    base: String,
    client: JsonClient,
}

impl Api {
    fn of(service: &RunningService) -> Self {
        Api::at(format!("http://{}", service.address))
    }

    fn at(base: String) -> Self {
        Api {
            base,
            client: JsonClient::default(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> JsonResponse {
        self.client
            .send(
                method,
                &format!("{}{path}", self.base),
                headers,
                body.as_ref(),
            )
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// A command by `admin@acme`.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> JsonResponse {
        self.send(method, path, &[("x-actor", "admin@acme")], body)
            .await
    }

    async fn get(&self, path: &str) -> JsonResponse {
        self.send("GET", path, &[], None).await
    }

    /// Polls `path` until `done` accepts its answer (the read models follow
    /// the log within moments), at most 30 s.
    async fn eventually(&self, path: &str, done: impl Fn(&JsonResponse) -> bool) -> JsonResponse {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.get(path).await;
            if done(&answer) {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} still answers {} {} after 30 s",
                answer.status,
                answer.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Asserts a typed error: status, code and (when given) the field.
fn refused(answer: &JsonResponse, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.json["error"], code, "{}", answer.text);
    assert!(
        answer.json["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.text
    );
    if let Some(field) = field {
        assert_eq!(answer.json["field"], field, "{}", answer.text);
    }
}

/// The commands, the queries and every kind of refusal, on one instance.
async fn exercise(api: &Api) {
    // Create a tenant; the response names the request.
    let created = api
        .command(
            "POST",
            "/tenants",
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let correlation = created.header("x-correlation-id").expect("a request id");
    assert_eq!(created.json["correlation_id"], correlation);
    refused(
        &api.command(
            "POST",
            "/tenants",
            Some(json!({"id": "acme", "name": "Again"})),
        )
        .await,
        409,
        "already_exists",
        None,
    );
    // Bad input: no actor, not JSON, an unknown field, a bad id.
    refused(
        &api.send(
            "POST",
            "/tenants",
            &[],
            Some(json!({"id": "x1", "name": "X"})),
        )
        .await,
        400,
        "missing_header",
        None,
    );
    let not_json = api
        .client
        .send(
            "POST",
            &format!("{}/tenants", api.base),
            &[
                ("x-actor", "admin@acme"),
                ("content-type", "application/json"),
            ],
            None,
        )
        .await
        .expect("an answer");
    refused(&not_json, 400, "invalid", Some("body"));
    refused(
        &api.command(
            "POST",
            "/tenants",
            Some(json!({"id": "x1", "name": "X", "plan": "gold"})),
        )
        .await,
        400,
        "invalid",
        Some("body"),
    );
    refused(
        &api.command(
            "POST",
            "/tenants",
            Some(json!({"id": "Acme Corp", "name": "X"})),
        )
        .await,
        400,
        "invalid",
        Some("tenant id"),
    );
    refused(
        &api.command(
            "POST",
            "/tenants",
            Some(json!({"id": "blank", "name": " "})),
        )
        .await,
        400,
        "invalid",
        Some("tenant name"),
    );

    // A role, a bad permission, a grant.
    let role = api
        .command(
            "POST",
            "/tenants/acme/roles",
            Some(json!({"id": "acme-admin", "name": "Admin", "permissions": ["users.read"]})),
        )
        .await;
    assert_eq!(role.status, 201, "{}", role.text);
    refused(
        &api.command(
            "POST",
            "/tenants/acme/roles",
            Some(json!({"id": "acme-odd", "name": "Odd", "permissions": ["everything"]})),
        )
        .await,
        400,
        "invalid",
        Some("permission"),
    );
    refused(
        &api.command(
            "POST",
            "/tenants/acme/roles",
            Some(json!({"id": "globex-admin", "name": "Theirs"})),
        )
        .await,
        400,
        "invalid",
        Some("role id"),
    );
    let granted = api
        .command(
            "PUT",
            "/tenants/acme/roles/acme-admin/permissions/users.write",
            None,
        )
        .await;
    assert_eq!(granted.status, 200, "{}", granted.text);

    // Users: one registered, one refused for the taken address (any case).
    let ann = api
        .command(
            "POST",
            "/tenants/acme/users",
            Some(json!({"id": "acme-ann", "email": "ann@acme.example", "display_name": "Ann"})),
        )
        .await;
    assert_eq!(ann.status, 201, "{}", ann.text);
    refused(
        &api.command(
            "POST",
            "/tenants/acme/users",
            Some(json!({"id": "acme-bob", "email": "ANN@acme.example", "display_name": "Bob"})),
        )
        .await,
        409,
        "email_taken",
        None,
    );
    refused(
        &api.command(
            "POST",
            "/tenants/acme/users",
            Some(json!({"id": "acme-cy", "email": "not an address", "display_name": "Cy"})),
        )
        .await,
        400,
        "invalid",
        Some("email"),
    );

    // An assignment under the client's own request id; unknown users and
    // roles are 404.
    let assigned = api
        .send(
            "PUT",
            "/tenants/acme/users/acme-ann/roles/acme-admin",
            &[
                ("x-actor", "admin@acme"),
                ("x-correlation-id", "req-assign-1"),
            ],
            None,
        )
        .await;
    assert_eq!(assigned.status, 200, "{}", assigned.text);
    refused(
        &api.command(
            "PUT",
            "/tenants/acme/users/acme-nobody/roles/acme-admin",
            None,
        )
        .await,
        404,
        "not_found",
        None,
    );
    refused(
        &api.command(
            "PUT",
            "/tenants/acme/users/acme-ann/roles/acme-missing",
            None,
        )
        .await,
        404,
        "not_found",
        None,
    );

    // The read models answer.
    api.eventually("/tenants/acme/users/acme-ann/permissions", |answer| {
        answer.json["permissions"] == json!(["users.read", "users.write"])
    })
    .await;
    let may = api
        .get("/tenants/acme/users/acme-ann/permissions/users.write")
        .await;
    assert_eq!(may.json["allowed"], true, "{}", may.text);
    let may_not = api
        .get("/tenants/acme/users/acme-ann/permissions/users.delete")
        .await;
    assert_eq!(may_not.json["allowed"], false, "{}", may_not.text);
    refused(
        &api.get("/tenants/acme/users/acme-ann/permissions/delete-everything")
            .await,
        400,
        "invalid",
        Some("permission"),
    );
    let trail = api
        .eventually("/tenants/acme/audit/req-assign-1", |answer| {
            answer.json["entries"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .await;
    let entries = trail.json["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{}", trail.text);
    assert_eq!(entries[0]["actor"], "admin@acme");
    assert_eq!(entries[0]["stream_id"], "user-acme-ann");
    assert_eq!(
        assigned.header("x-correlation-id"),
        trail.json["correlation_id"].as_str()
    );
    // A revoked role takes its permissions with it; assigned again, they
    // come back.
    let revoked = api
        .command(
            "DELETE",
            "/tenants/acme/users/acme-ann/roles/acme-admin",
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    api.eventually("/tenants/acme/users/acme-ann/permissions", |answer| {
        answer.json["permissions"] == json!([])
    })
    .await;
    // A client's own UUID as request id is kept as it is (text is mapped
    // to a name-based UUID instead), echoed, and finds the audit entry.
    let request_uuid = "0193c2f4-5b6a-7c8d-9e0f-a1b2c3d4e5f6";
    let again = api
        .send(
            "PUT",
            "/tenants/acme/users/acme-ann/roles/acme-admin",
            &[
                ("x-actor", "admin@acme"),
                ("x-correlation-id", request_uuid),
            ],
            None,
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.header("x-correlation-id"), Some(request_uuid));
    assert_eq!(again.json["correlation_id"], request_uuid);
    let trail = api
        .eventually(&format!("/tenants/acme/audit/{request_uuid}"), |answer| {
            answer.json["entries"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .await;
    assert_eq!(trail.json["correlation_id"], request_uuid, "{}", trail.text);
    assert_eq!(trail.json["entries"][0]["stream_id"], "user-acme-ann");
    api.eventually("/tenants/acme/users/acme-ann/permissions", |answer| {
        answer.json["permissions"] == json!(["users.read", "users.write"])
    })
    .await;
    // Another tenant asking for the same request id sees nothing of acme.
    let elsewhere = api.get("/tenants/globex/audit/req-assign-1").await;
    assert_eq!(elsewhere.json["entries"], json!([]), "{}", elsewhere.text);

    // Idempotency: a repeated key returns the first outcome and does not
    // act again, even after the permission was revoked in between.
    let grant = |request: &'static str| async move {
        api.send(
            "PUT",
            "/tenants/acme/roles/acme-admin/permissions/users.delete",
            &[
                ("x-actor", "admin@acme"),
                ("idempotency-key", "grant-delete-1"),
                ("x-correlation-id", request),
            ],
            None,
        )
        .await
    };
    assert_eq!(grant("grant-1").await.status, 200);
    let revoked = api
        .command(
            "DELETE",
            "/tenants/acme/roles/acme-admin/permissions/users.delete",
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(grant("grant-2").await.status, 200);
    let marker = api
        .send(
            "PUT",
            "/tenants/acme/roles/acme-admin/permissions/users.list",
            &[("x-actor", "admin@acme"), ("x-correlation-id", "marker-1")],
            None,
        )
        .await;
    assert_eq!(marker.status, 200, "{}", marker.text);
    api.eventually("/tenants/acme/audit/marker-1", |answer| {
        answer.json["entries"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    assert_eq!(
        api.get("/tenants/acme/audit/grant-2").await.json["entries"],
        json!([]),
        "the repeated command acted again"
    );
    // The permissions are another projection, with a runner of its own: it
    // may not have reached the marker when the audit has. Once it has, a
    // repeated grant (before the marker) would show.
    let permissions = api
        .eventually("/tenants/acme/users/acme-ann/permissions", |answer| {
            answer.json["permissions"]
                .as_array()
                .is_some_and(|granted| granted.iter().any(|p| p == "users.list"))
        })
        .await;
    assert_eq!(
        permissions.json["permissions"],
        json!(["users.list", "users.read", "users.write"]),
        "the repeated command acted again"
    );
    // A key is scoped to its route: the same key elsewhere is another
    // command, and acts.
    let moved = api
        .send(
            "PUT",
            "/tenants/acme/users/acme-ann/email",
            &[
                ("x-actor", "admin@acme"),
                ("idempotency-key", "grant-delete-1"),
                ("x-correlation-id", "move-1"),
            ],
            Some(json!({"email": "ann@new.example"})),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    api.eventually("/tenants/acme/audit/move-1", |answer| {
        answer.json["entries"]
            .as_array()
            .is_some_and(|e| e.len() == 1)
    })
    .await;
    // A key the store cannot hold is bad input, named.
    refused(
        &api.send(
            "PUT",
            "/tenants/acme/roles/acme-admin/permissions/users.read",
            &[
                ("x-actor", "admin@acme"),
                ("idempotency-key", &"k".repeat(250)),
            ],
            None,
        )
        .await,
        400,
        "invalid",
        Some("idempotency-key"),
    );

    // A suspended tenant refuses commands until reactivated.
    let suspended = api
        .command(
            "PUT",
            "/tenants/acme/suspension",
            Some(json!({"reason": "unpaid"})),
        )
        .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    refused(
        &api.command(
            "POST",
            "/tenants/acme/users",
            Some(json!({"id": "acme-dee", "email": "dee@acme.example", "display_name": "Dee"})),
        )
        .await,
        409,
        "tenant_suspended",
        None,
    );
    let reactivated = api
        .command("DELETE", "/tenants/acme/suspension", None)
        .await;
    assert_eq!(reactivated.status, 200, "{}", reactivated.text);
    // A deactivated user loses every permission and accepts no command.
    let deactivated = api
        .command("DELETE", "/tenants/acme/users/acme-ann", None)
        .await;
    assert_eq!(deactivated.status, 200, "{}", deactivated.text);
    refused(
        &api.command("PUT", "/tenants/acme/users/acme-ann/roles/acme-admin", None)
            .await,
        409,
        "user_deactivated",
        None,
    );
    api.eventually("/tenants/acme/users/acme-ann/permissions", |answer| {
        answer.json["permissions"] == json!([])
    })
    .await;

    // Operations: health, metrics, unknown routes.
    let health = api.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.json["status"], "ok");
    assert_eq!(health.json["store"]["ok"], true);
    assert_eq!(
        health.json["projections"].as_array().map(Vec::len),
        Some(3),
        "{}",
        health.text
    );
    let metrics = api.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("iam_http_requests_total")
            && metrics
                .text
                .contains("route=\"POST /tenants/{tenant}/users\"")
            && metrics.text.contains("annals_events_appended_total"),
        "{}",
        metrics.text
    );
    assert!(
        !metrics.text.contains("acme-ann"),
        "ids in the metrics' labels"
    );
    refused(&api.get("/nowhere").await, 404, "not_found", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_serves_commands_and_queries_on_sqlite_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = MasterKey::generate();
    let config = ServeConfig::local(Database::Sqlite(dir.path().join("iam.db")), key.clone());
    let service = serve::start(&config).await.expect("the service starts");
    exercise(&Api::of(&service)).await;
    service.stop().await.expect("stops");

    // Started again on the same file: nothing recreated, nothing lost.
    let service = serve::start(&config).await.expect("starts again");
    let api = Api::of(&service);
    api.eventually("/tenants/acme/audit/req-assign-1", |answer| {
        answer.json["entries"]
            .as_array()
            .is_some_and(|e| e.len() == 1)
    })
    .await;
    refused(
        &api.command(
            "POST",
            "/tenants",
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await,
        409,
        "already_exists",
        None,
    );
    let bob = api
        .command(
            "POST",
            "/tenants/acme/users",
            Some(json!({"id": "acme-bob", "email": "bob@acme.example", "display_name": "Bob"})),
        )
        .await;
    assert_eq!(bob.status, 201, "{}", bob.text);
    service.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_serves_commands_and_queries_on_postgres() {
    let config = ServeConfig::local(postgres("api"), MasterKey::generate());
    let service = serve::start(&config).await.expect("the service starts");
    exercise(&Api::of(&service)).await;
    service.stop().await.expect("stops");
}

/// The instance owning each projection, from `/health`.
async fn owners(api: &Api) -> Vec<(String, String)> {
    let health = api.get("/health").await;
    health.json["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .map(|projection| {
            (
                projection["state"].as_str().unwrap_or_default().to_owned(),
                projection["owner"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_a_schema_and_one_takes_the_projections_over_when_the_other_stops() {
    let key = MasterKey::generate();
    let database = postgres("pair");
    let config = |name: &str| ServeConfig {
        instance: Some(name.to_owned()),
        lease: Duration::from_secs(2),
        ..ServeConfig::local(database.clone(), key.clone())
    };
    // Started together: the schema and the read-model tables are created
    // once, whichever instance gets there first.
    let (config_a, config_b) = (config("a"), config("b"));
    let (a, b) = tokio::join!(serve::start(&config_a), serve::start(&config_b));
    let (a, b) = (a.expect("a starts"), b.expect("b starts"));
    let (api_a, api_b) = (Api::of(&a), Api::of(&b));

    // Commands through either instance; queries through either agree.
    let created = api_a
        .command(
            "POST",
            "/tenants",
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let role = api_b
        .command(
            "POST",
            "/tenants/acme/roles",
            Some(json!({"id": "acme-ops", "name": "Ops", "permissions": ["deploy.run"]})),
        )
        .await;
    assert_eq!(role.status, 201, "{}", role.text);
    let user = api_a
        .command(
            "POST",
            "/tenants/acme/users",
            Some(json!({"id": "acme-ann", "email": "ann@acme.example", "display_name": "Ann"})),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.text);
    // The address claimed through one instance is taken for the other.
    refused(
        &api_b
            .command(
                "POST",
                "/tenants/acme/users",
                Some(json!({"id": "acme-imp", "email": "ann@acme.example", "display_name": "Imp"})),
            )
            .await,
        409,
        "email_taken",
        None,
    );
    let assigned = api_b
        .command("PUT", "/tenants/acme/users/acme-ann/roles/acme-ops", None)
        .await;
    assert_eq!(assigned.status, 200, "{}", assigned.text);
    for api in [&api_a, &api_b] {
        api.eventually("/tenants/acme/users/acme-ann/permissions", |answer| {
            answer.json["permissions"] == json!(["deploy.run"])
        })
        .await;
    }

    // Each projection runs on exactly one instance; the other stands by.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (seen_a, seen_b) = (owners(&api_a).await, owners(&api_b).await);
        let settled = seen_a
            .iter()
            .zip(&seen_b)
            .all(|((state_a, owner_a), (state_b, owner_b))| {
                owner_a == owner_b
                    && ["a", "b"].contains(&owner_a.as_str())
                    && [state_a.as_str(), state_b.as_str()].contains(&"standby")
                    && [state_a.as_str(), state_b.as_str()].contains(&"running")
            });
        if settled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "owners never settled: a {seen_a:?}, b {seen_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A stops: B runs every projection, and new commands reach the models.
    a.stop().await.expect("a stops");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while owners(&api_b)
        .await
        .iter()
        .any(|(state, owner)| state != "running" || owner != "b")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b did not take every projection over: {:?}",
            owners(&api_b).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let granted = api_b
        .command(
            "PUT",
            "/tenants/acme/roles/acme-ops/permissions/deploy.rollback",
            None,
        )
        .await;
    assert_eq!(granted.status, 200, "{}", granted.text);
    api_b
        .eventually("/tenants/acme/users/acme-ann/permissions", |answer| {
            answer.json["permissions"] == json!(["deploy.rollback", "deploy.run"])
        })
        .await;
    b.stop().await.expect("b stops");
}

/// A key every test process may use: 32 zero bytes.
const TEST_MASTER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_as_a_process_names_its_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite:{}", dir.path().join("iam.db").display());
    let binary = env!("CARGO_BIN_EXE_iam-example");

    // Without a master key it refuses, saying how to get one.
    let refused = tokio::process::Command::new(binary)
        .args(["serve", "--database-url", &database])
        .env_remove("ANNALS_MASTER_KEY")
        .output()
        .await
        .expect("runs");
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("`serve` needs --master-key or ANNALS_MASTER_KEY"),
        "{message}"
    );

    let mut child = tokio::process::Command::new(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
        ])
        .env("ANNALS_MASTER_KEY", TEST_MASTER_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the address within 30 s")
    .expect("reads")
    .expect("a line");
    let base = line
        .strip_prefix("iam-example serving on ")
        .expect("names its address")
        .trim_end_matches('/')
        .to_owned();
    let api = Api::at(base);
    let created = api
        .command(
            "POST",
            "/tenants",
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(api.get("/health").await.status, 200);

    let pid = child.id().expect("a pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s of SIGTERM")
        .expect("waits");
    assert_eq!(status.code(), Some(0), "a clean stop");
}
