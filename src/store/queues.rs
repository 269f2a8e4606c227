//! The queue store: each queue's pause and limits, and its live tasks by status.
//!
//! The limits themselves are enforced in [`super::AttemptStore::claim`], by each driver,
//! inside the claim: a claim from a limited queue holds the queue's row (`FOR UPDATE` on
//! PostgreSQL; SQLite has one writer) while it counts the queue's running tasks, so no two
//! claims anywhere in the fleet can both take the last slot.

use async_trait::async_trait;

use super::error::StoreResult;
use crate::queue::{QueueSettings, QueueView, SettingsChange};
use crate::tunables::{LIMITED_CLAIM_SCAN_MAX, LIMITED_CLAIM_SCAN_MIN, LIMITED_CLAIM_SCAN_PER_TASK};

/// How many queued tasks a claim of `want` from a limited queue looks at.
pub(crate) fn limited_scan(want: usize) -> i64 {
    (want as i64).saturating_mul(LIMITED_CLAIM_SCAN_PER_TASK).clamp(LIMITED_CLAIM_SCAN_MIN, LIMITED_CLAIM_SCAN_MAX)
}

/// Queues and their controls.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Every queue that has a setting or a live task, by name.
    async fn list_queues(&self) -> StoreResult<Vec<QueueView>>;

    /// One queue (the defaults and zero counts for a queue nobody has used).
    async fn get_queue(&self, name: &str) -> StoreResult<QueueView>;

    /// Applies a change of limits (creating the queue's row); the next claim obeys it.
    async fn change_queue(&self, name: &str, change: &SettingsChange) -> StoreResult<QueueSettings>;

    /// Pauses or resumes (creating the queue's row). On PostgreSQL a resume notifies the
    /// fleet in the same transaction.
    async fn set_queue_paused(&self, name: &str, paused: bool) -> StoreResult<QueueSettings>;
}
