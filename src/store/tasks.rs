//! The task store: the domain operations the daemon needs on `tasks`, and their parameters.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::error::{CancelError, EnqueueError, RetryError, StoreResult};
use crate::remote::model::LeaseToken;
use crate::task::{NewTask, RetryPolicy, Task, TaskFilter, TaskId, TaskStatus, WorkerId};

/// Declares a driver's column list of `tasks`, once: the `Col` enum (a column's position in
/// every read), `NAMES` (every column, in `Col` order) and `COLUMNS` (the select list, each
/// name after `prefix`). Each driver invokes it with its dialect's list and reads, inserts
/// and copies rows through it.
macro_rules! task_columns {
    (prefix = $prefix:literal; $first_col:ident => $first:literal $(, $col:ident => $name:literal)* $(,)?) => {
        /// A column of `tasks`; its discriminant is its position in `COLUMNS`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Col { $first_col $(, $col)* }
        /// Every column of `tasks`, in `Col` order.
        pub(crate) const NAMES: &[&str] = &[$first $(, $name)*];
        /// The select list of every read.
        pub(super) const COLUMNS: &str = concat!($prefix, $first $(, ", ", $prefix, $name)*);
    };
}
pub(crate) use task_columns;

/// Ask for up to `limit` due tasks of these types (and queues), leased to `worker` for
/// `lease`.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    pub worker: WorkerId,
    pub limit: usize,
    pub lease: Duration,
    /// Only tasks of these types: a worker claims only what it can run.
    pub types: Vec<String>,
    /// Only tasks in these queues; `None` takes every queue.
    pub queues: Option<Vec<String>>,
}

/// What a lease renewal found.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseState {
    /// Still ours; the lease now ends at this time.
    Held { until: DateTime<Utc> },
    /// The attempt was cancelled: stop it (nothing it reports will be kept).
    Cancelled,
    /// Not ours any more (rescued, finished, or claimed again).
    Lost,
}

/// The retry policy as the rescue statements take it: base and cap in microseconds, and
/// the smallest jitter factor. Each driver computes `min(cap, base · 2^(attempts-1))`
/// scaled by a random factor in [`crate::tunables::RETRY_JITTER_MIN`, 1] per row, the
/// formula of [`RetryPolicy::delay`].
pub(crate) fn backoff_params(retry: &RetryPolicy) -> (i64, i64, f64) {
    let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    (us(retry.base), us(retry.cap), crate::tunables::RETRY_JITTER_MIN)
}

/// A count that stops at a cap: `capped` says the true number is `n` or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Count {
    pub n: u64,
    pub capped: bool,
}

impl Count {
    /// Reads a count of at most `cap + 1` rows: one more than the cap means "at least".
    pub fn of(counted: u64, cap: u64) -> Count {
        if counted > cap {
            Count { n: cap, capped: true }
        } else {
            Count { n: counted, capped: false }
        }
    }
}

/// Completions and failures that finished in one minute.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MinuteCounts {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub completed: u64,
    pub failed: u64,
}

/// What the dashboard's overview shows, read in bounded time whatever the table's size.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Overview {
    /// Tasks per status, each counted up to the cap.
    pub by_status: Vec<(TaskStatus, Count)>,
    /// Queued and running tasks per queue, from at most `cap + 1` of them: `capped` says the
    /// queues' numbers are those of a prefix of the active tasks.
    pub active_by_queue: Vec<(String, u64, u64)>,
    pub active_by_queue_capped: bool,
    /// When the oldest queued task was created.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Minutes of the chart's window that saw a completion or a failure, oldest first.
    pub per_minute: Vec<MinuteCounts>,
}

/// How one attempt ended, as the store records it.
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
pub trait TaskStore: Send + Sync + 'static {
    /// Inserts a task. A used idempotency key gives [`EnqueueError::Duplicate`].
    async fn enqueue(&self, task: NewTask) -> Result<Task, EnqueueError>;

    /// Inserts many tasks in one transaction: all or none. Any used idempotency key
    /// (in the store or twice in the batch) gives [`EnqueueError::Duplicate`].
    async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, EnqueueError>;

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

    /// Writes one attempt's end, fenced like [`TaskStore::finish`], and returns the task as
    /// it now is; `None` when the fence refused it.
    async fn finish_one(&self, worker: &WorkerId, outcome: &Outcome) -> StoreResult<Option<Task>>;

    /// Gives running tasks back to the queue without counting their attempt (graceful
    /// shutdown). Returns how many were given back.
    async fn release(&self, worker: &WorkerId, ids: &[TaskId]) -> StoreResult<u64>;

    /// Cancels a queued or running task. A running task's daemon is told (on PostgreSQL
    /// by a `jct_cancel` notification, everywhere by its next heartbeat) and its late
    /// result is refused by the fence.
    async fn cancel(&self, id: TaskId) -> Result<Task, CancelError>;

    async fn get(&self, id: TaskId) -> StoreResult<Option<Task>>;

    /// Tasks matching the filter, newest first: by id, which is time-ordered (UUIDv7, to
    /// the millisecond) whoever inserts the row.
    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>>;

    /// Returns running tasks whose lease expired (their daemon died or hung while running
    /// them) to `queued` at `now + retry.delay(attempts)`, the same backoff as a failed
    /// attempt, or to `failed` when their attempts are used up: a task that kills every
    /// daemon that runs it cannot take a fleet down one daemon after another within seconds.
    /// `last_error` names the lease, its worker and the attempt. Returns how many were
    /// rescued.
    async fn rescue_expired(&self, retry: &RetryPolicy) -> StoreResult<u64>;

    /// The earliest `run_at` among queued tasks not yet due, for the producer's timer.
    async fn next_scheduled(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// How many tasks are in each status (statuses with none may be missing).
    async fn count_by_status(&self) -> StoreResult<Vec<(TaskStatus, u64)>>;

    /// Answers when the database does; for `/ready`.
    async fn ping(&self) -> StoreResult<()>;

    /// Renews the lease of one attempt held under `token`, or says why it cannot.
    async fn renew(&self, id: TaskId, token: &LeaseToken, lease: Duration) -> StoreResult<LeaseState>;

    /// Whether the task is running under exactly this attempt's lease.
    async fn holds(&self, id: TaskId, token: &LeaseToken) -> StoreResult<bool>;

    /// Gives one attempt back to the queue without counting it; false when the token no
    /// longer holds the task.
    async fn release_attempt(&self, id: TaskId, token: &LeaseToken) -> StoreResult<bool>;

    /// How many tasks `worker` holds (running under its id).
    async fn running_count(&self, worker: &WorkerId) -> StoreResult<u64>;

    /// Which of `ids` are not running under `worker` any more (cancelled, rescued, ended).
    async fn not_held(&self, worker: &WorkerId, ids: &[TaskId]) -> StoreResult<Vec<TaskId>>;

    /// Queues a failed or cancelled task again with a fresh attempt budget.
    async fn retry(&self, id: TaskId) -> Result<Task, RetryError>;

    /// Queued tasks per type (for `/metrics`: a type nobody serves waits here).
    async fn queued_by_type(&self) -> StoreResult<Vec<(String, u64)>>;

    /// Cancels those of `ids` that are queued or running, in one statement (callers pass
    /// bounded chunks), telling running tasks' daemons as [`TaskStore::cancel`] does.
    /// Returns the ids cancelled; the others were missing or already over.
    async fn cancel_many(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskId>>;

    /// Queues those of `ids` that are failed or cancelled again with a fresh attempt
    /// budget, as [`TaskStore::retry`] does, in one statement. Returns the ids queued.
    async fn retry_many(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskId>>;

    /// Ids of tasks matching the filter, newest first (the filter's `before` and `limit`
    /// page them; `offset` is ignored): what a bulk action by filter walks, chunk by chunk.
    async fn list_ids(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskId>>;

    /// The dashboard's overview: counts capped at `cap`, and the completions and failures
    /// per minute since `since`.
    async fn overview(&self, cap: u64, since: DateTime<Utc>) -> StoreResult<Overview>;
}
