//! The in-memory store's snapshots, per (tenant, stream), by version.

use async_trait::async_trait;

use super::InMemoryEventStore;
use crate::aggregate::snapshot::{RetentionPolicy, Snapshot, SnapshotStore};
use crate::error::Result;
use crate::store::stream::StreamId;

/// The snapshots of an [`InMemoryEventStore`] handle (its tenant's).
pub(super) struct MemorySnapshots(pub(super) InMemoryEventStore);

#[async_trait]
impl SnapshotStore for MemorySnapshots {
    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        let mut log = self.0.write()?;
        log.snapshots
            .entry((self.0.own_tenant(), snapshot.stream_id.clone()))
            .or_default()
            .insert(snapshot.version, snapshot);
        Ok(())
    }

    async fn load(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<Snapshot>> {
        let log = self.0.read()?;
        let key = (self.0.own_tenant(), stream.clone());
        Ok(log.snapshots.get(&key).and_then(|by_version| {
            by_version
                .range(..=max_version.unwrap_or(u64::MAX))
                .next_back()
                .map(|(_, snapshot)| snapshot.clone())
        }))
    }

    async fn prune(&self, policy: &RetentionPolicy) -> Result<u64> {
        let cutoff = policy.cutoff();
        let mut log = self.0.write()?;
        let mut deleted = 0;
        let scope = self.0.scope();
        for ((tenant, _), by_version) in log.snapshots.iter_mut() {
            // A tenant handle prunes its own; the unscoped store, every one.
            if scope.is_some_and(|scope| scope != tenant) {
                continue;
            }
            let keep_from = policy
                .keep_last
                .map_or(0, |keep| by_version.len().saturating_sub(keep));
            let doomed: Vec<u64> = by_version
                .values()
                .enumerate()
                .filter(|(rank, snapshot)| {
                    *rank < keep_from || cutoff.is_some_and(|at| snapshot.taken_at < at)
                })
                .map(|(_, snapshot)| snapshot.version)
                .collect();
            for version in doomed {
                by_version.remove(&version);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn delete_stream(&self, stream: &StreamId) -> Result<u64> {
        let mut log = self.0.write()?;
        Ok(log
            .snapshots
            .remove(&(self.0.own_tenant(), stream.clone()))
            .map_or(0, |by_version| by_version.len() as u64))
    }
}
