//! `#[handler]` forms: with and without the envelope, returning nothing or
//! a `Result`, with every option and with none.

use annals::RecordedEvent;

#[annals::event(name = "iam.user.registered")]
pub struct UserRegistered {
    pub email: String,
}

#[annals::event]
pub enum TenantEvent {
    #[event(name = "iam.tenant.created")]
    Created,
    #[event(name = "iam.tenant.suspended")]
    Suspended,
}

#[annals::handler]
async fn plain(_event: &UserRegistered) {}

#[annals::handler(name = "iam.welcome", priority = -3, retry(attempts = 7, backoff = "1s"), timeout = "2m")]
async fn welcome(event: &UserRegistered, envelope: &RecordedEvent) -> Result<(), String> {
    if event.email.is_empty() {
        return Err(format!("no email in {}", envelope.stream_id));
    }
    Ok(())
}

#[annals::handler(retry(backoff = "250ms"))]
pub async fn tenant_audit(_event: &TenantEvent) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}

fn main() {
    let welcome = annals::registry::handlers().find(|h| h.name == "iam.welcome").expect("registered");
    assert_eq!((welcome.priority, welcome.retry.attempts), (-3, 7));
    assert_eq!(welcome.timeout, Some(std::time::Duration::from_secs(120)));
    let audit = annals::registry::handlers_for("iam.tenant.suspended");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].retry.backoff, std::time::Duration::from_millis(250));
}
