//! What every backend agrees on about tenants: a tenant id's shape, that a
//! stream belongs to one tenant (so one append's events name one), and that
//! a store not scoped to a tenant cannot read a stream id several tenants
//! hold. PostgreSQL enforces the scoping with row-level security; SQLite
//! and the in-memory store filter by tenant in their own code.

use crate::error::{Error, Result};
use crate::event::envelope::NewEvent;
use crate::store::stream::StreamId;

/// The longest tenant id, in bytes.
pub(crate) const MAX_TENANT_ID_LEN: usize = 128;

/// Checks a tenant id for a tenant handle: 1 to 128 bytes, no control
/// characters.
pub(crate) fn validate_tenant_id(tenant: &str) -> Result<()> {
    if tenant.is_empty() || tenant.len() > MAX_TENANT_ID_LEN || tenant.chars().any(char::is_control)
    {
        return Err(Error::invalid(
            "tenant id",
            format!("{tenant:?} must be 1 to {MAX_TENANT_ID_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

/// The tenant one stream append's events name (`""` for none): a stream
/// belongs to one tenant, so they must all name the same one.
pub(crate) fn stream_tenant(stream: &StreamId, events: &[NewEvent]) -> Result<String> {
    fn tenant_of(event: &NewEvent) -> Option<&str> {
        event.metadata.tenant_id.as_deref()
    }
    let first = events.first().and_then(tenant_of);
    if let Some(other) = events.iter().map(tenant_of).find(|tenant| *tenant != first) {
        let show =
            |tenant: Option<&str>| tenant.map_or_else(|| "none".to_owned(), |t| format!("{t:?}"));
        return Err(Error::invalid(
            "tenant id",
            format!(
                "the events of one append to stream `{stream}` name different tenants ({} and {}): a stream belongs to one tenant",
                show(first),
                show(other)
            ),
        ));
    }
    Ok(first.unwrap_or("").to_owned())
}

/// A tenant handle's events: those naming no tenant get the handle's, and
/// one naming another tenant is refused (nothing of the append is written).
pub(crate) fn stamp_tenant(tenant: &str, events: &mut [NewEvent]) -> Result<()> {
    for event in events {
        match event.metadata.tenant_id.as_deref() {
            None => event.metadata.tenant_id = Some(tenant.to_owned()),
            Some(named) if named == tenant => {}
            Some(_) => {
                return Err(Error::invalid(
                    "tenant id",
                    format!(
                        "a store scoped to tenant {tenant:?} appends only that tenant's events; event {} names another",
                        event.event_id
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a stream id that `holders` tenants hold (only a store not
/// scoped to a tenant sees more than one): it cannot tell which is meant.
pub(crate) fn check_one_holder(stream: &StreamId, holders: usize) -> Result<()> {
    if holders > 1 {
        return Err(Error::invalid(
            "stream id",
            format!(
                "stream `{stream}` exists in {holders} tenants, and this store is not scoped to \
                 one, so it cannot tell which is meant: read it through a tenant handle \
                 (`for_tenant`)"
            ),
        ));
    }
    Ok(())
}
