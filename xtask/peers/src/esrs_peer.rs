//! W1 on esrs 0.18 (Prima's event sourcing crate) with its PostgreSQL store:
//! each command loads the aggregate and persists one event.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use esrs::manager::AggregateManager;
use esrs::store::postgres::{PgStore, PgStoreBuilder};
use esrs::{Aggregate, AggregateState};

use crate::OrderEvent;

pub(crate) struct Order;

#[derive(Default)]
pub(crate) struct OrderState {
    lines: u32,
    total_cents: u64,
}

pub(crate) struct AddLine(pub(crate) u64);

#[derive(Debug)]
pub(crate) struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl Aggregate for Order {
    const NAME: &'static str = "bench_order";
    type State = OrderState;
    type Command = AddLine;
    type Event = OrderEvent;
    type Error = Never;

    fn handle_command(
        state: &OrderState,
        AddLine(order): AddLine,
    ) -> Result<Vec<OrderEvent>, Never> {
        Ok(vec![OrderEvent::line(order, state.lines + 1)])
    }

    fn apply_event(mut state: OrderState, event: OrderEvent) -> OrderState {
        let OrderEvent::LineAdded {
            quantity,
            unit_price_cents,
            ..
        } = event;
        state.lines += 1;
        state.total_cents += unit_price_cents * u64::from(quantity);
        state
    }
}

/// Commands per second for `aggregates` x `per_aggregate` commands.
pub(crate) async fn w1(
    url: &str,
    aggregates: u64,
    per_aggregate: u64,
) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    let schema = format!("peer_esrs_{}", std::process::id());
    let admin = sqlx::PgPool::connect(url).await?;
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .execute(&admin)
    .await?;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await?;
    let store: PgStore<Order> = PgStoreBuilder::new(pool).try_build().await?;
    let manager = Arc::new(AggregateManager::new(store));
    let ids: Arc<Vec<uuid::Uuid>> =
        Arc::new((0..aggregates).map(|_| uuid::Uuid::new_v4()).collect());

    let started = Instant::now();
    let workers: Vec<_> = (0..8u64)
        .map(|worker| {
            let manager = manager.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                for _ in 0..per_aggregate {
                    for aggregate in (worker..aggregates).step_by(8) {
                        let id = ids[aggregate as usize];
                        let state = manager
                            .load(id)
                            .await
                            .map_err(|error| error.to_string())?
                            .unwrap_or_else(|| AggregateState::with_id(id));
                        manager
                            .handle_command(state, AddLine(aggregate))
                            .await
                            .map_err(|error| error.to_string())?
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
    let per_s = (aggregates * per_aggregate) as f64 / started.elapsed().as_secs_f64();
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await?;
    Ok(per_s)
}
