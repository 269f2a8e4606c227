//! The worker registry: remote workers that take tasks over the HTTP worker protocol.

use async_trait::async_trait;

use super::error::StoreResult;
use crate::registration::{NewWorker, WorkerRecord};
use crate::task::WorkerId;

/// The domain operations on registered workers. Their claimed tasks are `tasks` rows with
/// `locked_by` = the worker's id; the task store's operations fence them.
#[async_trait]
pub trait WorkerStore: Send + Sync + 'static {
    /// Records a new worker (heard from now).
    async fn register(&self, id: &WorkerId, worker: &NewWorker) -> StoreResult<WorkerRecord>;

    /// Records a heartbeat; `None` when there is no such worker (deregistered).
    async fn beat(&self, id: &WorkerId) -> StoreResult<Option<WorkerRecord>>;

    async fn get(&self, id: &WorkerId) -> StoreResult<Option<WorkerRecord>>;

    /// Removes the worker and gives its running tasks back to the queue in the same
    /// transaction, their attempts not counted. `None` when there is no such worker, else
    /// how many tasks went back.
    async fn deregister(&self, id: &WorkerId) -> StoreResult<Option<u64>>;

    /// Every registered worker with the number of tasks it holds, newest first.
    async fn list(&self) -> StoreResult<Vec<(WorkerRecord, u64)>>;

    /// The task types registered workers serve.
    async fn served_types(&self) -> StoreResult<Vec<String>>;
}
