//! The in-memory store's dead letters, with the saving handle's tenant.

use async_trait::async_trait;
use uuid::Uuid;

use super::InMemoryEventStore;
use crate::error::Result;
use crate::subscription::dead_letter::{DeadLetter, DeadLetterStore};

/// The dead letters of an [`InMemoryEventStore`] handle (its tenant's).
pub(super) struct MemoryDeadLetters(pub(super) InMemoryEventStore);

#[async_trait]
impl DeadLetterStore for MemoryDeadLetters {
    async fn save(&self, letter: DeadLetter) -> Result<()> {
        let tenant = self.0.own_tenant();
        self.0.write()?.dead_letters.push((tenant, letter));
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .0
            .read()?
            .dead_letters
            .iter()
            .filter(|(tenant, _)| self.0.scope().is_none_or(|scope| scope == tenant))
            .take(limit)
            .map(|(_, letter)| letter.clone())
            .collect())
    }

    async fn get(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        Ok(self
            .0
            .read()?
            .dead_letters
            .iter()
            .filter(|(tenant, _)| self.0.scope().is_none_or(|scope| scope == tenant))
            .find(|(_, letter)| letter.id == id)
            .map(|(_, letter)| letter.clone()))
    }

    async fn delete(&self, id: Uuid) -> Result<bool> {
        let mut log = self.0.write()?;
        let before = log.dead_letters.len();
        let scope = self.0.scope();
        log.dead_letters.retain(|(tenant, letter)| {
            letter.id != id || scope.is_some_and(|scope| scope != tenant)
        });
        Ok(log.dead_letters.len() < before)
    }
}
