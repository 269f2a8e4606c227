//! Queue controls: the service behind `/queues`, the MCP tools and the dashboard.
//!
//! [`Queues`] lists queues, reads one, changes its limits, pauses and resumes it. Every
//! change wakes this process's claimers at once (a raised limit or a resume frees work);
//! on PostgreSQL the store also notifies the fleet in the change's transaction. The limits
//! themselves live in the claim ([`crate::store::AttemptStore::claim`]).

use std::sync::Arc;

use crate::queue::{check_name, QueueView, SettingsChange};
use crate::store::{QueueStore, StoreError};
use crate::task::InvalidField;
use crate::wakeups::Fanout;

/// Why a queue operation did nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The name or the change breaks a rule; names the field.
    #[error("{0}")]
    Invalid(InvalidField),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        QueueError::Store(e)
    }
}

/// The queue controls of one daemon.
pub struct Queues {
    store: Arc<dyn QueueStore>,
    wake: Arc<Fanout>,
}

impl Queues {
    pub fn new(store: Arc<dyn QueueStore>, wake: Arc<Fanout>) -> Self {
        Queues { store, wake }
    }

    pub async fn list(&self) -> Result<Vec<QueueView>, QueueError> {
        Ok(self.store.list_queues().await?)
    }

    pub async fn get(&self, name: &str) -> Result<QueueView, QueueError> {
        check_name(name).map_err(QueueError::Invalid)?;
        Ok(self.store.get_queue(name).await?)
    }

    /// Applies a change of limits; the next claim anywhere obeys it.
    pub async fn change(&self, name: &str, change: &SettingsChange) -> Result<QueueView, QueueError> {
        check_name(name).map_err(QueueError::Invalid)?;
        let s = self.store.change_queue(name, change).await?;
        tracing::info!(queue = name, concurrency = ?s.concurrency, key_concurrency = ?s.key_concurrency,
                       rate = ?s.rate, "queue limits changed");
        self.wake.work_available();
        Ok(self.store.get_queue(name).await?)
    }

    /// Pauses (nobody claims from the queue; its running tasks go on) or resumes.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<QueueView, QueueError> {
        check_name(name).map_err(QueueError::Invalid)?;
        self.store.set_queue_paused(name, paused).await?;
        tracing::info!(queue = name, paused, "queue paused or resumed");
        if !paused {
            self.wake.work_available();
        }
        Ok(self.store.get_queue(name).await?)
    }
}
