//! The in-memory store's checkpoints and leases, shared by its clones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Checkpoint, CheckpointStore, Lease, refusal};
use crate::error::{Error, Result};
use crate::store::position::LogPosition;

/// Checkpoints and leases by tenant and reader name, in this process; a
/// handle sees its own tenant's (`""`: the unscoped store's).
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryCheckpoints {
    rows: Arc<Mutex<HashMap<(String, String), Checkpoint>>>,
    tenant: String,
}

fn expiry(ttl: Duration, now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

impl MemoryCheckpoints {
    /// The same rows, seen as `tenant`'s.
    pub(crate) fn for_tenant(&self, tenant: &str) -> Self {
        MemoryCheckpoints {
            rows: Arc::clone(&self.rows),
            tenant: tenant.to_owned(),
        }
    }

    fn key(&self, name: &str) -> (String, String) {
        (self.tenant.clone(), name.to_owned())
    }

    fn rows(&self) -> Result<MutexGuard<'_, HashMap<(String, String), Checkpoint>>> {
        self.rows.lock().map_err(|_| Error::Backend {
            backend: "memory",
            operation: "checkpoints",
            source: "a thread panicked while holding the checkpoints".into(),
        })
    }
}

fn lease_of(row: &Checkpoint, owner: &str) -> Lease {
    Lease {
        name: row.name.clone(),
        owner: owner.to_owned(),
        generation: row.generation,
        position: row.position,
        renewed_at: row.renewed_at.unwrap_or_default(),
        expires_at: row.lease_expires_at.unwrap_or_default(),
        paused: row.paused,
        rebuild_requested: row.rebuild_requested,
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>> {
        Ok(self.rows()?.get(&self.key(name)).cloned())
    }

    async fn list(&self) -> Result<Vec<Checkpoint>> {
        let mut rows: Vec<Checkpoint> = self
            .rows()?
            .iter()
            .filter(|((tenant, _), _)| *tenant == self.tenant)
            .map(|(_, row)| row.clone())
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    async fn save(&self, name: &str, position: LogPosition) -> Result<()> {
        position.check_storable_checkpoint(name)?;
        let mut rows = self.rows()?;
        rows.entry(self.key(name))
            .or_insert_with(|| Checkpoint {
                name: name.to_owned(),
                position,
                owner: None,
                generation: 0,
                renewed_at: None,
                lease_expires_at: None,
                paused: false,
                rebuild_requested: false,
            })
            .position = position;
        Ok(())
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        Ok(match self.rows()?.get_mut(&self.key(name)) {
            Some(row) => {
                row.paused = paused;
                true
            }
            None => false,
        })
    }

    async fn request_rebuild(&self, name: &str, requested: bool) -> Result<bool> {
        Ok(match self.rows()?.get_mut(&self.key(name)) {
            Some(row) => {
                row.rebuild_requested = requested;
                true
            }
            None => false,
        })
    }

    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        let now = Utc::now();
        let mut rows = self.rows()?;
        let row = rows.entry(self.key(name)).or_insert_with(|| Checkpoint {
            name: name.to_owned(),
            position: LogPosition::START,
            owner: None,
            generation: 0,
            renewed_at: None,
            lease_expires_at: None,
            paused: false,
            rebuild_requested: false,
        });
        let free = match (&row.owner, row.lease_expires_at) {
            (Some(_), Some(expires)) => expires <= now,
            _ => true,
        };
        if !free {
            return Ok(None);
        }
        row.owner = Some(owner.to_owned());
        row.generation += 1;
        row.renewed_at = Some(now);
        row.lease_expires_at = Some(expiry(ttl, now));
        Ok(Some(lease_of(row, owner)))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let now = Utc::now();
        let mut rows = self.rows()?;
        let Some(row) = rows.get_mut(&self.key(&lease.name)) else {
            return Ok(None);
        };
        if row.generation != lease.generation || row.owner.as_deref() != Some(&lease.owner) {
            return Ok(None);
        }
        row.renewed_at = Some(now);
        row.lease_expires_at = Some(expiry(ttl, now));
        Ok(Some(Lease {
            renewed_at: now,
            expires_at: expiry(ttl, now),
            paused: row.paused,
            rebuild_requested: row.rebuild_requested,
            ..lease.clone()
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut rows = self.rows()?;
        if let Some(row) = rows.get_mut(&self.key(&lease.name))
            && row.generation == lease.generation
            && row.owner.as_deref() == Some(&lease.owner)
        {
            row.owner = None;
            row.lease_expires_at = None;
        }
        Ok(())
    }

    async fn commit(&self, lease: &Lease, previous: LogPosition, next: LogPosition) -> Result<()> {
        next.check_storable_checkpoint(&lease.name)?;
        let mut rows = self.rows()?;
        let row = rows.get_mut(&self.key(&lease.name));
        match row {
            Some(row)
                if row.generation == lease.generation
                    && row.position == previous
                    && !row.paused =>
            {
                row.position = next;
                Ok(())
            }
            row => Err(refusal(
                lease,
                previous,
                row.map(|row| (row.generation, row.position, row.paused)),
            )),
        }
    }
}
