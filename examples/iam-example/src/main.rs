//! The Annals IAM example: appends and reads IAM events through the embedded
//! SQLite store (no server needed), or PostgreSQL when `DATABASE_URL` says so.
//!
//! ```text
//! cargo run -p iam-example                       # SQLite file in the temp directory
//! cargo run -p iam-example -- --database-url URL # or DATABASE_URL=URL
//! ```

use std::path::PathBuf;
use std::time::Instant;

use annals::prelude::*;
use anyhow::{Context, Result, bail};
use serde_json::json;
use uuid::Uuid;

const HELP: &str = "\
iam-example: a tenant, its users and their roles, stored with Annals.

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
        .join("events.db");
    Ok(format!("sqlite://{}", path.display()))
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

    // One request: an administrator creates a tenant and onboards two users.
    let run = Uuid::now_v7();
    let request = Uuid::now_v7();
    let tenant = format!("tenant-{}", run.simple());
    let context = Metadata::new()
        .with_tenant(&tenant)
        .with_actor("admin@example.test")
        .with_correlation_id(request);

    let tenant_stream = StreamId::new(tenant.clone())?;
    let ada = StreamId::for_aggregate("user", Uuid::now_v7())?;
    let grace = StreamId::for_aggregate("user", Uuid::now_v7())?;
    let event = |name: &str, body: serde_json::Value| -> Result<NewEvent> {
        Ok(NewEvent::json(name, &body)?.with_metadata(context.clone()))
    };

    store
        .append(
            &tenant_stream,
            ExpectedVersion::NoStream,
            vec![event(
                "iam.tenant.created",
                json!({ "name": "Example Corp" }),
            )?],
        )
        .await?;
    // Both users in one transaction: either both exist or neither does.
    store
        .append_batch(vec![
            StreamAppend::new(
                ada.clone(),
                ExpectedVersion::NoStream,
                vec![
                    event(
                        "iam.user.registered",
                        json!({ "email": "ada@example.test" }),
                    )?,
                    event("iam.user.role_assigned", json!({ "role": "admin" }))?,
                ],
            ),
            StreamAppend::new(
                grace.clone(),
                ExpectedVersion::NoStream,
                vec![event(
                    "iam.user.registered",
                    json!({ "email": "grace@example.test" }),
                )?],
            ),
        ])
        .await?;

    // A stale writer loses: Ada's stream is at version 2, not 1.
    let stale = store
        .append(
            &ada,
            ExpectedVersion::Exact(1),
            vec![event("iam.user.role_revoked", json!({ "role": "admin" }))?],
        )
        .await;
    match stale {
        Err(conflict @ Error::VersionConflict { .. }) => {
            println!("stale write refused: {conflict}")
        }
        other => bail!("expected a version conflict, got {other:?}"),
    }

    println!("\nstream {ada}:");
    for recorded in store.read_stream(&ada, 1, 100).await? {
        println!(
            "  v{:<3} {:<24} {}",
            recorded.version, recorded.event_type, recorded.payload
        );
    }

    let page = store
        .query(&EventQuery::new().correlation_id(request).limit(100))
        .await?;
    println!("\nevents of request {request}: {}", page.events.len());
    for recorded in &page.events {
        println!(
            "  #{:<6} {:<50} {}",
            recorded.position.sequence, recorded.stream_id, recorded.event_type
        );
    }

    let registered = store
        .query(
            &EventQuery::new()
                .tenant(&tenant)
                .event_type("iam.user.registered"),
        )
        .await?;
    println!(
        "\nusers registered in {tenant}: {}",
        registered.events.len()
    );
    println!("done in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}
