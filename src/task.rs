//! The task: its id, its states, a validated spec for a new one, and the stored row.
//!
//! Everything here is plain data shared by the store, the API and the worker. The rules
//! for what a valid task looks like live in [`NewTask::validate`], so the HTTP API and
//! any future intake (batch, CWOM bridge) refuse the same things with the same words.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::storable;
use crate::tunables;

/// A task's id: a UUID (v7 when made by the daemon, any version when made by SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        TaskId(Uuid::now_v7())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(TaskId)
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// A workflow step whose parents are not all done: never claimed. Left, in the
    /// transaction of its last parent's end, for `queued`, or for `cancelled` when a parent
    /// failed or was cancelled and the step's `on_parent_failure` is `cancel`; or by a cancel.
    Waiting,
    /// Waiting to be claimed once `run_at` has passed. Left by a claim.
    Queued,
    /// Claimed by a daemon that holds its lease. Left by completion, failure (to
    /// `queued` for a retry or `failed`), cancellation, a graceful hand-back, or the
    /// rescuer when the lease expires.
    Running,
    /// The handler returned a result. Final.
    Completed,
    /// The last attempt failed, or the task could never run (unknown type). Final.
    Failed,
    /// Cancelled through the API. Final.
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Waiting,
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown task status {s:?}"))
    }
}

/// A workflow's id (see [`crate::workflow`]): a time-ordered UUID, so lists page newest first by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct WorkflowId(pub Uuid);

impl WorkflowId {
    pub fn new() -> Self {
        WorkflowId(Uuid::now_v7())
    }
}

impl Default for WorkflowId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for WorkflowId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(WorkflowId)
    }
}

/// How one parent of a step ended, as the step's claim and `input.json` carry it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ParentOutcome {
    pub task_id: TaskId,
    pub status: TaskStatus,
    /// The parent's result, when it completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The parent's `last_error`, when it did not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ParentOutcome {
    /// Keeps the result of a completed parent and the error of any other.
    pub fn new(task_id: TaskId, status: TaskStatus, result: Option<Value>, error: Option<String>) -> Self {
        if status == TaskStatus::Completed {
            ParentOutcome { task_id, status, result: Some(result.unwrap_or(Value::Null)), error: None }
        } else {
            ParentOutcome { task_id, status, result: None, error: Some(error.unwrap_or_else(|| status.to_string())) }
        }
    }
}

/// A step's parents by key.
pub type Parents = BTreeMap<String, ParentOutcome>;

/// Defaults shared by the API, the SQL column defaults and the README.
pub mod defaults {
    pub const QUEUE: &str = "default";
    pub const MAX_ATTEMPTS: i32 = 3;
    pub const TIMEOUT_SECONDS: i32 = 900;
}

/// Limits on what a task may carry.
pub mod limits {
    pub const TYPE_MAX: usize = 128;
    pub const QUEUE_MAX: usize = 128;
    pub const IDEMPOTENCY_KEY_MAX: usize = 256;
    pub const CONCURRENCY_KEY_MAX: usize = 256;
    pub const TRACE_ID_MAX: usize = 128;
    /// A CWOM id's limit (`cwom::types::limits::ID_MAX`), checked before the lookup.
    pub const CWOM_ISSUE_ID_MAX: usize = 128;
    pub const MAX_ATTEMPTS_MAX: i32 = 100;
    pub const TIMEOUT_SECONDS_MAX: i32 = 7 * 24 * 3600;
}

/// A task about to be stored, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub id: TaskId,
    pub task_type: String,
    pub payload: Value,
    pub queue: String,
    pub priority: i32,
    /// `None` means "now, by the store's clock".
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
    /// The CWOM Issue this task's runs are recorded under, if any.
    pub cwom_issue_id: Option<String>,
    /// The schedule whose fire made this task, and the tick it fired for (set only by a
    /// schedule's fire).
    pub schedule_name: Option<String>,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Tasks of one key run at most the queue's `key_concurrency` at a time.
    pub concurrency_key: Option<String>,
}

impl NewTask {
    /// A task with every optional field at its default.
    pub fn new(task_type: impl Into<String>, payload: Value) -> Self {
        NewTask {
            id: TaskId::new(),
            task_type: task_type.into(),
            payload,
            queue: defaults::QUEUE.to_string(),
            priority: 0,
            run_at: None,
            max_attempts: defaults::MAX_ATTEMPTS,
            timeout_seconds: defaults::TIMEOUT_SECONDS,
            idempotency_key: None,
            trace_id: None,
            cwom_issue_id: None,
            schedule_name: None,
            scheduled_for: None,
            concurrency_key: None,
        }
    }

    /// Checks the field limits and what both stores can hold (see [`crate::storable`]),
    /// and returns the task ready for either store (`run_at` cut to the microsecond).
    /// The error names the field, or a JSON pointer inside `payload`.
    pub fn checked(mut self) -> Result<NewTask, InvalidField> {
        let len = |field: &'static str, value: &str, max: usize| {
            if value.is_empty() || value.chars().count() > max {
                return Err(InvalidField::new(field, format!("must be 1 to {max} characters")));
            }
            storable::check_text(field, value).map_err(InvalidField::from)
        };
        len("type", &self.task_type, limits::TYPE_MAX)?;
        len("queue", &self.queue, limits::QUEUE_MAX)?;
        if let Some(key) = &self.idempotency_key {
            len("idempotency_key", key, limits::IDEMPOTENCY_KEY_MAX)?;
        }
        if let Some(key) = &self.concurrency_key {
            len("concurrency_key", key, limits::CONCURRENCY_KEY_MAX)?;
        }
        if let Some(trace) = &self.trace_id {
            len("trace_id", trace, limits::TRACE_ID_MAX)?;
        }
        if let Some(issue) = &self.cwom_issue_id {
            len("cwom_issue_id", issue, limits::CWOM_ISSUE_ID_MAX)?;
        }
        if !(1..=limits::MAX_ATTEMPTS_MAX).contains(&self.max_attempts) {
            return Err(InvalidField::new("max_attempts", format!("must be from 1 to {}", limits::MAX_ATTEMPTS_MAX)));
        }
        if !(1..=limits::TIMEOUT_SECONDS_MAX).contains(&self.timeout_seconds) {
            return Err(InvalidField::new(
                "timeout_seconds",
                format!("must be from 1 to {}", limits::TIMEOUT_SECONDS_MAX),
            ));
        }
        storable::check_json("/payload", &self.payload)?;
        if let Some(t) = self.run_at {
            self.run_at = Some(storable::check_time("run_at", t)?);
        }
        Ok(self)
    }
}

/// A field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The field's name, or a JSON pointer (`/payload/a/0`) for a place inside a document.
    pub field: String,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidField { field: field.into(), reason: reason.into() }
    }
}

impl From<storable::Unstorable> for InvalidField {
    fn from(e: storable::Unstorable) -> Self {
        InvalidField { field: e.field, reason: e.reason }
    }
}

/// When failed attempts run again: `base · 2^(attempt-1)`, capped, then scaled by a random
/// factor in [`tunables::RETRY_JITTER_MIN`, 1] so that tasks failing together do not retry
/// in lockstep. The same policy spaces the attempts of a task whose lease expired (its
/// daemon died while running it): see [`crate::store::TaskStore::rescue_expired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { base: tunables::DEFAULT_RETRY_BASE, cap: tunables::DEFAULT_RETRY_CAP }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`.
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = attempt.clamp(1, 30) - 1;
        let raw = self.base.saturating_mul(1u32 << exp).min(self.cap);
        raw.mul_f64(tunables::RETRY_JITTER_MIN + (1.0 - tunables::RETRY_JITTER_MIN) * rand::random::<f64>())
    }
}

/// A stored task, as the API shows it and the worker runs it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Task {
    pub id: TaskId,
    /// The same as `id`, under the name the enqueue contract uses.
    pub task_id: TaskId,
    #[serde(rename = "type")]
    pub task_type: String,
    pub payload: Value,
    pub status: TaskStatus,
    pub queue: String,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    /// The handler's output once completed.
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The CWOM Issue this task's runs are recorded under, if any.
    pub cwom_issue_id: Option<String>,
    /// The schedule that fired this task, if one did, and the tick it fired for (the
    /// trigger's instant for `POST /schedules/{name}/trigger`).
    pub schedule_name: Option<String>,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Held to its queue's `key_concurrency` with the other tasks of this key.
    pub concurrency_key: Option<String>,
    /// The workflow this task is a step of, and its key there (both or neither).
    pub workflow_id: Option<WorkflowId>,
    pub step_key: Option<String>,
    /// A step's parents as they ended, by key: filled in by the claim (local and remote)
    /// for steps, absent everywhere else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parents: Option<Parents>,
}

/// Filters for listing tasks, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub task_type: Option<String>,
    pub queue: Option<String>,
    /// Only tasks recorded under this CWOM Issue.
    pub cwom_issue_id: Option<String>,
    /// Only tasks fired by this schedule.
    pub schedule_name: Option<String>,
    /// Keyset paging: only tasks older than this one (ids are time-ordered), so the next
    /// page costs the same on a million rows as the first, where `offset` reads and skips
    /// every row before it.
    pub before: Option<TaskId>,
    pub limit: u32,
    pub offset: u64,
}

impl TaskFilter {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 1000;
}

/// The id of one worker (a daemon's own, or a registered remote one), stamped into
/// `locked_by` on every claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl WorkerId {
    /// `host:pid:random`, readable in `locked_by` and unique across restarts.
    pub fn generate() -> Self {
        let host = host_name();
        let short = Uuid::new_v4().simple().to_string();
        WorkerId(format!("{host}:{}:{}", std::process::id(), &short[..8]))
    }
}

/// This machine's name as the kernel has it (what `uname -n` prints; in a container, the
/// container's), or `host` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
