//! The scripted scenario: load, project, handle, command, query. Returns a
//! [`Report`] of everything it saw, which `main` prints as tables and the
//! tests assert on.

use std::time::{Duration, Instant};

use annals::cache::{CacheStats, EventCache};
use annals::prelude::*;
use annals::projection::runner::ProjectionStatus;
use annals::subscription::Subscription;
use annals::subscription::handler_registry::HandlerRegistry;
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use iam_domain::audit::{AuditEntry, AuditTrail};
use iam_domain::directory::{TenantDirectory, TenantRow};
use iam_domain::permissions::UserPermissions;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::Backend;
use crate::config::Config;
use crate::import::{self, role_id, tenant_id, user_id};
use crate::service::{Caller, Iam, Outcome};

/// How long one phase took and what it did.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Its name.
    pub name: &'static str,
    /// How long it took.
    pub took: Duration,
    /// Events it appended or processed.
    pub events: u64,
}

/// One answer of the permission read model, with the answer the aggregates
/// give for the same question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionCheck {
    /// The tenant asked about.
    pub tenant: String,
    /// The user.
    pub user: String,
    /// The permission.
    pub permission: String,
    /// The read model's answer (one indexed lookup).
    pub allowed: bool,
    /// The answer computed from the user's and roles' aggregates.
    pub from_aggregates: bool,
    /// The lookup's duration in microseconds.
    pub micros: u128,
}

/// A command of the scenario and its outcome.
#[derive(Debug, Clone)]
pub struct CommandLine {
    /// What was asked.
    pub command: String,
    /// `accepted`, or the refusal.
    pub outcome: String,
}

/// What a user could do at a past time, and now.
#[derive(Debug, Clone)]
pub struct TimeTravel {
    /// The user.
    pub user: String,
    /// The moment asked about.
    pub at: DateTime<Utc>,
    /// Roles and permissions then (from aggregates loaded as of `at`).
    pub then: Vec<String>,
    /// Permissions now (from the read model).
    pub now: Vec<String>,
}

/// A user forgotten (crypto-shredded): their events stay, their personal
/// data reads as redacted.
#[derive(Debug, Clone)]
pub struct Shredded {
    /// The user.
    pub user: String,
    /// Their email before the forget (loaded from their events).
    pub email_before: String,
    /// Their email after it (reloaded from the same events).
    pub email_after: String,
    /// Snapshots of their stream deleted by the forget.
    pub snapshots_deleted: u64,
}

/// One event of the replayed stream and the state it led to.
#[derive(Debug, Clone)]
pub struct ReplayedEvent {
    /// Stream version.
    pub version: u64,
    /// Event type.
    pub event_type: String,
    /// Who caused it.
    pub actor: String,
    /// The user's roles after it (replayed with `load_at`).
    pub roles_after: String,
}

/// Everything the scenario saw.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it ran.
    pub backend: String,
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// Tenants, users and events loaded.
    pub tenants: usize,
    /// Users loaded.
    pub users: usize,
    /// Events in the store at the end.
    pub events: u64,
    /// Sample tenants of the directory.
    pub directory: Vec<TenantRow>,
    /// The scripted commands and their outcomes.
    pub commands: Vec<CommandLine>,
    /// Permission checks.
    pub checks: Vec<PermissionCheck>,
    /// The time-travel answer.
    pub time_travel: TimeTravel,
    /// The user forgotten at the end.
    pub shredded: Shredded,
    /// The replayed stream.
    pub replay_stream: String,
    /// Its events.
    pub replayed: Vec<ReplayedEvent>,
    /// Projection status at the end.
    pub projections: Vec<ProjectionStatus>,
    /// The health report (store, cache, projections) at the end.
    pub health: annals::observability::health::HealthReport,
    /// The audit trail of the scripted request.
    pub audit_of_request: Vec<AuditEntry>,
    /// The newest audit entries of the on-call rota's actor.
    pub audit_of_actor: Option<(String, Vec<AuditEntry>)>,
    /// The scripted request's correlation id.
    pub request: uuid::Uuid,
    /// Handler output: (welcome notifications, permission-audit lines).
    pub handled: (u64, u64),
    /// The handlers' outbox file (the first run of the process keeps it).
    pub outbox: std::path::PathBuf,
    /// In-process cache statistics.
    pub cache: CacheStats,
    /// Redis cache statistics, if Redis was used.
    pub redis: Option<CacheStats>,
    /// Events per type in the store, most first.
    pub events_by_type: Vec<(String, u64)>,
    /// The SQLite file's size in bytes, if there is one.
    pub database_bytes: Option<u64>,
}

fn bar(config: &Config, len: u64, message: &'static str) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_message(message);
    let style = ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {human_pos}/{human_len} {per_sec} eta {eta}",
    )
    .map(|style| style.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Runs the whole scenario.
pub async fn run(config: &Config) -> Result<Report> {
    let mut phases = Vec::new();

    // 1. Connect and create the read-model tables.
    let started = Instant::now();
    let backend = Backend::connect(config).await?;
    backend.create_read_model_tables().await?;
    phases.push(Phase {
        name: "connect and create tables",
        took: started.elapsed(),
        events: 0,
    });

    // 2. Import tenants, roles and users through the aggregates.
    let started = Instant::now();
    let users_total = (config.tenants * config.users_per_tenant) as u64;
    let progress = bar(config, users_total, "import");
    let mut imported = 0;
    let keys = crate::service::email_keys();
    for n in 1..=config.tenants {
        imported += import::import_tenant(
            &*backend.store,
            &keys,
            n,
            config.users_per_tenant,
            &|users| progress.inc(users),
        )
        .await?;
    }
    progress.finish_and_clear();
    phases.push(Phase {
        name: "import (aggregates, one transaction per tenant)",
        took: started.elapsed(),
        events: imported,
    });

    // 3. Project the log into the SQL read models.
    let started = Instant::now();
    let head = log_head(&backend, LogPosition::START).await?;
    let directory = backend.run_projection(TenantDirectory, 2_000);
    let permissions = backend.run_projection(UserPermissions, 2_000);
    let audit = backend.run_projection(AuditTrail, 2_000);
    let progress = bar(config, imported, "project");
    wait_for(
        &[&|| directory.status(), &|| permissions.status(), &|| {
            audit.status()
        }],
        head,
        &progress,
    )
    .await?;
    progress.finish_and_clear();
    phases.push(Phase {
        name: "project (3 SQL read models)",
        took: started.elapsed(),
        events: imported * 3,
    });

    // 4. Handlers: welcome notifications and permission audit lines.
    let started = Instant::now();
    let outbox = match &backend.sqlite_file {
        Some(file) => file.with_extension("outbox.jsonl"),
        None => std::env::temp_dir()
            .join("annals-iam-example")
            .join("outbox.jsonl"),
    };
    if let Some(folder) = outbox.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let _ = std::fs::remove_file(&outbox);
    iam_domain::notifications::open_outbox(&outbox)
        .with_context(|| format!("cannot open the outbox {}", outbox.display()))?;
    let handlers = Subscription::new(backend.store.clone(), "iam-handlers")
        .batch_size(2_000)
        .start(HandlerRegistry::from_inventory(backend.store.clone()));
    let caught_up = tokio::time::timeout(
        Duration::from_secs(300),
        handlers.wait_until(std::time::Duration::from_secs(30), |status| {
            status.position >= head
        }),
    )
    .await;
    if caught_up.is_err() {
        bail!(
            "the handlers did not catch up within 5 minutes: {:?}",
            handlers.status()
        );
    }
    phases.push(Phase {
        name: "handlers (outbox)",
        took: started.elapsed(),
        events: imported,
    });

    // 5. Commands through the repository, as an administrator would send them.
    let started = Instant::now();
    let iam = Iam::new(&backend, backend.cache.clone());
    let admin = Caller::new("alice@t001");
    let mut commands = Vec::new();
    let t1 = tenant_id(1);
    let t2 = tenant_id(2.min(config.tenants));
    let t3 = tenant_id(3.min(config.tenants));
    let mut record = |command: String, outcome: Outcome| {
        commands.push(CommandLine {
            command,
            outcome: outcome.map_or_else(
                |refused| format!("refused: {refused}"),
                |()| "accepted".into(),
            ),
        });
    };
    // User 1 kept the address it registered with (even users changed
    // theirs); with a single user, take user 0's new one.
    let (owner, taken) = if config.users_per_tenant > 1 {
        (user_id(&t1, 1), format!("user1@{t1}.example"))
    } else {
        (user_id(&t1, 0), format!("u0.new@{t1}.example"))
    };
    let outcome = iam
        .register_user(&admin, &t1, &format!("{t1}-u9001"), &taken, "Copycat")
        .await?;
    record(format!("register {t1}-u9001 with {owner}'s email"), outcome);
    let outcome = iam
        .assign_role(&admin, &t1, &user_id(&t1, 0), &role_id(&t2, "admin"))
        .await?;
    record(
        format!("assign {} to {}", role_id(&t2, "admin"), user_id(&t1, 0)),
        outcome,
    );
    let outcome = iam
        .set_suspended(&admin, &t3, true, "unpaid invoices")
        .await?;
    record(format!("suspend {t3}"), outcome);
    let outcome = iam
        .register_user(
            &admin,
            &t3,
            &format!("{t3}-u9002"),
            "late@example.com",
            "Late",
        )
        .await?;
    record(format!("register {t3}-u9002 in suspended {t3}"), outcome);
    let outcome = iam.set_suspended(&admin, &t3, false, "").await?;
    record(format!("reactivate {t3}"), outcome);

    let developer = user_id(&t1, 3.min(config.users_per_tenant - 1));
    let before_change: DateTime<Utc> = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let outcome = iam
        .change_permission(
            &admin,
            &t1,
            &role_id(&t1, "developer"),
            "repos.write",
            false,
        )
        .await?;
    record(
        format!("revoke repos.write from {}", role_id(&t1, "developer")),
        outcome,
    );
    let outcome = iam
        .assign_role(&admin, &t1, &developer, &role_id(&t1, "auditor"))
        .await?;
    record(
        format!("assign {} to {developer}", role_id(&t1, "auditor")),
        outcome,
    );
    let newcomer = format!("{t1}-u9000");
    let outcome = iam
        .register_user(&admin, &t1, &newcomer, "Newcomer@Example.com", "New Comer")
        .await?;
    record(format!("register {newcomer}"), outcome);
    let outcome = iam
        .assign_role(&admin, &t1, &newcomer, &role_id(&t1, "support"))
        .await?;
    record(
        format!("assign {} to {newcomer}", role_id(&t1, "support")),
        outcome,
    );
    let outcome = iam.change_email(&admin, &t1, &newcomer, &taken).await?;
    record(format!("change {newcomer}'s email to {owner}'s"), outcome);

    // Two admins register the same new address at the same moment: each
    // decides the address is free, one appends first, and the other's
    // condition fails; it decides again, sees the winner, and is refused.
    let twins = [format!("{t1}-u9003"), format!("{t1}-u9004")];
    let (first, second) = tokio::join!(
        iam.register_user(&admin, &t1, &twins[0], "twin@example.com", "Twin"),
        iam.register_user(&admin, &t1, &twins[1], "twin@example.com", "Twin"),
    );
    for (user, outcome) in twins.iter().zip([first?, second?]) {
        record(
            format!("register {user} with twin@example.com, at the same moment"),
            outcome,
        );
    }

    // An on-call rotation: many small commands on a few hundred users; the
    // repository's cache serves their states after the first load.
    let mut rng = fastrand::Rng::with_seed(7);
    let rotation_tenants = config.tenants.min(5);
    let mut rotated = 0u64;
    for step in 0..config.rotation_commands {
        let tenant = tenant_id(1 + rng.usize(..rotation_tenants));
        // Users 10 and up: the first ones are the subjects of the checks.
        let first = 10.min(config.users_per_tenant - 1);
        let user = user_id(
            &tenant,
            rng.usize(first..config.users_per_tenant.min(60).max(first + 1)),
        );
        let on_call = role_id(&tenant, "support");
        let caller = Caller::new(format!("rota@{tenant}"));
        let result = if step % 2 == 0 {
            iam.assign_role(&caller, &tenant, &user, &on_call).await?
        } else {
            iam.revoke_role(&caller, &tenant, &user, &on_call).await?
        };
        if result.is_ok() {
            rotated += 1;
        }
    }
    let head = log_head(&backend, head).await?;
    wait_for(
        &[&|| directory.status(), &|| permissions.status(), &|| {
            audit.status()
        }],
        head,
        &ProgressBar::hidden(),
    )
    .await?;
    phases.push(Phase {
        name: "commands (repository, cached)",
        took: started.elapsed(),
        events: rotated,
    });

    // 6. Queries.
    let started = Instant::now();
    let mut connection = backend.query().await?;
    let mut checks = Vec::new();
    let last = config.users_per_tenant - 1;
    let questions = [
        (t1.clone(), user_id(&t1, 0), "tenant.manage"),
        (t1.clone(), user_id(&t1, 0), "roles.manage"),
        (t1.clone(), developer.clone(), "repos.read"),
        (t1.clone(), developer.clone(), "repos.write"),
        (t1.clone(), developer.clone(), "audit.read"),
        (t2.clone(), user_id(&t2, 2.min(last)), "repos.write"),
        (t2.clone(), user_id(&t1, 0), "users.read"),
        (t1.clone(), user_id(&t1, 24.min(last)), "users.read"),
        (t1.clone(), newcomer.clone(), "tickets.write"),
        (t1.clone(), user_id(&t1, 5.min(last)), "audit.read"),
        (t1.clone(), user_id(&t1, 6.min(last)), "invoices.write"),
        (t1.clone(), user_id(&t1, 6.min(last)), "reports.read"),
    ];
    for (tenant, user, permission) in questions {
        let asked = Instant::now();
        let allowed =
            iam_domain::permissions::may(connection.db(), &tenant, &user, permission).await?;
        let micros = asked.elapsed().as_micros();
        let from_aggregates = permissions_from_aggregates(&iam, &tenant, &user, None)
            .await?
            .contains(&permission.to_owned());
        checks.push(PermissionCheck {
            tenant,
            user,
            permission: permission.to_owned(),
            allowed,
            from_aggregates,
            micros,
        });
    }
    let then = permissions_from_aggregates(&iam, &t1, &developer, Some(before_change)).await?;
    let now = iam_domain::permissions::of_user(connection.db(), &t1, &developer).await?;
    let time_travel = TimeTravel {
        user: developer.clone(),
        at: before_change,
        then,
        now,
    };

    let replayed = replay_stream(&iam, &developer).await?;
    let directory_rows = iam_domain::directory::tenants(connection.db(), 5).await?;
    let audit_of_request =
        iam_domain::audit::by_correlation(connection.db(), admin.correlation_id).await?;
    let rota = format!("rota@{t1}");
    let audit_of_actor = Some((
        rota.clone(),
        iam_domain::audit::by_actor(connection.db(), &rota, 5).await?,
    ));
    let events_by_type = events_by_type(&backend).await?;
    let events = backend.store.count(&EventQuery::new()).await?;
    drop(connection);
    phases.push(Phase {
        name: "queries",
        took: started.elapsed(),
        events: 0,
    });

    // Crypto-shredding: forget the newcomer, a data subject of tenant t1
    // (subjects are named within their tenant). Their events stay; their
    // email and display name read as redacted from now on, on every read path.
    let email_before = iam.users.load(&newcomer).await?.state.email;
    let forgotten = backend.pii.forget_in_tenant(Some(&t1), &newcomer).await?;
    let shredded = Shredded {
        email_before,
        email_after: iam.users.load(&newcomer).await?.state.email,
        user: newcomer,
        snapshots_deleted: forgotten.snapshots_deleted,
    };

    let projections = vec![directory.status(), permissions.status(), audit.status()];
    let cache: &dyn annals::cache::EventCache = match &backend.redis {
        Some(redis) => redis.as_ref(),
        None => backend.near.as_ref(),
    };
    let health = projections.iter().fold(
        annals::observability::health::HealthReport::check(&*backend.store, Some(cache)).await,
        |report, status| report.with_projection(status),
    );
    directory.stop().await?;
    permissions.stop().await?;
    audit.stop().await?;
    handlers.stop().await?;
    let database_bytes = backend
        .sqlite_file
        .as_ref()
        .and_then(|file| std::fs::metadata(file).ok())
        .map(|m| m.len());
    Ok(Report {
        backend: backend.description.clone(),
        phases,
        tenants: config.tenants,
        users: config.tenants * config.users_per_tenant,
        events,
        directory: directory_rows,
        commands,
        checks,
        time_travel,
        shredded,
        replay_stream: format!("user-{developer}"),
        replayed,
        projections,
        health,
        audit_of_request,
        audit_of_actor,
        request: admin.correlation_id,
        handled: iam_domain::notifications::counts(),
        outbox,
        cache: backend.near.stats(),
        redis: backend.redis.as_ref().map(|redis| redis.stats()),
        events_by_type,
        database_bytes,
    })
}

/// The position of the newest event, reading forward from `from`.
async fn log_head(backend: &Backend, from: LogPosition) -> Result<LogPosition> {
    let mut head = from;
    loop {
        let batch = backend.store.read_all(head, 5_000).await?;
        match batch.last() {
            Some(last) => head = last.position,
            None => return Ok(head),
        }
    }
}

/// Waits until every projection has applied the log up to `head`, showing
/// the slowest one's progress; fails naming a projection that reports an
/// error for 30 s.
async fn wait_for(
    projections: &[&dyn Fn() -> ProjectionStatus],
    head: LogPosition,
    progress: &ProgressBar,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let statuses: Vec<ProjectionStatus> = projections.iter().map(|status| status()).collect();
        if statuses.iter().all(|status| status.position >= head) {
            return Ok(());
        }
        if let Some(slowest) = statuses.iter().map(|status| status.applied).min() {
            progress.set_position(slowest);
        }
        if Instant::now() > deadline {
            let stuck: Vec<String> = statuses
                .iter()
                .filter(|status| status.position < head)
                .map(|status| {
                    format!(
                        "{} ({:?}, {})",
                        status.name,
                        status.state,
                        status.last_error.clone().unwrap_or_default()
                    )
                })
                .collect();
            bail!(
                "projections did not catch up within 10 minutes: {}",
                stuck.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The permissions of `user` computed from the aggregates (the user's
/// roles, each role's permissions), now or as of `at`: the independent
/// answer the read model is checked against.
async fn permissions_from_aggregates(
    iam: &Iam,
    tenant: &str,
    user: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Vec<String>> {
    let state = match at {
        None => iam.users.load(user).await?.state,
        Some(at) => iam.users.load_as_of(user, at).await?.state,
    };
    if state.tenant.as_deref() != Some(tenant) || state.deactivated {
        return Ok(Vec::new());
    }
    let mut permissions = std::collections::BTreeSet::new();
    for role in &state.roles {
        let role = match at {
            None => iam.roles.load(role).await?.state,
            Some(at) => iam.roles.load_as_of(role, at).await?.state,
        };
        if role.tenant.as_deref() == Some(tenant) {
            permissions.extend(role.permissions);
        }
    }
    Ok(permissions.into_iter().collect())
}

/// The user's stream, event by event, with the roles replayed to each version.
async fn replay_stream(iam: &Iam, user: &str) -> Result<Vec<ReplayedEvent>> {
    let stream = StreamId::new(format!("user-{user}"))?;
    let events = iam.users.store().read_stream(&stream, 0, 1_000).await?;
    let mut replayed = Vec::new();
    for event in events.iter().take(30) {
        let state = iam.users.load_at(user, event.version).await?.state;
        let roles: Vec<String> = state
            .roles
            .iter()
            .map(|role| role.rsplit('-').next().unwrap_or(role).to_owned())
            .collect();
        let roles_after = if state.deactivated {
            "(deactivated)".to_owned()
        } else {
            roles.join(", ")
        };
        replayed.push(ReplayedEvent {
            version: event.version,
            event_type: event.event_type.clone(),
            actor: event.metadata.actor.clone().unwrap_or_default(),
            roles_after,
        });
    }
    Ok(replayed)
}

/// Events per registered IAM event type, most first.
async fn events_by_type(backend: &Backend) -> Result<Vec<(String, u64)>> {
    let mut counts = Vec::new();
    for event in annals::registry::events().filter(|event| event.name.starts_with("iam.")) {
        let count = backend
            .store
            .count(&EventQuery::new().event_type(event.name))
            .await?;
        counts.push((event.name.to_owned(), count));
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(counts)
}
