//! The in-memory store's dead letters, with the saving handle's tenant.

use async_trait::async_trait;
use chrono::SubsecRound;
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

    async fn request_retry(&self, id: Uuid) -> Result<bool> {
        let scope = self.0.scope();
        let mut log = self.0.write()?;
        let letter = log
            .dead_letters
            .iter_mut()
            .find(|(tenant, letter)| letter.id == id && scope.is_none_or(|scope| scope == tenant));
        Ok(match letter {
            Some((_, letter)) => {
                letter.retry_requested_at = Some(chrono::Utc::now().trunc_subsecs(6));
                true
            }
            None => false,
        })
    }

    async fn retry_requests(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut requested: Vec<DeadLetter> = self
            .0
            .read()?
            .dead_letters
            .iter()
            .filter(|(tenant, letter)| {
                letter.retry_requested_at.is_some()
                    && self.0.scope().is_none_or(|scope| scope == tenant)
            })
            .map(|(_, letter)| letter.clone())
            .collect();
        requested.sort_by_key(|letter| (letter.retry_requested_at, letter.id));
        requested.truncate(limit);
        Ok(requested)
    }

    async fn retry_failed(&self, id: Uuid, error: &str, attempts: u32) -> Result<()> {
        let scope = self.0.scope();
        let mut log = self.0.write()?;
        if let Some((_, letter)) = log
            .dead_letters
            .iter_mut()
            .find(|(tenant, letter)| letter.id == id && scope.is_none_or(|scope| scope == tenant))
        {
            letter.error = error.to_owned();
            letter.attempts = letter.attempts.saturating_add(attempts);
            letter.failed_at = chrono::Utc::now().trunc_subsecs(6);
            letter.retry_requested_at = None;
        }
        Ok(())
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
