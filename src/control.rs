//! Operator actions on tasks that exist: cancel and retry, one at a time or in bulk, the
//! cancel and retry of a whole workflow, and the decision on an approval step.
//!
//! Each action is a store operation followed by what it must set moving: a cancel stops
//! the task at once if it runs in this process (other daemons hear of it through the
//! `jct_cancel` notification, or their next heartbeat), and a retry wakes every waiting
//! claimant (on PostgreSQL the "became claimable" trigger wakes the rest of the fleet).
//! Bulk actions walk their selection in chunks of [`BULK_CHUNK`], each one short
//! statement, so no request holds many locks or one long transaction.

use std::sync::Arc;

use crate::approval::DecisionRecord;
use crate::attempt::Lifecycle;
use crate::store::{CancelError, DecideError, RetryError, StoreError, TaskStore};
use crate::task::{Task, TaskFilter, TaskId};
use crate::tunables::BULK_CHUNK;
use crate::wakeups::Fanout;
use crate::workflow::{StepsRetried, WorkflowId};

/// What a bulk request selects: tasks by id, or every task matching a filter.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<TaskId>),
    Filter(TaskFilter),
}

/// What a bulk action does to each selected task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    Cancel,
    Retry,
}

impl BulkAction {
    pub fn name(self) -> &'static str {
        match self {
            BulkAction::Cancel => "cancel",
            BulkAction::Retry => "retry",
        }
    }
}

/// How a bulk action went: how many tasks it selected and how many it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct BulkResult {
    /// `cancel` or `retry`.
    pub action: &'static str,
    /// Tasks the ids or the filter named.
    pub matched: u64,
    /// Of those, the ones cancelled (were queued or running) or queued again (were failed or cancelled).
    pub changed: u64,
}

/// The operator actions of one daemon.
pub struct Control {
    store: Arc<dyn TaskStore>,
    wake: Arc<Fanout>,
    /// Records an approval's decision as an attempt's end is recorded (trace folder, Run).
    lifecycle: Arc<Lifecycle>,
}

impl Control {
    pub fn new(store: Arc<dyn TaskStore>, wake: Arc<Fanout>, lifecycle: Arc<Lifecycle>) -> Self {
        Control { store, wake, lifecycle }
    }

    /// Decides an approval step awaiting its decision ([`crate::store::WorkflowStore::decide`]):
    /// its dependants are released in the same transaction; the trace folder and, for a
    /// linked step, the CWOM Run record the decision before this answers.
    pub async fn decide(&self, id: TaskId, record: &DecisionRecord) -> Result<Task, DecideError> {
        let task = self.store.decide(id, record).await?;
        // Approved: its dependants may be queued now; rejected: its `run` dependants.
        self.wake.work_available();
        tracing::info!(task_id = %task.id, decision = record.decision.as_str(), by = record.by.as_deref().unwrap_or(""), "approval decided");
        self.lifecycle.approval_ended(&task, Some(record)).await;
        Ok(task)
    }

    /// Cancels a waiting, queued or running task.
    pub async fn cancel(&self, id: TaskId) -> Result<Task, CancelError> {
        let task = self.store.cancel(id).await?;
        // Running here? Stop it now rather than at the next heartbeat.
        self.wake.cancelled(task.id);
        if task.workflow_id.is_some() {
            // Its `run` dependants may have become queued in the cancel's transaction.
            self.wake.work_available();
        }
        tracing::info!(task_id = %task.id, "task cancelled");
        Ok(task)
    }

    /// Cancels every unfinished step of a workflow (waiting, queued, running) in one
    /// statement; running ones are stopped as [`Control::cancel`] stops one. `None`: no such
    /// workflow. Answers how many steps it cancelled.
    ///
    /// One statement, not [`BULK_CHUNK`]s: a workflow has at most
    /// [`crate::workflow::limits::STEPS_MAX`] steps, and in chunks the first chunk's ends
    /// would release `run` steps of later chunks, which could start before their chunk.
    pub async fn cancel_workflow(&self, id: WorkflowId) -> Result<Option<u64>, StoreError> {
        let Some(steps) = self.store.unfinished_steps(id).await? else {
            return Ok(None);
        };
        let changed = self.apply(BulkAction::Cancel, &steps).await?;
        tracing::info!(workflow_id = %id, cancelled = changed, "workflow cancelled");
        Ok(Some(changed))
    }

    /// Runs a workflow's failed and cancelled steps again and re-opens the dependants they
    /// cancelled ([`crate::store::WorkflowStore::retry_workflow`]); `None` when there is no
    /// such workflow.
    pub async fn retry_workflow(&self, id: WorkflowId) -> Result<Option<StepsRetried>, StoreError> {
        let retried = self.store.retry_workflow(id).await?;
        if let Some(r) = retried {
            if r.requeued > 0 {
                self.wake.work_available();
            }
            tracing::info!(workflow_id = %id, requeued = r.requeued, reopened = r.reopened, "workflow retried");
        }
        Ok(retried)
    }

    /// Queues a failed or cancelled task again with a fresh attempt budget.
    pub async fn retry(&self, id: TaskId) -> Result<Task, RetryError> {
        let task = self.store.retry(id).await?;
        self.wake.work_available();
        tracing::info!(task_id = %task.id, "task queued again by retry");
        Ok(task)
    }

    /// Applies `action` to the selection, chunk by chunk. A filter selects the tasks that
    /// match when the walk starts (newer ones have higher ids than where it starts).
    pub async fn bulk(&self, action: BulkAction, selection: Selection) -> Result<BulkResult, StoreError> {
        let (mut matched, mut changed) = (0u64, 0u64);
        match selection {
            Selection::Ids(ids) => {
                for chunk in ids.chunks(BULK_CHUNK) {
                    matched += chunk.len() as u64;
                    changed += self.apply(action, chunk).await?;
                }
            }
            Selection::Filter(mut filter) => {
                filter.limit = BULK_CHUNK as u32;
                loop {
                    let ids = self.store.list_ids(&filter).await?;
                    let Some(last) = ids.last() else { break };
                    filter.before = Some(*last);
                    matched += ids.len() as u64;
                    changed += self.apply(action, &ids).await?;
                }
            }
        }
        tracing::info!(action = action.name(), matched, changed, "bulk action");
        Ok(BulkResult { action: action.name(), matched, changed })
    }

    async fn apply(&self, action: BulkAction, ids: &[TaskId]) -> Result<u64, StoreError> {
        Ok(match action {
            BulkAction::Cancel => {
                let cancelled = self.store.cancel_many(ids).await?;
                for id in &cancelled {
                    self.wake.cancelled(*id);
                }
                cancelled.len() as u64
            }
            BulkAction::Retry => {
                let retried = self.store.retry_many(ids).await?;
                if !retried.is_empty() {
                    self.wake.work_available();
                }
                retried.len() as u64
            }
        })
    }
}
