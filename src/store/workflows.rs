//! The workflow store: storing a workflow whole, a running step's spawn (new steps joining
//! its workflow, fenced by its lease), and reading workflows back.
//!
//! Releasing a step when its parents end is no operation here: each driver's migrations do
//! it with a trigger in the transaction of the parent's end, whichever path wrote it
//! (finish, cancel, rescue, anyone's SQL): SQLite's a row trigger (V11, V13), PostgreSQL's
//! a statement trigger counting off a whole batch of ends at once (V14). Approval steps
//! (`V13__approvals.sql`) are never released to `queued`: they end by [`WorkflowStore::decide`]
//! or [`WorkflowStore::expire_approvals`], whose end releases their dependants in turn.

use std::borrow::Cow;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::error::{DecideError, SpawnError, StoreResult, WorkflowCreateError};
use crate::approval::DecisionRecord;
use crate::lease::Held;
use crate::task::{NewTask, Task, TaskId, TaskStatus};
use crate::workflow::{
    CreatedWorkflow, NewStep, NewWorkflow, SpawnedSteps, StepsRetried, WorkflowFilter, WorkflowId, WorkflowSummary,
    WorkflowView,
};

/// New steps for the workflow of a running step, fenced by its attempt; with `completes`, the
/// attempt completed with that result too (a `complete` that carries `spawn`), written in the
/// same transaction after the steps, so the spawner's dependants are never released before
/// they wait for the new steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Spawn {
    pub held: Held,
    /// Each step's task is already checked as an enqueue is; the graph is checked by the
    /// store against the stored workflow ([`crate::workflow::StoredGraph::plan`]).
    pub steps: Vec<NewStep>,
    pub completes: Option<serde_json::Value>,
}

impl Spawn {
    /// The new steps' tasks as they are stored. When the spawner was fired by a schedule
    /// (its `schedule_name` and `scheduled_for`, read by the driver), a spawned step belongs
    /// to that fire as much as the steps created with it: it carries both, so the overlap
    /// policies see the workflow going while only spawned steps are left. Otherwise the
    /// tasks as given, borrowed.
    pub fn step_tasks(
        &self,
        schedule_name: Option<String>,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> Vec<Cow<'_, NewTask>> {
        self.steps
            .iter()
            .map(|s| match &schedule_name {
                None => Cow::Borrowed(&s.task),
                Some(name) => {
                    Cow::Owned(NewTask { schedule_name: Some(name.clone()), scheduled_for, ..s.task.clone() })
                }
            })
            .collect()
    }
}

/// What a spawn stored: the new steps, and the spawner as it now is when the spawn ended it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spawned {
    pub steps: SpawnedSteps,
    pub ended: Option<Task>,
}

#[async_trait]
pub trait WorkflowStore: Send + Sync + 'static {
    /// Stores the workflow and all its steps (and their edges) in one transaction, or
    /// nothing: steps without parents `queued`, the others `waiting`. A used idempotency
    /// key gives [`WorkflowCreateError::Duplicate`] with the workflow that holds it.
    async fn create_workflow(&self, workflow: &NewWorkflow) -> Result<CreatedWorkflow, WorkflowCreateError>;

    /// Adds `spawn`'s steps to the workflow of the running step it holds, in one transaction
    /// under the lock of the workflow, the spawner, the stored parents the new steps name and
    /// the spawner's dependants (so none of them ends between reading its status and counting
    /// it): each new step `queued` or `waiting` for its unfinished parents, and every
    /// dependant of the spawner waiting for every new step as well. Refused whole
    /// ([`SpawnError`]) when the fence does not hold, the task is no workflow step, or the
    /// graph check fails; then nothing is stored.
    async fn spawn_steps(&self, spawn: &Spawn) -> Result<Spawned, SpawnError>;

    /// The workflow with every step, in the order they were given.
    async fn get_workflow(&self, id: WorkflowId) -> StoreResult<Option<WorkflowView>>;

    /// Workflows matching the filter, newest first.
    async fn list_workflows(&self, filter: &WorkflowFilter) -> StoreResult<Vec<WorkflowSummary>>;

    /// The ids of the workflow's steps that are not finished (waiting, queued, running);
    /// `None` when there is no such workflow.
    async fn unfinished_steps(&self, id: WorkflowId) -> StoreResult<Option<Vec<TaskId>>>;

    /// Runs the workflow's failed and cancelled steps again, in one transaction under the
    /// lock of every step (so no parent ends between reading its status and counting it):
    /// each gets fresh attempts and waits for its parents that are not completed
    /// (`pending_parents` recomputed, those edges' `counted` reset so each parent's next end
    /// counts once), or is `queued` when there are none. Nothing is changed when none failed
    /// or was cancelled; `None` when there is no such workflow.
    async fn retry_workflow(&self, id: WorkflowId) -> StoreResult<Option<StepsRetried>>;

    /// How many steps of each of these workflows are in each status (a status with none
    /// is left out), in one grouped read: the dashboard's list shows a page of workflows
    /// with their counts without reading every step of each.
    async fn step_counts(&self, ids: &[WorkflowId]) -> StoreResult<StepCounts>;

    /// Ends an approval step awaiting its decision (type `approval`, a workflow step,
    /// `waiting` with no parent pending) in one fenced UPDATE: approved, `completed` with
    /// the record as its result; rejected, `failed` with the record as its result and
    /// [`DecisionRecord::rejection`] as `last_error`. The attempt is counted and
    /// `started_at` is when it began waiting for the decision. Its dependants are released
    /// in the same transaction (the trigger). Of two decisions at once (or a decision and
    /// the expiry) exactly one changes the row.
    async fn decide(&self, id: TaskId, record: &DecisionRecord) -> Result<Task, DecideError>;

    /// Fails, with `last_error` `approval_expired`, at most `limit` approval steps that
    /// have awaited their decision for `expires_after_s` or longer (fenced by the status,
    /// as [`WorkflowStore::decide`]); answers them as they now are.
    async fn expire_approvals(&self, limit: u32) -> StoreResult<Vec<Task>>;
}

/// Steps by status, per workflow ([`WorkflowStore::step_counts`]).
pub type StepCounts = std::collections::HashMap<WorkflowId, Vec<(TaskStatus, u64)>>;

/// Puts each workflow's counts in the order of [`TaskStatus::ALL`], for both drivers.
pub fn ordered_counts(mut counts: StepCounts) -> StepCounts {
    let rank = |s: &TaskStatus| TaskStatus::ALL.iter().position(|a| a == s).unwrap_or(usize::MAX);
    for v in counts.values_mut() {
        v.sort_by_key(|(s, _)| rank(s));
    }
    counts
}

/// The parents each re-run step still waits for: those among `edges` (step, parent) whose
/// parent is not completed. Shared by both drivers, which read the statuses under their locks.
pub fn pending_after_retry<K: std::hash::Hash + Eq + Clone>(
    rerun: &[K],
    edges: &[(K, K)],
    completed: impl Fn(&K) -> bool,
) -> Vec<i32> {
    let mut pending: std::collections::HashMap<K, i32> = rerun.iter().map(|k| (k.clone(), 0)).collect();
    for (step, parent) in edges {
        if !completed(parent) {
            if let Some(n) = pending.get_mut(step) {
                *n += 1;
            }
        }
    }
    rerun.iter().map(|k| pending[k]).collect()
}
