//! The task store: the domain operations the daemon needs on `tasks`, grouped by concern
//! into five traits, and their parameters.
//!
//! | trait | who calls it | operations |
//! |---|---|---|
//! | [`IntakeStore`] | `crate::intake` | enqueue one task or a batch |
//! | [`AttemptStore`] | the worker, the worker protocol | claim, renew, finish, release, holds, running count: every write fenced by a [`Held`] |
//! | [`OperatorStore`] | `crate::control` | cancel and retry, one task or many |
//! | [`TaskReads`] | the API, the dashboard, the producer | get, list, counts, the overview, the next due time, ping |
//! | [`MaintenanceStore`] | `crate::maintenance` | lease rescue, leadership |
//! | [`WorkflowStore`] | `crate::intake`, `crate::control`, `crate::remote`, the API | a workflow stored whole, a running step's spawn (fenced by a [`Held`]), read, its unfinished steps |
//!
//! [`TaskStore`] is all six, what a driver implements and what the daemon holds.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::error::{CancelError, EnqueueError, RetryError, StoreResult};
use super::workflows::WorkflowStore;
use crate::lease::Held;
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

/// Replaces the `$from` references in the payloads of the claimed steps among `tasks` (their
/// `parents` already attached) and takes out those whose references do not resolve: the
/// answer is their ends, `failed` with the reason, for the driver to write through the
/// normal fenced [`AttemptStore::finish`] before the claim returns. No retry: the parents
/// have ended and will not change, so another attempt would fail the same way.
/// Why at the claim and not in the release trigger: the `workflow` module's doc.
pub fn resolve_claimed(tasks: &mut Vec<Task>) -> Vec<AttemptEnd> {
    let mut ends = Vec::new();
    tasks.retain_mut(|t| {
        let Some(parents) = &t.parents else { return true };
        match crate::workflow::resolve_references(&t.payload, parents) {
            Ok(None) => true,
            Ok(Some(resolved)) => {
                t.payload = resolved;
                true
            }
            Err(error) => {
                let worker = WorkerId(t.locked_by.clone().unwrap_or_default());
                ends.push(AttemptEnd { held: Held::new(t.id, worker, t.attempts), finish: Finish::Failed { error } });
                false
            }
        }
    });
    ends
}

/// One attempt's end, fenced by the attempt it belongs to: written only while the task is
/// `running` under exactly that holder and attempt number.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    pub held: Held,
    pub finish: Finish,
}

impl AttemptEnd {
    pub fn id(&self) -> TaskId {
        self.held.id
    }
}

/// Renew the leases of these attempts for `lease`.
#[derive(Debug, Clone, Copy)]
pub struct RenewParams<'a> {
    pub attempts: &'a [Held],
    pub lease: Duration,
}

/// An attempt the rescuer ended because its lease expired.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescued {
    pub id: TaskId,
    /// The attempt whose lease expired.
    pub attempt: i32,
    /// Who held it.
    pub worker: Option<String>,
    /// `queued` (it will run again) or `failed` (its attempts are used up).
    pub status: TaskStatus,
    pub cwom_issue_id: Option<String>,
    /// When the expired attempt was claimed.
    pub started_at: Option<DateTime<Utc>>,
}

/// Take or keep the leadership `name` for `holder` until `ttl` from now.
#[derive(Debug, Clone, Copy)]
pub struct LeadParams<'a> {
    pub name: &'a str,
    pub holder: &'a str,
    pub ttl: Duration,
}

/// How tasks enter the table.
/// The status part of a task's retry, the same in both dialects: a plain task or step is
/// `queued` again; an approval step goes back to awaiting its decision (`waiting`, no parent
/// pending), without the decision it had, since no worker may ever claim one.
pub(crate) const RETRY_RESET: &str = "status = CASE WHEN type = 'approval' AND workflow_id IS NOT NULL \
       THEN 'waiting' ELSE 'queued' END, \
     pending_parents = CASE WHEN type = 'approval' AND workflow_id IS NOT NULL THEN 0 ELSE pending_parents END, \
     result = CASE WHEN type = 'approval' AND workflow_id IS NOT NULL THEN NULL ELSE result END";

#[async_trait]
pub trait IntakeStore: Send + Sync + 'static {
    /// Inserts a task. A used idempotency key gives [`EnqueueError::Duplicate`].
    async fn enqueue(&self, task: NewTask) -> Result<Task, EnqueueError>;

    /// Inserts many tasks in one transaction: all or none. Any used idempotency key
    /// (in the store or twice in the batch) gives [`EnqueueError::Duplicate`].
    async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, EnqueueError>;
}

/// One attempt's life in the table, local and remote alike.
///
/// Every write is fenced by a [`Held`]: it applies only while the task is still `running`
/// under that holder and attempt, so a holder that lost its lease can never overwrite the
/// work of the holder that took over, and an end is decided exactly once.
#[async_trait]
pub trait AttemptStore: Send + Sync + 'static {
    /// Atomically moves up to `limit` due, queued tasks to `running` (highest priority,
    /// then earliest `run_at`), counting an attempt and taking a lease. Never hands the
    /// same task to two callers.
    async fn claim(&self, params: &ClaimParams) -> StoreResult<Vec<Task>>;

    /// Extends the leases of these attempts; answers each one's state, in the order asked
    /// ([`LeaseState::Cancelled`] when it was cancelled, [`LeaseState::Lost`] when it is
    /// not running under that fence any more: ended, rescued or claimed again).
    async fn renew(&self, params: RenewParams<'_>) -> StoreResult<Vec<LeaseState>>;

    /// Writes the end of attempts; returns the ids of those whose write applied. The others
    /// were no longer running under their fence.
    async fn finish(&self, ends: &[AttemptEnd]) -> StoreResult<Vec<TaskId>>;

    /// Writes one attempt's end, as [`AttemptStore::finish`], and answers the task as it now
    /// is, for a caller that reports it (a remote worker's `complete` or `fail`); `None` when
    /// the fence no longer matched. Only ids come back from the batch write: reading whole
    /// rows back costs the drain more than the write itself.
    async fn finish_reporting(&self, end: &AttemptEnd) -> StoreResult<Option<Task>>;

    /// Gives attempts back to the queue without counting them (shutdown, a worker's
    /// release). Returns the ids given back.
    async fn release(&self, attempts: &[Held]) -> StoreResult<Vec<TaskId>>;

    /// Whether the task is running under exactly this attempt's fence.
    async fn holds(&self, attempt: &Held) -> StoreResult<bool>;

    /// How many tasks `worker` holds (running under its id).
    async fn running_count(&self, worker: &WorkerId) -> StoreResult<u64>;
}

/// What an operator does to tasks that exist.
#[async_trait]
pub trait OperatorStore: Send + Sync + 'static {
    /// Cancels a waiting, queued or running task. A running task's daemon is told (on PostgreSQL
    /// by a `jct_cancel` notification, everywhere by its next heartbeat) and its late
    /// result is refused by the fence.
    async fn cancel(&self, id: TaskId) -> Result<Task, CancelError>;

    /// Cancels those of `ids` that are waiting, queued or running, in one statement (callers pass
    /// bounded chunks), telling running tasks' daemons as [`OperatorStore::cancel`] does.
    /// Returns the ids cancelled; the others were missing or already over.
    async fn cancel_many(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskId>>;

    /// Queues a failed or cancelled task again with a fresh attempt budget.
    async fn retry(&self, id: TaskId) -> Result<Task, RetryError>;

    /// Queues those of `ids` that are failed or cancelled again with a fresh attempt
    /// budget, as [`OperatorStore::retry`] does, in one statement. Returns the ids queued.
    async fn retry_many(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskId>>;
}

/// Reads: nothing here changes a row.
#[async_trait]
pub trait TaskReads: Send + Sync + 'static {
    async fn get(&self, id: TaskId) -> StoreResult<Option<Task>>;

    /// Tasks matching the filter, newest first: by id, which is time-ordered (UUIDv7, to
    /// the millisecond) whoever inserts the row.
    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>>;

    /// Ids of tasks matching the filter, newest first (the filter's `before` and `limit`
    /// page them; `offset` is ignored): what a bulk action by filter walks, chunk by chunk.
    async fn list_ids(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskId>>;

    /// The earliest `run_at` among queued tasks not yet due, for the producer's timer.
    async fn next_scheduled(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// How many tasks are in each status (statuses with none may be missing).
    async fn count_by_status(&self) -> StoreResult<Vec<(TaskStatus, u64)>>;

    /// Queued tasks per type (for `/metrics`: a type nobody serves waits here).
    async fn queued_by_type(&self) -> StoreResult<Vec<(String, u64)>>;

    /// The dashboard's overview: counts capped at `cap`, and the completions and failures
    /// per minute since `since`.
    async fn overview(&self, cap: u64, since: DateTime<Utc>) -> StoreResult<Overview>;

    /// Answers when the database does; for `/ready`.
    async fn ping(&self) -> StoreResult<()>;
}

/// What the periodic maintenance services do to the table.
#[async_trait]
pub trait MaintenanceStore: Send + Sync + 'static {
    /// Returns running tasks whose lease expired (their daemon died or hung while running
    /// them) to `queued` at `now + retry.delay(attempts)`, the same backoff as a failed
    /// attempt, or to `failed` when their attempts are used up: a task that kills every
    /// daemon that runs it cannot take a fleet down one daemon after another within seconds.
    /// `last_error` names the lease, its worker and the attempt. Returns what it rescued.
    async fn rescue_expired(&self, retry: &RetryPolicy) -> StoreResult<Vec<Rescued>>;

    /// Takes the leadership `name` for `holder` when nobody holds it or its lease ran out,
    /// or extends it when `holder` already has it. Returns whether `holder` leads now.
    async fn lead(&self, params: LeadParams<'_>) -> StoreResult<bool>;

    /// Gives the leadership up, if `holder` has it (a clean shutdown hands over at once).
    async fn resign(&self, name: &str, holder: &str) -> StoreResult<()>;
}

/// Every task operation: what a driver implements and the daemon holds. Workflows are
/// tasks, so their store is part of it.
pub trait TaskStore: IntakeStore + AttemptStore + OperatorStore + TaskReads + MaintenanceStore + WorkflowStore {}

impl<T: IntakeStore + AttemptStore + OperatorStore + TaskReads + MaintenanceStore + WorkflowStore> TaskStore for T {}
