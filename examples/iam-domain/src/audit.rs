//! The audit trail: every IAM event with who did it, in which request and
//! tenant, queryable by actor and by correlation id. It records what
//! happened, never personal data (an email change says "email changed").

use annals::RecordedEvent;
use annals::prelude::*;
use annals::projection::sql_read_model::SqlConnection;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::role::RoleEvent;
use crate::tenant::TenantEvent;
use crate::user::UserEvent;

/// The audit-trail projection (SQL).
#[derive(Debug, Default)]
pub struct AuditTrail;

#[projection(
    name = "iam_audit_trail",
    version = 1,
    table(
        name = "iam_audit",
        columns(
            event_id = "uuid",
            tenant_id = "text?",
            actor = "text?",
            correlation_id = "uuid?",
            event_type = "text",
            stream_id = "text",
            version = "integer",
            recorded_at = "timestamp",
            summary = "text",
        ),
        primary_key(event_id),
        index(actor, recorded_at),
        index(correlation_id),
    )
)]
impl AuditTrail {
    async fn tenant(
        &mut self,
        event: &TenantEvent,
        envelope: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> annals::Result<()> {
        let summary = match event {
            TenantEvent::Created { .. } => "tenant created".to_owned(),
            TenantEvent::Renamed { .. } => "tenant renamed".to_owned(),
            TenantEvent::Suspended { reason } => format!("tenant suspended: {reason}"),
            TenantEvent::Reactivated => "tenant reactivated".to_owned(),
        };
        record(db, envelope, &summary).await
    }

    async fn role(
        &mut self,
        event: &RoleEvent,
        envelope: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> annals::Result<()> {
        let summary = match event {
            RoleEvent::Defined { permissions, .. } => {
                format!("role defined with {} permissions", permissions.len())
            }
            RoleEvent::PermissionGranted { permission } => format!("granted {permission}"),
            RoleEvent::PermissionRevoked { permission } => format!("revoked {permission}"),
        };
        record(db, envelope, &summary).await
    }

    async fn user(
        &mut self,
        event: &UserEvent,
        envelope: &RecordedEvent,
        db: &mut dyn SqlConnection,
    ) -> annals::Result<()> {
        let summary = match event {
            UserEvent::Registered { .. } => "user registered".to_owned(),
            UserEvent::EmailChanged { .. } => "email changed".to_owned(),
            UserEvent::RoleAssigned { role } => format!("role {role} assigned"),
            UserEvent::RoleRevoked { role } => format!("role {role} revoked"),
            UserEvent::Deactivated => "user deactivated".to_owned(),
        };
        record(db, envelope, &summary).await
    }
}

async fn record(
    db: &mut dyn SqlConnection,
    envelope: &RecordedEvent,
    summary: &str,
) -> annals::Result<()> {
    let metadata = &envelope.metadata;
    db.execute(
        "INSERT INTO iam_audit (event_id, tenant_id, actor, correlation_id, event_type, stream_id, version, recorded_at, summary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
        &[
            envelope.event_id.into(),
            metadata.tenant_id.clone().into(),
            metadata.actor.clone().into(),
            metadata.correlation_id.into(),
            envelope.event_type.as_str().into(),
            envelope.stream_id.as_str().into(),
            i64::try_from(envelope.version).unwrap_or(i64::MAX).into(),
            envelope.recorded_at.into(),
            summary.into(),
        ],
    )
    .await
    .map(drop)
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who did it.
    pub actor: Option<String>,
    /// The stream it happened on.
    pub stream_id: String,
    /// What happened.
    pub summary: String,
}

/// An [`AuditEntry`] as its columns read.
type EntryRow = (DateTime<Utc>, Option<String>, String, String);

fn entry((recorded_at, actor, stream_id, summary): EntryRow) -> AuditEntry {
    AuditEntry {
        recorded_at,
        actor,
        stream_id,
        summary,
    }
}

/// What `actor` did, newest first.
pub async fn by_actor(
    db: &mut dyn SqlConnection,
    actor: &str,
    limit: i64,
) -> annals::Result<Vec<AuditEntry>> {
    let rows: Vec<EntryRow> = db
        .fetch_rows(
            "SELECT recorded_at, actor, stream_id, summary FROM iam_audit WHERE actor = $1 \
             ORDER BY recorded_at DESC, event_id DESC LIMIT $2",
            &[actor.into(), limit.into()],
        )
        .await?;
    Ok(rows.into_iter().map(entry).collect())
}

/// Everything one request (correlation id) did, in order.
pub async fn by_correlation(
    db: &mut dyn SqlConnection,
    correlation_id: Uuid,
) -> annals::Result<Vec<AuditEntry>> {
    let rows: Vec<EntryRow> = db
        .fetch_rows(
            "SELECT recorded_at, actor, stream_id, summary FROM iam_audit WHERE correlation_id = $1 \
             ORDER BY recorded_at, event_id",
            &[correlation_id.into()],
        )
        .await?;
    Ok(rows.into_iter().map(entry).collect())
}

/// What one request (correlation id) did in `tenant`, in order: nothing
/// another tenant's events recorded under the same id.
pub async fn by_correlation_in(
    db: &mut dyn SqlConnection,
    tenant: &str,
    correlation_id: Uuid,
) -> annals::Result<Vec<AuditEntry>> {
    let rows: Vec<EntryRow> = db
        .fetch_rows(
            "SELECT recorded_at, actor, stream_id, summary FROM iam_audit \
             WHERE correlation_id = $1 AND tenant_id = $2 ORDER BY recorded_at, event_id",
            &[correlation_id.into(), tenant.into()],
        )
        .await?;
    Ok(rows.into_iter().map(entry).collect())
}
