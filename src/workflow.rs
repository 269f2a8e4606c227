//! Workflows as data: ids, step keys, what a step does when a parent fails, the validated
//! [`NewWorkflow`] (its graph checked: keys unique, dependencies known, no cycle, at most
//! [`limits::STEPS_MAX`] steps), the steps a running step spawns checked by the same checker
//! against the stored workflow ([`StoredGraph::plan`], which also says how to store them), the
//! workflow's status, and what the API and a claim show.
//!
//! A workflow is tasks: each step is a row of `tasks` with `workflow_id` and `step_key`,
//! `waiting` until its parents are done. The stores release steps in the transaction of a
//! parent's end; nothing here runs.
//!
//! # `$from` references
//!
//! A payload value `{"$from": "<key>", "pointer": "<JSON pointer>"}` stands for that value of
//! the parent `<key>`'s result ([`references`] finds them, [`resolve_references`] replaces
//! them). [`NewWorkflow::checked`] refuses a malformed one or one naming a step that is not
//! among the step's `depends_on`. They are resolved when the step is claimed, not in the
//! release trigger, though DESIGN.md says "when the step becomes `queued`": the outcome is
//! the same, because a step is only released once every parent has ended and an ended
//! parent's result no longer changes, so the claim reads exactly what the release would have
//! read. Resolving in Rust gets JSON pointers right (`~0`, `~1`, array indexes: serde_json's
//! [`Value::pointer`]) once for both stores, where two SQL dialects would each need their own
//! pointer-to-path translation inside a trigger. The claim already reads the parents
//! (`attach_parents` in each driver), so it costs no extra read. A reference that does not
//! resolve ends the attempt `failed` through the normal fenced finish
//! (`store::tasks::resolve_claimed`), so the usual trigger then handles the dependants.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::{NewTask, TaskId, TaskStatus};
pub use crate::task::{ParentOutcome, Parents, WorkflowId};

/// Limits on what a workflow may hold.
pub mod limits {
    pub const NAME_MAX: usize = 128;
    /// Steps in one `POST /workflows` or one spawn.
    pub const STEPS_MAX: usize = 10_000;
    /// Steps a workflow may reach through spawns.
    pub const WORKFLOW_STEPS_MAX: usize = 100_000;
    pub const KEY_MAX: usize = 64;
}

/// A step's key: unique in its workflow, `[A-Za-z0-9_.-]{1,64}` (the stores check it too).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct StepKey(String);

impl StepKey {
    pub fn parse(s: &str) -> Result<StepKey, String> {
        let ok = (1..=limits::KEY_MAX).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(StepKey(s.to_string()))
        } else {
            Err(format!("{s:?} is not a step key (1 to {} of A-Z a-z 0-9 _ . -)", limits::KEY_MAX))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a step does when one of its parents ends `failed` or `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnParentFailure {
    /// The step is cancelled, and so are its own `cancel` dependants, on down.
    #[default]
    Cancel,
    /// The step runs once all its parents ended, and sees their statuses in `parents`.
    Run,
}

impl OnParentFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnParentFailure::Cancel => "cancel",
            OnParentFailure::Run => "run",
        }
    }
}

impl FromStr for OnParentFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cancel" => Ok(OnParentFailure::Cancel),
            "run" => Ok(OnParentFailure::Run),
            other => Err(format!("on_parent_failure must be \"cancel\" or \"run\", not {other:?}")),
        }
    }
}

/// One step before it is stored: its task, key and parents.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    pub key: StepKey,
    pub task: NewTask,
    pub depends_on: Vec<StepKey>,
    pub on_parent_failure: OnParentFailure,
}

/// A workflow about to be stored, its graph already checked ([`NewWorkflow::checked`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewWorkflow {
    pub id: WorkflowId,
    pub name: String,
    pub idempotency_key: Option<String>,
    pub cwom_issue_id: Option<String>,
    /// In the order given; a step's parents may come after it.
    pub steps: Vec<NewStep>,
}

impl NewWorkflow {
    /// Checks the graph: at least one and at most [`limits::STEPS_MAX`] steps, every key
    /// once, every dependency a key of the workflow (and not the step itself), no cycle.
    pub fn checked(self) -> Result<NewWorkflow, InvalidWorkflow> {
        check_steps(&self.steps, None)?;
        Ok(self)
    }

    /// The status each step starts in: `queued` without parents, else `waiting`; an
    /// approval is always `waiting` (without parents it awaits its decision at once).
    pub fn initial_status(step: &NewStep) -> TaskStatus {
        if step.depends_on.is_empty() && step.task.task_type != crate::approval::TYPE {
            TaskStatus::Queued
        } else {
            TaskStatus::Waiting
        }
    }
}

/// The graph checks every set of new steps passes, a new workflow's and a spawn's alike:
/// at least one and at most [`limits::STEPS_MAX`] steps, every key once (and, in a spawn,
/// not a key the workflow has), every dependency a new step or (in a spawn) a step of the
/// workflow, none named twice, every `$from` among `depends_on`, no cycle. A spawn's steps
/// are also held to `spawn`'s rules ([`SpawnContext`]).
fn check_steps(steps: &[NewStep], spawn: Option<&SpawnContext<'_>>) -> Result<(), InvalidWorkflow> {
    if steps.is_empty() {
        return Err(InvalidWorkflow::NoSteps);
    }
    if steps.len() > limits::STEPS_MAX {
        return Err(InvalidWorkflow::TooManySteps { count: steps.len() });
    }
    if let Some(ctx) = spawn {
        let total = ctx.existing.len() + steps.len();
        if total > limits::WORKFLOW_STEPS_MAX {
            return Err(InvalidWorkflow::TooManyInWorkflow { count: total });
        }
    }
    let mut index: HashMap<&StepKey, usize> = HashMap::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        if let Some(&first) = index.get(&step.key) {
            return Err(InvalidWorkflow::RepeatedKey { key: step.key.to_string(), indexes: [first, i] });
        }
        if spawn.is_some_and(|ctx| ctx.existing.contains_key(step.key.as_str())) {
            return Err(InvalidWorkflow::KeyTaken { index: i, key: step.key.to_string() });
        }
        index.insert(&step.key, i);
    }
    for (i, step) in steps.iter().enumerate() {
        let mut seen = Vec::with_capacity(step.depends_on.len());
        for parent in &step.depends_on {
            let stored = spawn.and_then(|ctx| ctx.existing.get(parent.as_str()).map(|s| (ctx, *s)));
            if !index.contains_key(parent) && stored.is_none() {
                return Err(InvalidWorkflow::UnknownDependency {
                    index: i,
                    key: step.key.to_string(),
                    dependency: parent.to_string(),
                });
            }
            if seen.contains(&parent) {
                return Err(InvalidWorkflow::Step {
                    index: i,
                    key: Some(step.key.to_string()),
                    code: "invalid_field",
                    message: format!("depends_on: {parent} is named twice"),
                });
            }
            seen.push(parent);
            if let Some((ctx, stored)) = stored {
                if ctx.below_spawner.contains(&stored.task_id) {
                    return Err(InvalidWorkflow::DependsOnDependant {
                        index: i,
                        key: step.key.to_string(),
                        dependency: parent.to_string(),
                    });
                }
                let failed = matches!(stored.status, TaskStatus::Failed | TaskStatus::Cancelled);
                if failed && step.on_parent_failure == OnParentFailure::Cancel {
                    return Err(InvalidWorkflow::ParentEnded {
                        index: i,
                        key: step.key.to_string(),
                        dependency: parent.to_string(),
                        status: stored.status,
                    });
                }
            }
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if step.task.task_type == crate::approval::TYPE {
            crate::approval::ApprovalPayload::parse(&step.task.payload).map_err(|message| InvalidWorkflow::Step {
                index: i,
                key: Some(step.key.to_string()),
                code: "invalid_field",
                message,
            })?;
        }
        let bad = |message: String| InvalidWorkflow::Step {
            index: i,
            key: Some(step.key.to_string()),
            code: "invalid_reference",
            message,
        };
        for r in references(&step.task.payload).map_err(bad)? {
            if !step.depends_on.iter().any(|d| d.as_str() == r.key) {
                return Err(bad(format!(
                    "payload{}: $from names {:?}, which is not in this step's depends_on",
                    r.at, r.key
                )));
            }
        }
    }
    if let Some(keys) = cycle(steps, &index) {
        return Err(InvalidWorkflow::Cycle { keys });
    }
    Ok(())
}

/// The keys of one cycle among `steps`, in dependency order, if they have any (Kahn's
/// algorithm leaves exactly the steps on or behind a cycle; following parents from one of
/// them must come back round). Dependencies outside `steps` (stored steps a spawn names)
/// cannot be on a cycle: a stored step never waits for a new one, except the spawner's
/// dependants, which no new step may name.
fn cycle(steps: &[NewStep], index: &HashMap<&StepKey, usize>) -> Option<Vec<String>> {
    let n = steps.len();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending: Vec<usize> = vec![0; n];
    for (i, step) in steps.iter().enumerate() {
        for parent in step.depends_on.iter().filter_map(|p| index.get(p)) {
            children[*parent].push(i);
            pending[i] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &c in &children[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(c);
            }
        }
    }
    if done == n {
        return None;
    }
    // Walk parents that are still pending until a step repeats: the walk from there on
    // is a cycle.
    let start = (0..n).find(|&i| pending[i] > 0)?;
    let mut path: Vec<usize> = vec![start];
    let mut at: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut current = start;
    loop {
        let next = steps[current].depends_on.iter().filter_map(|p| index.get(p).copied()).find(|&p| pending[p] > 0)?;
        if let Some(&pos) = at.get(&next) {
            let mut keys: Vec<String> = path[pos..].iter().map(|&i| steps[i].key.to_string()).collect();
            keys.reverse();
            return Some(keys);
        }
        at.insert(next, path.len());
        path.push(next);
        current = next;
    }
}

/// A step already stored in the workflow a running step spawns into.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStep {
    pub task_id: TaskId,
    pub key: String,
    pub status: TaskStatus,
}

/// The workflow as stored when a running step spawns into it, read by the store inside the
/// spawn's transaction (the statuses of the steps the new ones name read under their locks).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGraph {
    /// The running step that spawns.
    pub spawner: TaskId,
    pub steps: Vec<StoredStep>,
    /// Every edge of the workflow, as (step, parent): the step waits for the parent.
    pub edges: Vec<(TaskId, TaskId)>,
}

/// What [`check_steps`] needs of a stored workflow.
struct SpawnContext<'a> {
    existing: HashMap<&'a str, &'a StoredStep>,
    /// The spawner's dependants and every step below them: each will wait for the new
    /// steps, so a new step that waited for one of them would close a cycle.
    below_spawner: std::collections::HashSet<TaskId>,
}

/// One new edge of a spawn: `step` waits for `parent`. `counted` is true when the parent's
/// end is already counted off the step (the parent ended before the spawn, or the step is no
/// longer waiting), as the release trigger marks the edges it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEdge {
    pub step: TaskId,
    pub parent: TaskId,
    pub counted: bool,
}

/// How a driver stores a spawn that [`StoredGraph::plan`] accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnPlan {
    /// Per new step, in the order given: `queued` or `waiting`, and the parents it waits for.
    pub statuses: Vec<TaskStatus>,
    pub pending: Vec<i32>,
    /// The new steps' edges to their parents, and the spawner's dependants' edges to every
    /// new step.
    pub edges: Vec<NewEdge>,
    /// The spawner's dependants that are waiting: each now waits for every new step too
    /// (`pending_parents` plus the number of new steps).
    pub waiting_dependants: Vec<TaskId>,
}

impl StoredGraph {
    /// Checks `steps` (with ids already given) as spawned by [`StoredGraph::spawner`] and
    /// says how to store them: the checks of a new workflow ([`NewWorkflow::checked`]), plus
    /// keys unique against the stored ones, dependencies on stored steps allowed except the
    /// spawner's dependants and anything below them (a cycle), a dependency on a step that
    /// ended `failed` or `cancelled` only for an `on_parent_failure: run` step (a `cancel`
    /// step could never run), and at most [`limits::WORKFLOW_STEPS_MAX`] steps in all. A
    /// parent that already ended is counted at once; the spawner's dependants get an edge to
    /// every new step.
    pub fn plan(&self, steps: &[NewStep]) -> Result<SpawnPlan, InvalidWorkflow> {
        let mut children: HashMap<TaskId, Vec<TaskId>> = HashMap::new();
        for (step, parent) in &self.edges {
            children.entry(*parent).or_default().push(*step);
        }
        let dependants: Vec<TaskId> = children.get(&self.spawner).cloned().unwrap_or_default();
        let mut below: std::collections::HashSet<TaskId> = std::collections::HashSet::new();
        let mut todo = dependants.clone();
        while let Some(t) = todo.pop() {
            if below.insert(t) {
                todo.extend(children.get(&t).into_iter().flatten().copied());
            }
        }
        let ctx =
            SpawnContext { existing: self.steps.iter().map(|s| (s.key.as_str(), s)).collect(), below_spawner: below };
        check_steps(steps, Some(&ctx))?;
        let new_ids: HashMap<&str, TaskId> = steps.iter().map(|s| (s.key.as_str(), s.task.id)).collect();
        let mut plan = SpawnPlan {
            statuses: Vec::with_capacity(steps.len()),
            pending: Vec::with_capacity(steps.len()),
            edges: Vec::new(),
            waiting_dependants: Vec::new(),
        };
        for s in steps {
            let mut pending = 0;
            for p in &s.depends_on {
                let (parent, ended) = match new_ids.get(p.as_str()) {
                    Some(id) => (*id, false),
                    None => {
                        let stored = ctx.existing[p.as_str()];
                        (stored.task_id, stored.status.is_final())
                    }
                };
                if !ended {
                    pending += 1;
                }
                plan.edges.push(NewEdge { step: s.task.id, parent, counted: ended });
            }
            // An approval is never queued: with its parents ended it awaits its decision.
            let ready = pending == 0 && s.task.task_type != crate::approval::TYPE;
            plan.statuses.push(if ready { TaskStatus::Queued } else { TaskStatus::Waiting });
            plan.pending.push(pending);
        }
        let status_of: HashMap<TaskId, TaskStatus> = self.steps.iter().map(|s| (s.task_id, s.status)).collect();
        for d in dependants {
            let waiting = status_of.get(&d) == Some(&TaskStatus::Waiting);
            if waiting {
                plan.waiting_dependants.push(d);
            }
            plan.edges.extend(steps.iter().map(|s| NewEdge { step: d, parent: s.task.id, counted: !waiting }));
        }
        Ok(plan)
    }
}

/// What a spawn answers: the workflow and each new step's task.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SpawnedSteps {
    pub workflow_id: WorkflowId,
    pub steps: Vec<CreatedStep>,
}

/// One `$from` reference in a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where it sits in the payload, as a JSON pointer (`""` for the payload itself).
    pub at: String,
    /// The parent step it names.
    pub key: String,
    /// A JSON pointer into that parent's result (`""` for the whole result).
    pub pointer: String,
}

impl Reference {
    /// Reads an object that has a `$from` member: exactly `$from` and `pointer`, both strings,
    /// the pointer empty or starting with `/` (RFC 6901).
    fn parse(at: &str, object: &serde_json::Map<String, Value>) -> Result<Reference, String> {
        let fail = |why: &str| format!("payload{at}: a $from reference {why}");
        let key = object.get("$from").and_then(Value::as_str).ok_or_else(|| fail("needs $from to be a step key"))?;
        let pointer = object
            .get("pointer")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("needs \"pointer\", a JSON pointer string"))?;
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(fail("needs a pointer that is empty or starts with /"));
        }
        if let Some(other) = object.keys().find(|k| *k != "$from" && *k != "pointer") {
            return Err(fail(&format!("has the member {other:?}; only $from and pointer are allowed")));
        }
        Ok(Reference { at: at.to_string(), key: key.to_string(), pointer: pointer.to_string() })
    }
}

/// Escapes one JSON pointer segment (RFC 6901: `~` as `~0`, `/` as `~1`).
fn pointer_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Every `$from` reference in `payload`, at any depth; an error names a malformed one.
pub fn references(payload: &Value) -> Result<Vec<Reference>, String> {
    fn walk(v: &Value, at: &mut String, out: &mut Vec<Reference>) -> Result<(), String> {
        match v {
            Value::Object(o) if o.contains_key("$from") => out.push(Reference::parse(at, o)?),
            Value::Object(o) => {
                for (k, child) in o {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&pointer_segment(k));
                    walk(child, at, out)?;
                    at.truncate(len);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("/{i}"));
                    walk(child, at, out)?;
                    at.truncate(len);
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(payload, &mut String::new(), &mut out)?;
    Ok(out)
}

/// `payload` with every `$from` reference replaced by the value it points at in its parent's
/// result; `None` when it has none (the payload stays as it is). The error says which
/// reference did not resolve and why: it is the step's `last_error`.
pub fn resolve_references(payload: &Value, parents: &Parents) -> Result<Option<Value>, String> {
    let refs = references(payload)?;
    if refs.is_empty() {
        return Ok(None);
    }
    let mut resolved = payload.clone();
    for r in refs {
        let what = format!("$from {:?} pointer {:?} at payload{}", r.key, r.pointer, r.at);
        let parent = parents.get(&r.key).ok_or_else(|| format!("{what}: {:?} is not a parent of this step", r.key))?;
        let result = match (&parent.status, &parent.result) {
            (TaskStatus::Completed, Some(result)) => result,
            (status, _) => return Err(format!("{what}: the parent {:?} ended {status}, so it has no result", r.key)),
        };
        let value = result
            .pointer(&r.pointer)
            .ok_or_else(|| format!("{what}: the result of {:?} has nothing at that pointer", r.key))?
            .clone();
        match resolved.pointer_mut(&r.at) {
            Some(slot) => *slot = value,
            None => return Err(format!("{what}: the reference's place in the payload is gone")),
        }
    }
    Ok(Some(resolved))
}

/// Why a workflow body was refused: each names the step(s) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWorkflow {
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("steps: a workflow needs at least one step")]
    NoSteps,
    #[error("steps: {count} steps; a workflow holds at most {}", limits::STEPS_MAX)]
    TooManySteps { count: usize },
    #[error("steps [{}] and [{}] both use the key {key:?}", indexes[0], indexes[1])]
    RepeatedKey { key: String, indexes: [usize; 2] },
    #[error("step [{index}] ({key}) depends on {dependency:?}, which is no step of this workflow")]
    UnknownDependency { index: usize, key: String, dependency: String },
    #[error("the steps {} depend on each other in a cycle", keys.join(" → "))]
    Cycle { keys: Vec<String> },
    /// A spawned step's key is a stored step's.
    #[error("step [{index}] uses the key {key:?}, which a step of the workflow already has")]
    KeyTaken { index: usize, key: String },
    /// A spawned step names a step that waits for the spawner (or one below it).
    #[error(
        "step [{index}] ({key}) depends on {dependency:?}, which waits for the spawning step: that would be a cycle"
    )]
    DependsOnDependant { index: usize, key: String, dependency: String },
    /// A spawned `cancel` step names a stored step that ended failed or cancelled.
    #[error(
        "step [{index}] ({key}) depends on {dependency:?}, which ended {status}; with on_parent_failure \"cancel\" it could never run (use \"run\")"
    )]
    ParentEnded { index: usize, key: String, dependency: String, status: TaskStatus },
    #[error(
        "steps: a spawn would take the workflow to {count} steps; a workflow holds at most {}",
        limits::WORKFLOW_STEPS_MAX
    )]
    TooManyInWorkflow { count: usize },
    /// One step is not a valid task (or its type is unknown, or its executor refuses it).
    #[error("step [{index}]{}: {message}", key.as_ref().map(|k| format!(" ({k})")).unwrap_or_default())]
    Step { index: usize, key: Option<String>, code: &'static str, message: String },
}

/// A workflow's status, from its steps': `running` while any step is unfinished, then
/// `completed` when every step completed, `failed` when any failed, else `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl WorkflowStatus {
    pub const ALL: [WorkflowStatus; 4] =
        [WorkflowStatus::Running, WorkflowStatus::Completed, WorkflowStatus::Failed, WorkflowStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    /// The status the rule gives these step statuses.
    pub fn of(steps: impl IntoIterator<Item = TaskStatus>) -> WorkflowStatus {
        let (mut unfinished, mut failed, mut cancelled) = (false, false, false);
        for s in steps {
            match s {
                TaskStatus::Waiting | TaskStatus::Queued | TaskStatus::Running => unfinished = true,
                TaskStatus::Failed => failed = true,
                TaskStatus::Cancelled => cancelled = true,
                TaskStatus::Completed => {}
            }
        }
        if unfinished {
            WorkflowStatus::Running
        } else if failed {
            WorkflowStatus::Failed
        } else if cancelled {
            WorkflowStatus::Cancelled
        } else {
            WorkflowStatus::Completed
        }
    }
}

impl fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkflowStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkflowStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown workflow status {s:?} (running, completed, failed, cancelled)"))
    }
}

/// What `POST /workflows` answers for each step.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CreatedStep {
    pub key: StepKey,
    pub task_id: TaskId,
    pub status: TaskStatus,
}

/// What `POST /workflows` answers.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CreatedWorkflow {
    pub workflow_id: WorkflowId,
    pub status: WorkflowStatus,
    pub steps: Vec<CreatedStep>,
}

/// One step as `GET /workflows/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StepView {
    pub key: String,
    pub task_id: TaskId,
    #[serde(rename = "type")]
    pub task_type: String,
    pub status: TaskStatus,
    pub depends_on: Vec<String>,
    pub on_parent_failure: OnParentFailure,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A workflow as the list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WorkflowSummary {
    pub workflow_id: WorkflowId,
    pub name: String,
    pub status: WorkflowStatus,
    pub idempotency_key: Option<String>,
    pub cwom_issue_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the last step ended, once none is unfinished.
    pub finished_at: Option<DateTime<Utc>>,
    pub step_count: u64,
}

/// A workflow with its steps, as `GET /workflows/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Workflow")]
pub struct WorkflowView {
    #[serde(flatten)]
    pub summary: WorkflowSummary,
    pub steps: Vec<StepView>,
}

/// What `POST /workflows/{id}/retry` changed: the failed and cancelled steps, each back to
/// `queued` (every parent completed) or re-opened as `waiting` (some parent runs again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StepsRetried {
    /// Steps queued at once, with fresh attempts.
    pub requeued: u64,
    /// Steps back to `waiting`, counting only their parents that are not completed.
    pub reopened: u64,
}

impl StepsRetried {
    pub fn is_empty(&self) -> bool {
        self.requeued == 0 && self.reopened == 0
    }
}

/// Filters for listing workflows, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowFilter {
    pub status: Option<WorkflowStatus>,
    pub name: Option<String>,
    /// Keyset paging: only workflows older than this one.
    pub before: Option<WorkflowId>,
    pub limit: u32,
}

impl WorkflowFilter {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 1000;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(key: &str, deps: &[&str]) -> NewStep {
        NewStep {
            key: StepKey::parse(key).unwrap(),
            task: NewTask::new("echo", json!({})),
            depends_on: deps.iter().map(|d| StepKey::parse(d).unwrap()).collect(),
            on_parent_failure: OnParentFailure::Cancel,
        }
    }

    fn wf(steps: Vec<NewStep>) -> Result<NewWorkflow, InvalidWorkflow> {
        NewWorkflow { id: WorkflowId::new(), name: "w".into(), idempotency_key: None, cwom_issue_id: None, steps }
            .checked()
    }

    #[test]
    fn keys_follow_the_pattern() {
        assert!(StepKey::parse("a.B-9_z").is_ok());
        assert!(StepKey::parse("").is_err());
        assert!(StepKey::parse("a b").is_err());
        assert!(StepKey::parse(&"k".repeat(65)).is_err());
        assert!(StepKey::parse(&"k".repeat(64)).is_ok());
    }

    #[test]
    fn the_graph_is_checked() {
        assert!(wf(vec![step("a", &[]), step("b", &["a"]), step("c", &["a"]), step("d", &["b", "c"])]).is_ok());
        assert_eq!(wf(vec![]), Err(InvalidWorkflow::NoSteps));
        assert_eq!(
            wf(vec![step("a", &[]), step("a", &[])]),
            Err(InvalidWorkflow::RepeatedKey { key: "a".into(), indexes: [0, 1] })
        );
        assert_eq!(
            wf(vec![step("a", &["zz"])]),
            Err(InvalidWorkflow::UnknownDependency { index: 0, key: "a".into(), dependency: "zz".into() })
        );
        let Err(InvalidWorkflow::Cycle { keys }) =
            wf(vec![step("r", &[]), step("x", &["r", "z"]), step("y", &["x"]), step("z", &["y"]), step("t", &["z"])])
        else {
            panic!("no cycle found")
        };
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, ["x", "y", "z"], "{keys:?}");
        assert!(matches!(wf(vec![step("s", &["s"])]), Err(InvalidWorkflow::Cycle { keys }) if keys == ["s"]));
    }

    /// A stored workflow: root → spawner → dependant → below, and a failed step.
    fn stored() -> (StoredGraph, [TaskId; 5]) {
        let ids = [TaskId::new(), TaskId::new(), TaskId::new(), TaskId::new(), TaskId::new()];
        let s = |i: usize, key: &str, status| StoredStep { task_id: ids[i], key: key.into(), status };
        let graph = StoredGraph {
            spawner: ids[1],
            steps: vec![
                s(0, "root", TaskStatus::Completed),
                s(1, "spawner", TaskStatus::Running),
                s(2, "dependant", TaskStatus::Waiting),
                s(3, "below", TaskStatus::Waiting),
                s(4, "broken", TaskStatus::Failed),
            ],
            edges: vec![(ids[1], ids[0]), (ids[2], ids[1]), (ids[3], ids[2])],
        };
        (graph, ids)
    }

    #[test]
    fn a_spawn_is_planned_against_the_stored_graph() {
        let (graph, ids) = stored();
        let new = vec![step("x", &["root"]), step("y", &["x", "spawner"]), step("z", &[])];
        let plan = graph.plan(&new).unwrap();
        assert_eq!(plan.statuses, [TaskStatus::Queued, TaskStatus::Waiting, TaskStatus::Queued]);
        assert_eq!(plan.pending, [0, 2, 0], "root has completed: counted at once");
        assert_eq!(plan.waiting_dependants, [ids[2]]);
        let edge = |step: TaskId, parent: TaskId, counted: bool| NewEdge { step, parent, counted };
        let (x, y, z) = (new[0].task.id, new[1].task.id, new[2].task.id);
        assert_eq!(
            plan.edges,
            [
                edge(x, ids[0], true),
                edge(y, x, false),
                edge(y, ids[1], false),
                edge(ids[2], x, false),
                edge(ids[2], y, false),
                edge(ids[2], z, false),
            ]
        );
        let refused = |steps: Vec<NewStep>| graph.plan(&steps).unwrap_err();
        assert_eq!(refused(vec![step("root", &[])]), InvalidWorkflow::KeyTaken { index: 0, key: "root".into() });
        for below in ["dependant", "below"] {
            assert_eq!(
                refused(vec![step("x", &[]), step("y", &[below])]),
                InvalidWorkflow::DependsOnDependant { index: 1, key: "y".into(), dependency: below.into() }
            );
        }
        assert_eq!(
            refused(vec![step("x", &["broken"])]),
            InvalidWorkflow::ParentEnded {
                index: 0,
                key: "x".into(),
                dependency: "broken".into(),
                status: TaskStatus::Failed
            }
        );
        let mut run = step("x", &["broken"]);
        run.on_parent_failure = OnParentFailure::Run;
        assert_eq!(graph.plan(&[run]).unwrap().statuses, [TaskStatus::Queued]);
        assert!(matches!(refused(vec![step("x", &["y"]), step("y", &["x"])]), InvalidWorkflow::Cycle { .. }));
        assert_eq!(
            refused(vec![step("x", &["nope"])]),
            InvalidWorkflow::UnknownDependency { index: 0, key: "x".into(), dependency: "nope".into() }
        );
        assert_eq!(refused(vec![]), InvalidWorkflow::NoSteps);
        let mut huge = graph.clone();
        huge.steps.extend((0..limits::WORKFLOW_STEPS_MAX).map(|i| StoredStep {
            task_id: TaskId::new(),
            key: format!("s{i}"),
            status: TaskStatus::Completed,
        }));
        assert_eq!(
            huge.plan(&[step("x", &[])]).unwrap_err(),
            InvalidWorkflow::TooManyInWorkflow { count: limits::WORKFLOW_STEPS_MAX + 6 }
        );
    }

    fn parents(result: Value) -> Parents {
        Parents::from([(
            "build".to_string(),
            ParentOutcome::new(TaskId::new(), TaskStatus::Completed, Some(result), None),
        )])
    }

    #[test]
    fn references_resolve_anywhere_in_a_payload() {
        let result = json!({"sha": "abc", "files": ["x", "y"], "a/b": {"m~n": 7}});
        let payload = json!({
            "ref": {"$from": "build", "pointer": "/sha"},
            "deep": [1, {"second": {"$from": "build", "pointer": "/files/1"}}],
            "odd": {"$from": "build", "pointer": "/a~1b/m~0n"},
            "all": {"$from": "build", "pointer": ""},
        });
        let got = resolve_references(&payload, &parents(result.clone())).unwrap().unwrap();
        assert_eq!(got, json!({"ref": "abc", "deep": [1, {"second": "y"}], "odd": 7, "all": result}));
        assert_eq!(resolve_references(&json!({"plain": 1}), &parents(json!({}))), Ok(None));
        let err =
            resolve_references(&json!({"x": {"$from": "build", "pointer": "/nope"}}), &parents(json!({}))).unwrap_err();
        assert!(
            err.contains("\"/nope\"") && err.contains("payload/x") && err.contains("nothing at that pointer"),
            "{err}"
        );
        let failed = Parents::from([(
            "build".to_string(),
            ParentOutcome::new(TaskId::new(), TaskStatus::Failed, None, Some("boom".into())),
        )]);
        let err = resolve_references(&json!({"$from": "build", "pointer": ""}), &failed).unwrap_err();
        assert!(err.contains("ended failed"), "{err}");
    }

    #[test]
    fn references_are_checked_with_the_graph() {
        let mut s = step("b", &["a"]);
        s.task.payload = json!({"v": [{"$from": "zz", "pointer": "/x"}]});
        let Err(InvalidWorkflow::Step { index: 1, key: Some(key), code: "invalid_reference", message }) =
            wf(vec![step("a", &[]), s.clone()])
        else {
            panic!("a reference to a step that is no parent was accepted")
        };
        assert_eq!(key, "b");
        assert!(message.contains("payload/v/0") && message.contains("\"zz\""), "{message}");
        s.task.payload = json!({"$from": "a"});
        assert!(matches!(wf(vec![step("a", &[]), s.clone()]), Err(InvalidWorkflow::Step { index: 1, .. })));
        s.task.payload = json!({"$from": "a", "pointer": "/x"});
        assert!(wf(vec![step("a", &[]), s]).is_ok());
    }

    #[test]
    fn the_status_follows_the_steps() {
        use TaskStatus::*;
        assert_eq!(WorkflowStatus::of([Completed, Waiting]), WorkflowStatus::Running);
        assert_eq!(WorkflowStatus::of([Completed, Completed]), WorkflowStatus::Completed);
        assert_eq!(WorkflowStatus::of([Failed, Cancelled]), WorkflowStatus::Failed);
        assert_eq!(WorkflowStatus::of([Completed, Cancelled]), WorkflowStatus::Cancelled);
    }
}
