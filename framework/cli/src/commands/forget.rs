//! `annals forget <subject>`: crypto-shred a data subject.

use annals::pii::{MasterKey, PiiEventStore};
use serde_json::json;

use crate::connection::Connection;
use crate::failure::Failure;
use crate::output::{self, Format};

pub(crate) async fn run(
    connection: &Connection,
    subject: &str,
    format: Format,
) -> Result<(), Failure> {
    // Forgetting deletes the subject's key; it never unwraps one, so the
    // master key is not needed (any key will do for the handle).
    let pii = PiiEventStore::new(
        connection.store.clone(),
        connection.subject_keys(),
        MasterKey::generate(),
    );
    let forgotten = pii
        .forget_in_tenant(connection.store.tenant(), subject)
        .await?;
    match format {
        Format::Json => output::json(&json!({
            "subject": forgotten.subject,
            "tenant": forgotten.tenant,
            "streams": forgotten.streams.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "snapshots_deleted": forgotten.snapshots_deleted,
        })),
        Format::Human => {
            output::line(format!(
                "forgot subject {subject:?}{}: its key is deleted, {} stream(s) held its fields, {} snapshot(s) deleted",
                forgotten
                    .tenant
                    .as_deref()
                    .map(|tenant| format!(" of tenant {tenant:?}"))
                    .unwrap_or_default(),
                forgotten.streams.len(),
                forgotten.snapshots_deleted,
            ))?;
            output::line(
                "running services drop the key within their forget watch (1 s by default); \
                 rebuild read models that copied personal data",
            )
        }
    }
}
