//! The store: a trait of domain operations on tasks, and its two implementations.
//!
//! The rest of the daemon never sees SQL. Each implementation owns its dialect, its
//! migrations and its connection handling; both pass the same conformance suite
//! (`tests/store_conformance.rs`). Which one runs is chosen once, from `DATABASE_URL`,
//! by [`Backend::open`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::DatabaseUrl;
use crate::task::{NewTask, Task, TaskFilter, TaskId, TaskStatus, WorkerId};

pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Why a store operation did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The idempotency key was used before; nothing was inserted.
    #[error("idempotency key already used by task {existing}")]
    Duplicate { existing: TaskId },
    #[error("task not found")]
    NotFound,
    /// The task is not in a state that allows the operation.
    #[error("task is {status}")]
    WrongState { status: TaskStatus },
    /// The database cannot be reached or refused the connection.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, a constraint we did not expect, a corrupt row.
    #[error("store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Ask for up to `limit` due tasks, leased to `worker` for `lease`.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    pub worker: WorkerId,
    pub limit: usize,
    pub lease: Duration,
}

/// How one attempt ended, as the completer writes it back.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// The handler returned; the task is `completed` with this result.
    Completed { result: Value },
    /// The attempt failed and another will run at `run_at`.
    Retry { error: String, run_at: DateTime<Utc> },
    /// The attempt failed and no other will run; the task is `failed`.
    Failed { error: String },
}

/// One attempt's end, fenced by the attempt number it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: TaskId,
    /// The `attempts` value the claim returned; a write for an older attempt is refused.
    pub attempt: i32,
    pub finish: Finish,
}

/// The domain operations the daemon needs from a database.
///
/// Every write that ends an attempt is fenced: it applies only while the task is still
/// `running` under the caller's lease and attempt, so a daemon that lost its lease can
/// never overwrite the work of the daemon that took over.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a task. A used idempotency key gives [`StoreError::Duplicate`].
    async fn enqueue(&self, task: NewTask) -> StoreResult<Task>;

    /// Inserts many tasks in one transaction: all or none. Any used idempotency key
    /// (in the store or twice in the batch) gives [`StoreError::Duplicate`].
    async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskId>>;

    /// Atomically moves up to `limit` due, queued tasks to `running` (highest priority,
    /// then earliest `run_at`), counting an attempt and taking a lease. Never hands the
    /// same task to two callers.
    async fn claim(&self, params: &ClaimParams) -> StoreResult<Vec<Task>>;

    /// Extends the lease of these running tasks; returns the ids that were still ours
    /// (the others were cancelled or rescued, and their handlers should stop).
    async fn heartbeat(&self, worker: &WorkerId, ids: &[TaskId], lease: Duration) -> StoreResult<Vec<TaskId>>;

    /// Writes the end of attempts. Returns the ids whose write applied; the others were
    /// no longer running under this worker's lease and attempt.
    async fn finish(&self, worker: &WorkerId, outcomes: &[Outcome]) -> StoreResult<Vec<TaskId>>;

    /// Gives running tasks back to the queue without counting their attempt (graceful
    /// shutdown). Returns how many were given back.
    async fn release(&self, worker: &WorkerId, ids: &[TaskId]) -> StoreResult<u64>;

    /// Cancels a queued or running task. A running task's daemon is told (on PostgreSQL
    /// by a `jct_cancel` notification, everywhere by its next heartbeat) and its late
    /// result is refused by the fence. [`StoreError::WrongState`] for a final task.
    async fn cancel(&self, id: TaskId) -> StoreResult<Task>;

    async fn get(&self, id: TaskId) -> StoreResult<Option<Task>>;

    /// Tasks matching the filter, newest first: by id on PostgreSQL, where ids are
    /// time-ordered (UUIDv7, to the millisecond) whoever inserts the row, by `created_at`
    /// then id on SQLite.
    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>>;

    /// Returns running tasks whose lease expired to `queued`, or to `failed` when their
    /// attempts are used up. Returns how many were rescued.
    async fn rescue_expired(&self) -> StoreResult<u64>;

    /// The earliest `run_at` among queued tasks not yet due, for the producer's timer.
    async fn next_scheduled(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// How many tasks are in each status (statuses with none may be missing).
    async fn count_by_status(&self) -> StoreResult<Vec<(TaskStatus, u64)>>;

    /// Answers when the database does; for `/ready`.
    async fn ping(&self) -> StoreResult<()>;
}

/// An open, migrated database of either kind. The task store and the layers above it
/// (CWOM) share its connections.
#[derive(Clone)]
pub enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Backend {
    /// Opens (and migrates) the database `DATABASE_URL` names.
    pub async fn open(url: &DatabaseUrl, pool_size: usize) -> StoreResult<Backend> {
        Ok(match url {
            DatabaseUrl::Sqlite(path) => Backend::Sqlite(SqliteStore::open(path).await?),
            DatabaseUrl::Postgres(url) => Backend::Postgres(PgStore::connect(url, pool_size).await?),
        })
    }

    /// The task store on this database.
    pub fn tasks(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(s) => Arc::new(s.clone()),
            Backend::Postgres(s) => Arc::new(s.clone()),
        }
    }
}

/// Seconds of a lease as the float both dialects take.
pub(crate) fn lease_secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}
