//! Store errors: one error type per domain operation that can fail for a reason of its own,
//! beside [`StoreError`] (defined in [`crate::failure`]), what a database failure was.
//!
//! A driver turns its client library's error into a [`StoreError`] once, keeping the source
//! chain, the database's code (SQLSTATE on PostgreSQL, the extended result code on SQLite)
//! and its message. Operations whose only failure is the database return [`StoreError`];
//! the others ([`EnqueueError`], [`CancelError`]) name their own outcomes, so the HTTP layer
//! maps each to a status without guessing from context.

pub use crate::failure::{chain, StoreError, StoreErrorKind, StoreResult};
use crate::task::{TaskId, TaskStatus};
use crate::workflow::{InvalidWorkflow, WorkflowId};

/// Why an enqueue (one task or a batch) stored nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnqueueError {
    /// The idempotency key was used before; nothing was inserted.
    #[error("idempotency key already used by task {existing}")]
    Duplicate { existing: TaskId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a cancel changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CancelError {
    #[error("no task with id {0}")]
    NotFound(TaskId),
    /// Only queued and running tasks can be cancelled.
    #[error("task {id} is already {status}")]
    NotCancellable { id: TaskId, status: TaskStatus },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a decision on an approval changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecideError {
    #[error("no task with id {0}")]
    NotFound(TaskId),
    /// Not an approval step, still waiting for its parents, or already ended.
    #[error("task {id} is not awaiting a decision: {why}")]
    NotAwaiting { id: TaskId, status: TaskStatus, why: NotAwaiting },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a task is not awaiting a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAwaiting {
    /// Its type is not `approval`, or it is no workflow step.
    NotAnApproval,
    /// An approval still waiting for its parents.
    ParentsPending,
    /// An approval that ended (decided, expired, cancelled).
    Ended,
}

impl NotAwaiting {
    /// Why, from what the row says.
    pub fn of(task_type: &str, is_step: bool, status: TaskStatus) -> NotAwaiting {
        if task_type != crate::approval::TYPE || !is_step {
            NotAwaiting::NotAnApproval
        } else if status == TaskStatus::Waiting {
            NotAwaiting::ParentsPending
        } else {
            NotAwaiting::Ended
        }
    }
}

impl std::fmt::Display for NotAwaiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotAwaiting::NotAnApproval => "it is not an approval step",
            NotAwaiting::ParentsPending => "its parents are not done yet",
            NotAwaiting::Ended => "it has already ended",
        })
    }
}

/// Why a retry changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RetryError {
    #[error("no task with id {0}")]
    NotFound(TaskId),
    /// Only failed and cancelled tasks can be retried.
    #[error("task {id} is {status}")]
    NotRetryable { id: TaskId, status: TaskStatus },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a schedule operation changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScheduleError {
    #[error("a schedule named {0:?} already exists")]
    Exists(String),
    #[error("no schedule named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why storing a workflow stored nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkflowCreateError {
    /// The workflow's idempotency key was used before.
    #[error("idempotency key already used by workflow {existing}")]
    Duplicate { existing: WorkflowId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a spawn stored nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpawnError {
    #[error("no task with id {0}")]
    NotFound(TaskId),
    /// The token no longer holds the task (rescued, cancelled, ended, claimed again).
    #[error("the lease of task {0} is lost: it was rescued, cancelled, ended or claimed again")]
    LeaseLost(TaskId),
    /// The task holds the lease but belongs to no workflow.
    #[error("task {0} is no workflow step; only a step of a workflow can spawn steps into it")]
    NotAWorkflowStep(TaskId),
    #[error(transparent)]
    Invalid(InvalidWorkflow),
    #[error(transparent)]
    Store(#[from] StoreError),
}
