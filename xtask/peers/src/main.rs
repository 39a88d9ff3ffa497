//! W1 of `cargo xtask bench` on the peer crates: cqrs-es 0.5 with
//! postgres-es 0.5, and esrs 0.18 (`esrs.rs`). 8 workers, each owning its
//! aggregates, one event (the same ~350-byte order line as Annals') per
//! command. Prints one JSON line per peer.
//!
//! `PEER_DATABASE_URL=postgres://... peer-bench [--quick]`

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

mod esrs_peer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    LineAdded {
        order_id: String,
        line: u32,
        sku: String,
        quantity: u32,
        unit_price_cents: u64,
        currency: String,
        warehouse: String,
        note: String,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        "bench.order.line_added".to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug)]
struct OrderError(String);

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OrderError {}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    lines: u32,
    total_cents: u64,
}

struct AddLine(u64);

impl OrderEvent {
    /// Line `line` of order `order`, as Annals' benchmark writes it.
    fn line(order: u64, line: u32) -> Self {
        OrderEvent::LineAdded {
            order_id: format!("order-{order:010}"),
            line,
            sku: format!("SKU-{:06}", (order * 31 + u64::from(line)) % 100_000),
            quantity: line % 7 + 1,
            unit_price_cents: 1_999 + u64::from(line) * 100,
            currency: "EUR".to_owned(),
            warehouse: format!("WH-{:02}", order % 12),
            note: "Deliver to the loading dock at the back; call ahead. Gift wrap requested for \
                   two items. Customer prefers morning slots and recyclable packaging please."
                .to_owned(),
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = AddLine;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        AddLine(order): AddLine,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), OrderError> {
        let event = OrderEvent::line(order, self.lines + 1);
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: OrderEvent) {
        let OrderEvent::LineAdded {
            quantity,
            unit_price_cents,
            ..
        } = event;
        self.lines += 1;
        self.total_cents += unit_price_cents * u64::from(quantity);
    }
}

const SCHEMA_SQL: &str = "
CREATE TABLE events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
    event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE TABLE snapshots (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (aggregates, per_aggregate): (u64, u64) = if quick { (200, 5) } else { (1_000, 10) };
    let url = std::env::var("PEER_DATABASE_URL")
        .map_err(|_| "PEER_DATABASE_URL is not set; run `cargo xtask bench`")?;
    let schema = format!("peer_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&url).await?;
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .execute(&admin)
    .await?;
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)?
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await?;
    sqlx::raw_sql(SCHEMA_SQL).execute(&pool).await?;
    let cqrs = Arc::new(postgres_es::postgres_cqrs::<Order>(pool, vec![], ()));

    let started = Instant::now();
    let workers: Vec<_> = (0..8u64)
        .map(|worker| {
            let cqrs = cqrs.clone();
            tokio::spawn(async move {
                for _ in 0..per_aggregate {
                    for aggregate in (worker..aggregates).step_by(8) {
                        cqrs.execute(&format!("order-{aggregate}"), AddLine(aggregate))
                            .await
                            .map_err(|error| error.to_string())?;
                    }
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let took = started.elapsed().as_secs_f64();
    let per_s = (aggregates * per_aggregate) as f64 / took;
    println!(
        "{}",
        serde_json::json!({
            "workload": "W1 commands (PostgreSQL)",
            "peer": "cqrs-es 0.5 + postgres-es 0.5",
            "per_s": per_s,
        })
    );
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await?;

    let per_s = esrs_peer::w1(&url, aggregates, per_aggregate).await?;
    println!(
        "{}",
        serde_json::json!({
            "workload": "W1 commands (PostgreSQL)",
            "peer": "esrs 0.18",
            "per_s": per_s,
        })
    );
    Ok(())
}
