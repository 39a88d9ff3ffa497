//! `#[projection]` handlers: sync and async, with and without the envelope,
//! with a context, returning nothing or a `Result`; default name and version.

use annals::{Projection, RecordedEvent};

#[annals::event(name = "iam.tenant.created")]
pub struct TenantCreated {
    pub name: String,
}

#[annals::event]
pub enum UserEvent {
    #[event(name = "iam.user.registered")]
    Registered { email: String },
}

#[derive(Default)]
pub struct TenantNames {
    names: Vec<String>,
}

#[annals::projection]
impl TenantNames {
    fn created(&mut self, event: &TenantCreated) {
        self.names.push(event.name.clone());
    }

    async fn registered(&mut self, _event: &UserEvent, envelope: &RecordedEvent) -> Result<(), std::io::Error> {
        self.names.push(envelope.stream_id.to_string());
        Ok(())
    }
}

impl TenantNames {
    pub fn helper(&self) -> usize {
        self.names.len()
    }
}

pub struct Outbox;

#[annals::projection(
    name = "outbox",
    version = 7,
    table(
        name = "outbox_lines",
        columns(id = "uuid", line = "text", sent = "boolean", sent_at = "timestamp?", attempts = "integer"),
        primary_key(id),
        index(sent, sent_at),
        index(line),
    ),
    table(name = "outbox_meta", columns(key = "text", value = "json?"), primary_key(key)),
)]
impl Outbox {
    async fn created(&mut self, event: &TenantCreated, envelope: &RecordedEvent, lines: &mut Vec<String>) {
        lines.push(format!("{} {}", envelope.version, event.name));
    }

    fn registered(&mut self, event: &UserEvent, lines: &mut Vec<String>) {
        let UserEvent::Registered { email } = event;
        lines.push(email.clone());
    }
}

fn main() {
    assert_eq!(<TenantNames as Projection>::NAME, "tenant_names");
    assert_eq!(<TenantNames as Projection>::VERSION, 1);
    assert_eq!(<Outbox as Projection>::NAME, "outbox");
    assert_eq!(<Outbox as Projection>::VERSION, 7);
    assert_eq!(<Outbox as Projection>::event_types(), ["iam.tenant.created", "iam.user.registered"]);
    assert_eq!(TenantNames::default().helper(), 0);
    let outbox = annals::registry::projections()
        .find(|projection| projection.name == "outbox")
        .expect("registered");
    assert_eq!(outbox.tables.len(), 2);
    assert_eq!(outbox.tables[0].primary_key, ["id"]);
    assert_eq!(outbox.tables[0].indexes, [&["sent", "sent_at"][..], &["line"][..]]);
    assert!(outbox.tables[0].columns[3].nullable);
    assert_eq!(outbox.tables[1].columns[1].column_type, annals::registry::ColumnType::Json);
}
