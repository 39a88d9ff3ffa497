//! The example's scenario at a small size on every backend: in memory,
//! SQLite, PostgreSQL, and PostgreSQL with Redis. The permission read model
//! must give the answers the scenario is built to produce, and agree with
//! the answers computed from the aggregates.

use iam_example::config::{Config, Database};
use iam_example::scenario::{self, Report};

/// A server `cargo xtask test` started; a missing one fails the test with
/// instructions (it never passes silently).
fn server(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this test needs {variable}: run it with `cargo xtask test`, or start servers \
             with `cargo xtask services up` and export the variables it prints"
        ),
    }
}

/// One test runs the backends in turn: the handlers' counters are
/// per-process, and each run's share of them is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scenario_gives_the_same_answers_on_every_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let postgres = server("ANNALS_TEST_DATABASE_URL");
    let redis = server("ANNALS_TEST_REDIS_URL");
    let schema = |name: &str| format!("iam_{name}_{}", uuid::Uuid::now_v7().simple());
    let runs = [
        ("memory", Config::small(Database::Memory, None)),
        (
            "sqlite",
            Config::small(Database::Sqlite(dir.path().join("iam.db")), None),
        ),
        (
            "postgres",
            Config::small(
                Database::Postgres {
                    url: postgres.clone(),
                    schema: schema("pg"),
                },
                None,
            ),
        ),
        (
            "postgres+redis",
            Config::small(
                Database::Postgres {
                    url: postgres.clone(),
                    schema: schema("redis"),
                },
                Some(redis),
            ),
        ),
    ];
    let mut answers = Vec::new();
    for (backend, config) in runs {
        let before = iam_domain::notifications::counts();
        let report = scenario::run(&config)
            .await
            .unwrap_or_else(|error| panic!("the scenario failed on {backend}: {error:#}"));
        let after = iam_domain::notifications::counts();
        check(
            backend,
            &config,
            &report,
            (after.0 - before.0, after.1 - before.1),
        );
        answers.push((
            backend,
            report.checks.iter().map(|c| c.allowed).collect::<Vec<_>>(),
        ));
    }
    let (first, expected) = &answers[0];
    for (backend, got) in &answers[1..] {
        assert_eq!(got, expected, "{backend} answers differently from {first}");
    }
}

fn check(backend: &str, config: &Config, report: &Report, handled: (u64, u64)) {
    // The read model agrees with the aggregates on every question.
    for check in &report.checks {
        assert_eq!(
            check.allowed, check.from_aggregates,
            "{backend}: the read model and the aggregates disagree on {check:?}"
        );
    }
    let allowed_in = |tenant: &str, user: &str, permission: &str| {
        report
            .checks
            .iter()
            .find(|c| c.tenant == tenant && c.user == user && c.permission == permission)
            .unwrap_or_else(|| panic!("{backend}: no check of {user} {permission} in {tenant}"))
            .allowed
    };
    let allowed = |user: &str, permission: &str| allowed_in(&user[..4], user, permission);
    // What the scenario is built to produce.
    assert!(
        report.health.is_healthy() && report.health.projections.len() == 3,
        "{backend}: health at the end:\n{}",
        report.health
    );
    assert!(
        allowed("t001-u0000", "tenant.manage"),
        "{backend}: the admin manages the tenant"
    );
    assert!(
        allowed("t001-u0003", "repos.read"),
        "{backend}: developers read repos"
    );
    assert!(
        !allowed("t001-u0003", "repos.write"),
        "{backend}: repos.write was revoked from developers"
    );
    assert!(
        allowed("t001-u0003", "audit.read"),
        "{backend}: the auditor role was assigned"
    );
    assert!(
        allowed("t002-u0002", "repos.write"),
        "{backend}: t002's developers keep repos.write"
    );
    assert!(
        !allowed_in("t002", "t001-u0000", "users.read"),
        "{backend}: t001's admin has no permission in t002"
    );
    assert!(
        !allowed("t001-u0024", "users.read"),
        "{backend}: a deactivated user may do nothing"
    );
    assert!(
        allowed("t001-u9000", "tickets.write"),
        "{backend}: the newcomer got support"
    );
    assert!(
        !allowed("t001-u0006", "reports.read"),
        "{backend}: reports.read was granted and revoked"
    );

    let outcomes: Vec<&str> = report.commands.iter().map(|c| c.outcome.as_str()).collect();
    assert!(
        outcomes[0].contains("email address is already used"),
        "{backend}: {outcomes:?}"
    );
    assert!(
        outcomes[1].contains("belongs to tenant t002"),
        "{backend}: {outcomes:?}"
    );
    assert!(
        outcomes[3].contains("t003 is suspended"),
        "{backend}: {outcomes:?}"
    );
    // Changing to an address another user holds is refused like a
    // registration of it.
    let change = report
        .commands
        .iter()
        .find(|c| c.command.contains("'s email to"))
        .unwrap_or_else(|| panic!("{backend}: no email change in {outcomes:?}"));
    assert!(
        change.outcome.contains("email address is already used"),
        "{backend}: {change:?}"
    );
    // The two registrations of one address at the same moment: one is
    // accepted, the other refused by the rule, never both.
    let twins: Vec<&str> = report
        .commands
        .iter()
        .filter(|c| c.command.contains("twin@example.com"))
        .map(|c| c.outcome.as_str())
        .collect();
    assert_eq!(twins.len(), 2, "{backend}: {outcomes:?}");
    assert_eq!(
        twins.iter().filter(|o| **o == "accepted").count(),
        1,
        "{backend}: exactly one twin registers: {twins:?}"
    );
    assert!(
        twins
            .iter()
            .any(|o| o.contains("email address is already used")),
        "{backend}: {twins:?}"
    );
    assert!(
        report
            .commands
            .iter()
            .skip(5)
            .filter(
                |c| !c.command.contains("twin@example.com") && !c.command.contains("'s email to")
            )
            .all(|c| c.outcome == "accepted"),
        "{backend}: {outcomes:?}"
    );

    // Time travel: before the revocation the developer could write repos.
    assert!(
        report.time_travel.then.contains(&"repos.write".to_owned()),
        "{backend}"
    );
    assert!(
        !report.time_travel.now.contains(&"repos.write".to_owned()),
        "{backend}"
    );

    assert!(
        report.shredded.email_before.contains('@')
            && report.shredded.email_after == annals::pii::REDACTED_TEXT,
        "{backend}: the forgotten user's email reads as redacted: {:?}",
        report.shredded
    );

    let users = config.tenants * config.users_per_tenant;
    assert_eq!(report.users, users);
    assert_eq!(
        handled.0,
        users as u64 + 2,
        "{backend}: one welcome per registration (the newcomer and one twin included)"
    );
    assert!(handled.1 > 0, "{backend}: permission changes were audited");
    assert_eq!(
        report.audit_of_request.len(),
        7,
        "{backend}: the request's accepted commands"
    );
    assert!(
        report.projections.iter().all(|p| p.last_error.is_none()),
        "{backend}: {:?}",
        report.projections
    );
    assert!(
        report.cache.hits > 0,
        "{backend}: the repository cache is used"
    );
    if backend.contains("redis") {
        let redis = report.redis.as_ref().expect("Redis statistics");
        assert!(
            redis.hits + redis.misses > 0,
            "{backend}: Redis is consulted"
        );
    }
}
