//! Intake: the one way work enters the queue.
//!
//! Every caller that adds tasks comes here: the HTTP routes (single and batch enqueue), the
//! MCP server and the dashboard (both through those routes), and the daemon's own services
//! (schedule ticks through [`Intake::fire`], workflows through [`Intake::enqueue_workflow`], the
//! steps a running step spawns through [`Intake::admit_steps`], stored by the worker protocol).
//! For each task the intake checks what a validated [`NewTask`] cannot know alone:
//! - the type is known here ([`TaskTypes`]: the built-in handlers, `JCT_TASK_TYPES`, the
//!   types registered workers serve);
//! - its executor admits the payload ([`Registry::admit`]: allowlisted programs and
//!   repositories);
//! - the CWOM Issue it links to exists;
//! - a batch uses no idempotency key twice.
//!
//! Then it writes through the store, wakes the fleet ([`Fanout`]) and counts the tasks.
//! Its refusals are [`IntakeError`], mapped to HTTP once, in `api/error.rs`. Whether a
//! value can be stored at all (NUL, time range) is asked before, by [`crate::storable`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::cwom_service::Cwom;
use crate::handlers::{Refusal, Registry};
use crate::metrics::Metrics;
use crate::schedule::{FireOutcome, Work};
use crate::store::{
    EnqueueError, FireParams, Fired, ScheduleError, ScheduleStore, StoreError, TaskStore, WorkflowCreateError,
};
use crate::task::{NewTask, Task, TaskId};
use crate::wakeups::Fanout;
use crate::workflow::{CreatedWorkflow, NewStep, NewWorkflow, WorkflowId};

mod types;

pub use types::TaskTypes;

/// Why the intake stored nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    #[error("unknown task type {given:?}; known types: {known}")]
    UnknownType { given: String, known: String },
    /// A type only a workflow step may have (`approval`), enqueued as a task of its own.
    #[error("type: {0:?} is a workflow step type (POST /workflows); a task of its own would wait for a decision it cannot be given")]
    StepOnlyType(String),
    /// The task's executor will not take this payload; the code says which rule.
    #[error("{}", .0.message)]
    NotAdmitted(Refusal),
    #[error("cwom_issue_id: no Issue with id {0:?}")]
    MissingIssue(String),
    /// One task of a batch was refused; the whole batch is.
    #[error("task [{index}] of the batch: {source}")]
    InBatch { index: usize, source: Box<IntakeError> },
    #[error("tasks [{first}] and [{second}] of the batch use the same idempotency_key")]
    DuplicateKeyInBatch { first: usize, second: usize },
    /// The idempotency key was used before; nothing was inserted.
    #[error("idempotency key already used by task {existing}")]
    Duplicate { existing: TaskId },
    /// One step of a workflow was refused; the whole workflow is.
    #[error("step [{index}] ({key}) of the workflow: {source}")]
    InStep { index: usize, key: String, source: Box<IntakeError> },
    /// The workflow's idempotency key was used before; nothing was stored.
    #[error("idempotency key already used by workflow {existing}")]
    DuplicateWorkflow { existing: WorkflowId },
    /// A schedule's fire found no schedule of that name (deleted meanwhile).
    #[error("no schedule named {0:?}")]
    NoSchedule(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ScheduleError> for IntakeError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::NotFound(name) => IntakeError::NoSchedule(name),
            ScheduleError::Exists(name) => IntakeError::Store(StoreError::internal(format!("schedule {name} exists"))),
            ScheduleError::Store(e) => IntakeError::Store(e),
        }
    }
}

impl From<crate::cwom::CwomError> for IntakeError {
    fn from(e: crate::cwom::CwomError) -> Self {
        match e {
            crate::cwom::CwomError::Store(e) => IntakeError::Store(e),
            other => IntakeError::Store(StoreError::internal(other.to_string())),
        }
    }
}

impl From<WorkflowCreateError> for IntakeError {
    fn from(e: WorkflowCreateError) -> Self {
        match e {
            WorkflowCreateError::Duplicate { existing } => IntakeError::DuplicateWorkflow { existing },
            WorkflowCreateError::Store(e) => IntakeError::Store(e),
        }
    }
}

impl From<EnqueueError> for IntakeError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::Duplicate { existing } => IntakeError::Duplicate { existing },
            EnqueueError::Store(e) => IntakeError::Store(e),
        }
    }
}

/// The intake service of one daemon.
pub struct Intake {
    store: Arc<dyn TaskStore>,
    /// Where schedules' fires are written (the fire and its task in one transaction).
    schedules: Arc<dyn ScheduleStore>,
    types: Arc<TaskTypes>,
    executors: Arc<Registry>,
    cwom: Cwom,
    wake: Arc<Fanout>,
    metrics: Arc<Metrics>,
}

impl Intake {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn TaskStore>,
        schedules: Arc<dyn ScheduleStore>,
        types: Arc<TaskTypes>,
        executors: Arc<Registry>,
        cwom: Cwom,
        wake: Arc<Fanout>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Intake { store, schedules, types, executors, cwom, wake, metrics }
    }

    /// The task types this deployment knows.
    pub fn types(&self) -> &Arc<TaskTypes> {
        &self.types
    }

    /// Checks and stores one task; wakes the fleet.
    pub async fn enqueue(&self, task: NewTask) -> Result<Task, IntakeError> {
        let tasks = std::slice::from_ref(&task);
        self.check(tasks, false).await.map_err(|(_, e)| e)?;
        let stored = self.store.enqueue(task).await?;
        self.entered(&[(stored.task_type.as_str(), 1)]);
        tracing::debug!(task_id = %stored.id, task_type = %stored.task_type, "task enqueued");
        Ok(stored)
    }

    /// Checks and stores tasks in one transaction, all or none; wakes the fleet once.
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, IntakeError> {
        check_batch_keys(&tasks)?;
        self.check(&tasks, false)
            .await
            .map_err(|(index, source)| IntakeError::InBatch { index, source: Box::new(source) })?;
        // Counted by type before the tasks move into the store (types are few).
        let mut per_type: Vec<(String, u64)> = Vec::new();
        for t in &tasks {
            match per_type.iter_mut().find(|(ty, _)| *ty == t.task_type) {
                Some((_, n)) => *n += 1,
                None => per_type.push((t.task_type.clone(), 1)),
            }
        }
        let ids = self.store.enqueue_batch(tasks).await?;
        let counts: Vec<(&str, u64)> = per_type.iter().map(|(ty, n)| (ty.as_str(), *n)).collect();
        self.entered(&counts);
        tracing::debug!(count = ids.len(), "batch enqueued");
        Ok(ids)
    }

    /// Checks every step as an enqueue is checked (and the workflow's CWOM link), then
    /// stores the workflow whole in one transaction ([`crate::store::WorkflowStore`]);
    /// wakes the fleet once for the steps that are queued at once.
    pub async fn enqueue_workflow(&self, workflow: NewWorkflow) -> Result<CreatedWorkflow, IntakeError> {
        if let Some(issue) = workflow.cwom_issue_id.as_deref() {
            if !self.cwom.issue_exists(issue).await? {
                return Err(IntakeError::MissingIssue(issue.to_string()));
            }
        }
        let tasks: Vec<NewTask> = workflow.steps.iter().map(|s| s.task.clone()).collect();
        self.check(&tasks, true).await.map_err(|(index, source)| IntakeError::InStep {
            index,
            key: workflow.steps[index].key.to_string(),
            source: Box::new(source),
        })?;
        let per_type = by_type(&tasks);
        let created = self.store.create_workflow(&workflow).await?;
        self.entered(&per_type);
        tracing::debug!(workflow_id = %created.workflow_id, steps = created.steps.len(), "workflow stored");
        Ok(created)
    }

    /// Checks steps a running step spawns as an enqueue is checked (types, admission, CWOM
    /// links), naming the step refused by index and key. The store checks their graph.
    pub async fn admit_steps(&self, steps: &[NewStep]) -> Result<(), IntakeError> {
        let tasks: Vec<NewTask> = steps.iter().map(|s| s.task.clone()).collect();
        self.check(&tasks, true).await.map_err(|(index, source)| IntakeError::InStep {
            index,
            key: steps[index].key.to_string(),
            source: Box::new(source),
        })
    }

    /// Counts stored spawned steps as entered, and wakes the fleet for those queued at once.
    pub fn steps_entered(&self, steps: &[NewStep]) {
        let mut per_type: Vec<(&str, u64)> = Vec::new();
        for s in steps {
            match per_type.iter_mut().find(|(ty, _)| *ty == s.task.task_type) {
                Some((_, n)) => *n += 1,
                None => per_type.push((s.task.task_type.as_str(), 1)),
            }
        }
        self.entered(&per_type);
    }

    /// Asks whether `task` would be taken (type, admission, CWOM link) without storing it:
    /// a schedule's task is checked when the schedule is made, not only at its first tick.
    pub async fn admits(&self, task: &NewTask) -> Result<(), IntakeError> {
        self.check(std::slice::from_ref(task), false).await.map_err(|(_, e)| e)
    }

    /// Fires a schedule's tick or trigger: its task (or each step of its workflow) is
    /// checked as any enqueue is, then written with the fire's key and the overlap policy in
    /// one transaction ([`ScheduleStore::fire`]). Tasks cancelled by `cancel_other` are
    /// stopped here too.
    pub async fn fire(&self, params: &FireParams) -> Result<Fired, IntakeError> {
        self.check_work(&params.work).await?;
        let fired = self.schedules.fire(params).await?;
        if let Fired::Done(outcome) = &fired {
            self.fired(outcome, &params.work);
        }
        Ok(fired)
    }

    /// Fires the tick `buffer_one` held back, once the schedule's previous fires are over
    /// ([`ScheduleStore::release_buffered`]).
    pub async fn release_buffered(&self, name: &str, work: &Work) -> Result<Option<FireOutcome>, IntakeError> {
        self.check_work(work).await?;
        let released = self.schedules.release_buffered(name, work).await?;
        if let Some(outcome) = &released {
            self.fired(outcome, work);
        }
        Ok(released)
    }

    /// Checks a fire's work: its task, or each step of its workflow naming the step.
    async fn check_work(&self, work: &Work) -> Result<(), IntakeError> {
        self.admits_work(work).await.map_err(|(index, source)| match work {
            Work::Task(_) => source,
            Work::Workflow(w) => {
                IntakeError::InStep { index, key: w.steps[index].key.to_string(), source: Box::new(source) }
            }
        })
    }

    /// Asks whether a schedule's fire would be taken (its task, or each step of its
    /// workflow) without storing it; the error names the task refused by its index.
    pub async fn admits_work(&self, work: &Work) -> Result<(), (usize, IntakeError)> {
        let tasks: Vec<NewTask> = work.tasks().into_iter().cloned().collect();
        self.check(&tasks, matches!(work, Work::Workflow(_))).await
    }

    fn fired(&self, outcome: &FireOutcome, work: &Work) {
        if let FireOutcome::Fired { started, cancelled } = outcome {
            for id in cancelled {
                self.wake.cancelled(*id);
            }
            self.entered(&by_type(work.tasks()));
            tracing::debug!(?started, "schedule fired");
        }
    }

    /// After a successful write: wake whoever waits for work, and count the tasks.
    fn entered(&self, per_type: &[(&str, u64)]) {
        self.wake.work_available();
        for (task_type, n) in per_type {
            self.metrics.enqueued(task_type, *n);
        }
    }

    /// Admission and types for every task, then CWOM links, each asked once per distinct
    /// value; the error names the first task refused, by index. `as_steps`: the tasks are
    /// a workflow's steps, which may also be approvals (no handler runs one, and its payload
    /// was checked with the workflow's graph, [`NewWorkflow::checked`]).
    async fn check(&self, tasks: &[NewTask], as_steps: bool) -> Result<(), (usize, IntakeError)> {
        let mut types: Vec<&str> = Vec::new();
        for (index, task) in tasks.iter().enumerate() {
            let fail = |e: IntakeError| (index, e);
            if task.task_type == crate::approval::TYPE {
                if as_steps {
                    continue;
                }
                return Err(fail(IntakeError::StepOnlyType(task.task_type.clone())));
            }
            // A step's payload with `$from` values is a template until it is claimed: its
            // handler judges it then. Looked for only when the payload as given is refused,
            // so a plain enqueue pays nothing for it.
            let admitted =
                self.executors.admit(&task.task_type, &task.payload).or_else(
                    |refusal| match crate::workflow::references(&task.payload) {
                        Ok(refs) if !refs.is_empty() => self.executors.admit_template(&task.task_type),
                        _ => Err(refusal),
                    },
                );
            admitted.map_err(|r| fail(IntakeError::NotAdmitted(r)))?;
            if types.contains(&task.task_type.as_str()) {
                continue;
            }
            if !self.types.contains(&task.task_type).await.map_err(|e| fail(e.into()))? {
                let known = self.types.known().join(", ");
                return Err(fail(IntakeError::UnknownType { given: task.task_type.clone(), known }));
            }
            types.push(&task.task_type);
        }
        let mut issues: Vec<&str> = Vec::new();
        for (index, task) in tasks.iter().enumerate() {
            let Some(issue) = task.cwom_issue_id.as_deref() else { continue };
            if issues.contains(&issue) {
                continue;
            }
            let exists = self.cwom.issue_exists(issue).await.map_err(|e| (index, IntakeError::from(e)))?;
            if !exists {
                return Err((index, IntakeError::MissingIssue(issue.to_string())));
            }
            issues.push(issue);
        }
        Ok(())
    }
}

/// How many of `tasks` there are of each type (types are few: a scan beats a map).
fn by_type<'a>(tasks: impl IntoIterator<Item = &'a NewTask>) -> Vec<(&'a str, u64)> {
    let mut per_type: Vec<(&str, u64)> = Vec::new();
    for t in tasks {
        match per_type.iter_mut().find(|(ty, _)| *ty == t.task_type) {
            Some((_, n)) => *n += 1,
            None => per_type.push((t.task_type.as_str(), 1)),
        }
    }
    per_type
}

/// Refuses a batch that uses one idempotency key twice, naming both tasks by index: the
/// batch is all or nothing, so the store would refuse it, and no stored task holds the key
/// to name instead.
fn check_batch_keys(tasks: &[NewTask]) -> Result<(), IntakeError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, task) in tasks.iter().enumerate() {
        let Some(key) = task.idempotency_key.as_deref() else { continue };
        if let Some(&first) = seen.get(key) {
            return Err(IntakeError::DuplicateKeyInBatch { first, second: index });
        }
        seen.insert(key, index);
    }
    Ok(())
}
