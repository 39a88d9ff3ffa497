//! The benchmark's event: an order line of about 350 bytes of JSON, with
//! metadata (correlation id, actor, tenant) like an IAM or commerce event.

use annals::prelude::*;
use annals::projection::postgres_copy::CopyRows;
use serde_json::json;

/// An order line was added.
#[event(name = "bench.order.line_added")]
pub struct LineAdded {
    /// The order.
    pub order_id: String,
    /// Line number within the order.
    pub line: u32,
    /// Stock keeping unit.
    pub sku: String,
    /// Quantity.
    pub quantity: u32,
    /// Unit price in cents.
    pub unit_price_cents: u64,
    /// ISO currency.
    pub currency: String,
    /// Warehouse.
    pub warehouse: String,
    /// Free text.
    pub note: String,
}

impl LineAdded {
    /// Line `line` of order `order`.
    pub fn sample(order: u64, line: u32) -> Self {
        LineAdded {
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

/// The JSON text of a sample payload (for the raw baselines, byte for byte
/// what Annals stores).
pub fn payload_json(order: u64, line: u32) -> String {
    serde_json::to_string(&LineAdded::sample(order, line)).unwrap_or_default()
}

/// Metadata like a real request's.
pub fn metadata(correlation: uuid::Uuid, tenant: &str) -> Metadata {
    Metadata::new()
        .with_actor("bench@example.com")
        .with_tenant(tenant)
        .with_correlation_id(correlation)
}

/// The headers JSON the raw baselines store with each row.
pub fn headers_json() -> String {
    json!({}).to_string()
}

/// An order: the aggregate of W1 and W5.
#[aggregate(name = "order", events(LineAdded), snapshot_every = 1_000_000)]
#[derive(Default, Debug)]
pub struct Order {
    /// Lines so far.
    pub lines: u32,
    /// Total in cents.
    pub total_cents: u64,
}

impl Apply<LineAdded> for Order {
    fn apply(&mut self, event: &LineAdded) {
        self.lines += 1;
        self.total_cents += event.unit_price_cents * u64::from(event.quantity);
    }
}

/// Add a line.
pub struct AddLine(pub u64);

impl Handle<AddLine> for Order {
    type Error = std::convert::Infallible;
    fn handle(&self, AddLine(order): &AddLine) -> Result<Vec<LineAdded>, Self::Error> {
        Ok(vec![LineAdded::sample(*order, self.lines + 1)])
    }
}

/// Counts lines and quantities: the in-memory projection of W3.
#[derive(Default, Debug)]
pub struct LineTotals {
    /// Lines seen.
    pub lines: u64,
    /// Quantity seen.
    pub quantity: u64,
}

#[projection(name = "bench_line_totals")]
impl LineTotals {
    fn added(&mut self, event: &LineAdded) {
        self.lines += 1;
        self.quantity += u64::from(event.quantity);
    }
}

/// One read-model row per line: the SQL projection of W4. Rows are
/// buffered and written with one `COPY` per batch (`flush`), in the
/// batch's transaction.
#[derive(Debug)]
pub struct LineRows {
    pending: CopyRows,
}

impl Default for LineRows {
    fn default() -> Self {
        LineRows {
            // Fixed, valid identifiers.
            pending: CopyRows::new("bench_lines", &["event_id", "order_id", "sku", "quantity"])
                .unwrap_or_else(|error| unreachable!("{error}")),
        }
    }
}

#[projection(
    name = "bench_line_rows",
    flush = Self::write_rows,
    table(
        name = "bench_lines",
        columns(event_id = "uuid", order_id = "text", sku = "text", quantity = "integer"),
        primary_key(event_id),
    ),
)]
impl LineRows {
    fn added(
        &mut self,
        event: &LineAdded,
        envelope: &RecordedEvent,
        _db: &mut sqlx::PgConnection,
    ) -> annals::Result<()> {
        self.pending.push(&[
            envelope.event_id.into(),
            event.order_id.as_str().into(),
            event.sku.as_str().into(),
            i64::from(event.quantity).into(),
        ])
    }
}

impl LineRows {
    async fn write_rows(&mut self, db: &mut sqlx::PgConnection) -> annals::Result<()> {
        self.pending.write(db).await.map(|_| ())
    }
}
