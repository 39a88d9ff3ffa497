//! Handlers: a welcome notification for every registered user, and an audit
//! line for every permission change, both written to an outbox file (JSON
//! lines) that a mailer or a SIEM would read; nothing is sent anywhere.
//!
//! Handlers run at least once (from a checkpointed subscription), so a line
//! may repeat after a crash; each carries the event id for deduplication.
//! Without an outbox ([`open_outbox`] not called) they only count.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use annals::RecordedEvent;
use annals::prelude::*;

use crate::role::RoleEvent;
use crate::user::UserEvent;

static OUTBOX: OnceLock<Mutex<std::fs::File>> = OnceLock::new();
static WELCOMES: AtomicU64 = AtomicU64::new(0);
static PERMISSION_CHANGES: AtomicU64 = AtomicU64::new(0);

/// Sends the handlers' output to `path` (created or appended to). Only the
/// first call in a process takes effect.
pub fn open_outbox(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let _ = OUTBOX.set(Mutex::new(file));
    Ok(())
}

/// How many welcome notifications and permission-audit lines were written
/// in this process.
pub fn counts() -> (u64, u64) {
    (
        WELCOMES.load(Ordering::Relaxed),
        PERMISSION_CHANGES.load(Ordering::Relaxed),
    )
}

fn write_line(line: serde_json::Value) -> std::io::Result<()> {
    if let Some(outbox) = OUTBOX.get() {
        let mut file = outbox
            .lock()
            .map_err(|_| std::io::Error::other("the outbox lock was poisoned"))?;
        writeln!(file, "{line}")?;
    }
    Ok(())
}

/// Queues a welcome notification for a newly registered user.
#[handler(
    name = "iam.welcome",
    retry(attempts = 5, backoff = "50ms"),
    timeout = "5s"
)]
async fn send_welcome(event: &UserEvent, envelope: &RecordedEvent) -> std::io::Result<()> {
    let UserEvent::Registered {
        email,
        display_name,
        tenant,
        ..
    } = event
    else {
        return Ok(());
    };
    write_line(serde_json::json!({
        "kind": "welcome",
        "event_id": envelope.event_id,
        "tenant": tenant,
        "to": email,
        "subject": format!("Welcome, {display_name}"),
    }))?;
    WELCOMES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Records a role's permission changes for the security team.
#[handler(name = "iam.permission_audit.roles", priority = 10)]
async fn audit_role_permissions(
    event: &RoleEvent,
    envelope: &RecordedEvent,
) -> std::io::Result<()> {
    let (change, permission) = match event {
        RoleEvent::PermissionGranted { permission } => ("granted", permission),
        RoleEvent::PermissionRevoked { permission } => ("revoked", permission),
        RoleEvent::Defined { .. } => return Ok(()),
    };
    permission_line(envelope, change, permission)
}

/// Records role assignments and revocations for the security team.
#[handler(name = "iam.permission_audit.users", priority = 10)]
async fn audit_user_roles(event: &UserEvent, envelope: &RecordedEvent) -> std::io::Result<()> {
    let (change, role) = match event {
        UserEvent::RoleAssigned { role } => ("role assigned", role),
        UserEvent::RoleRevoked { role } => ("role revoked", role),
        _ => return Ok(()),
    };
    permission_line(envelope, change, role)
}

fn permission_line(envelope: &RecordedEvent, change: &str, what: &str) -> std::io::Result<()> {
    write_line(serde_json::json!({
        "kind": "permission_change",
        "event_id": envelope.event_id,
        "stream": envelope.stream_id.as_str(),
        "change": change,
        "what": what,
        "actor": envelope.metadata.actor,
        "correlation_id": envelope.metadata.correlation_id,
    }))?;
    PERMISSION_CHANGES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
