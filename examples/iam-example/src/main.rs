//! The Annals IAM example: tenants and users as event-sourced aggregates on
//! the embedded SQLite store (no server needed), or PostgreSQL when
//! `DATABASE_URL` says so.
//!
//! ```text
//! cargo run -p iam-example                       # SQLite file in the temp directory
//! cargo run -p iam-example -- --database-url URL # or DATABASE_URL=URL
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::cache::{EventCache, InProcessCache};
use annals::prelude::*;
use annals::projection_runner::{InMemory, ProjectionRunner, ProjectionState};
use annals::snapshot::SnapshotSettings;
use anyhow::{Context, Result, bail};
use uuid::Uuid;

use iam_domain::{
    AssignRole, CreateTenant, IamError, RegisterUser, SuspendTenant, Tenant, TenantDirectory, User,
};

const HELP: &str = "\
iam-example: tenants, users and roles, stored with Annals.

usage: iam-example [--database-url URL]

options:
  --database-url URL  where to store events: sqlite:PATH, postgres://..., or memory:
                      (default: $DATABASE_URL, else a SQLite file in the temp directory)
  -h, --help          this text";

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("iam-example: {error:#}");
        std::process::exit(1);
    }
}

fn database_url() -> Result<String> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            "--database-url" => url = Some(args.next().context("--database-url needs a URL")?),
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if let Some(url) = url.or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
    {
        return Ok(url);
    }
    let path: PathBuf = std::env::temp_dir()
        .join("annals-iam-example")
        .join("iam.db");
    Ok(format!("sqlite://{}", path.display()))
}

/// Registers a user if the tenant exists and is active: the invariant that
/// spans two aggregates is checked here, in the application service.
async fn register(
    tenants: &Repository<Tenant>,
    users: &Repository<User>,
    tenant: &str,
    user: &str,
    email: String,
    metadata: Metadata,
) -> Result<Result<(), IamError>> {
    let loaded = tenants.load(tenant).await?;
    if loaded.state.name.is_none() {
        return Ok(Err(IamError::NotFound));
    }
    if loaded.state.suspended {
        return Ok(Err(IamError::TenantSuspended));
    }
    let command = RegisterUser {
        tenant: tenant.to_owned(),
        email,
    };
    match users.execute(user, &command, metadata).await {
        Ok(_) => Ok(Ok(())),
        Err(CommandError::Rejected(error)) => Ok(Err(error)),
        Err(error) => Err(error.into()),
    }
}

async fn run() -> Result<()> {
    let url = database_url()?;
    let started = Instant::now();
    let store = annals::store::connect(&url).await?;
    println!(
        "store: {} at {}",
        store.backend(),
        annals::store::redact_url(&url)
    );

    let cache = Arc::new(InProcessCache::new());
    let tenants = Repository::<Tenant>::new(store.clone());
    let users = Repository::<User>::new(store.clone())
        .with_cache(cache.clone())
        .with_snapshots(SnapshotSettings::new());

    // Each run gets its own tenants, so the example can run again and again.
    let run = Uuid::now_v7().simple().to_string()[20..].to_owned();
    let request = Uuid::now_v7();
    let context = |tenant: &str| {
        Metadata::new()
            .with_actor("admin@example.test")
            .with_tenant(tenant)
            .with_correlation_id(request)
    };

    let names = ["Acme", "Globex", "Initech"];
    for (n, name) in names.iter().enumerate() {
        let tenant = format!("{run}-{n}");
        tenants
            .execute(&tenant, &CreateTenant((*name).into()), context(&tenant))
            .await?;
        for u in 0..10 {
            let user = format!("{tenant}-u{u}");
            let email = format!("user{u}@{}.test", name.to_lowercase());
            register(&tenants, &users, &tenant, &user, email, context(&tenant)).await??;
            let role = if u == 0 { "admin" } else { "member" };
            users
                .execute(&user, &AssignRole(role.into()), context(&tenant))
                .await?;
        }
    }
    println!(
        "\nonboarded {} tenants with 10 users each (request {request})",
        names.len()
    );

    // Invariant: a suspended tenant refuses commands for its users.
    let initech = format!("{run}-2");
    tenants
        .execute(
            &initech,
            &SuspendTenant("unpaid invoices".into()),
            context(&initech),
        )
        .await?;
    let late = format!("{initech}-late");
    let outcome = register(
        &tenants,
        &users,
        &initech,
        &late,
        "late@initech.test".into(),
        context(&initech),
    )
    .await?;
    println!(
        "register a user in suspended Initech: {}",
        outcome.map_or_else(|error| format!("refused ({error})"), |()| "accepted".into())
    );

    // Optimistic concurrency: a writer holding an old version loses.
    let acme_admin = format!("{run}-0-u0");
    let stale = users
        .save(
            &acme_admin,
            ExpectedVersion::Exact(1),
            &[iam_domain::UserEvent::RoleAssigned {
                role: "owner".into(),
            }],
            &context("acme"),
        )
        .await;
    match stale {
        Err(conflict @ Error::VersionConflict { .. }) => {
            println!("stale write refused: {conflict}")
        }
        other => bail!("expected a version conflict, got {other:?}"),
    }

    // Time travel: what could Acme's admin do before the audit role?
    let before_audit = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    users
        .execute(&acme_admin, &AssignRole("auditor".into()), context("acme"))
        .await?;
    let then = users.load_as_of(&acme_admin, before_audit).await?;
    let now = users.load(&acme_admin).await?;
    println!("\n{:<28} {:<10} roles", "user", "when");
    println!(
        "{:<28} {:<10} {}",
        now.state.email,
        "before",
        then.state
            .roles
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<28} {:<10} {}",
        now.state.email,
        "now",
        now.state
            .roles
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The tenant directory, projected from the whole log.
    let directory = ProjectionRunner::new(store.clone(), InMemory)
        .batch_size(1000)
        .start(TenantDirectory::default());
    let caught_up = tokio::time::timeout(
        Duration::from_secs(60),
        directory.wait_until(|status| status.state == ProjectionState::Running),
    )
    .await;
    if caught_up.is_err() {
        let status = directory.status();
        bail!(
            "the tenant directory did not catch up: {}",
            status
                .last_error
                .unwrap_or_else(|| format!("{} events applied", status.applied))
        );
    }
    println!("\n{:<10} {:<8} {:<6} status", "tenant", "name", "users");
    for (stream, (name, count, suspended)) in directory
        .read()
        .await
        .tenants
        .iter()
        .filter(|(id, _)| id.contains(&run))
    {
        let tenant = stream.rsplit('-').next().unwrap_or(stream);
        println!(
            "{:<10} {:<8} {:<6} {}",
            tenant,
            name,
            count,
            if *suspended { "suspended" } else { "active" }
        );
    }
    let status = directory.status();
    directory.stop().await?;

    let page = store
        .query(&EventQuery::new().correlation_id(request).limit(1000))
        .await?;
    let stats = cache.stats();
    println!("\nevents of request {request}: {}", page.events.len());
    println!(
        "projection: {} events applied at {:.0} events/s",
        status.applied, status.per_second
    );
    println!(
        "user cache: {} hits, {} misses ({:.0} % hit rate)",
        stats.hits,
        stats.misses,
        stats.hit_rate() * 100.0
    );
    println!("done in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}
