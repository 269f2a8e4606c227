//! Remote workers: the service behind the HTTP worker protocol (`api/workers.rs`).
//!
//! A worker in any language registers, long-polls for tasks, heartbeats, streams log lines,
//! posts artifacts and reports each attempt's end. Everything goes through the same parts
//! local tasks use: the task store's claim and fenced writes, the attempt lifecycle
//! ([`crate::attempt::Lifecycle`]) for the trace folder and the CWOM Run, and the wake-up
//! fan-out ([`crate::wakeups`]).
//!
//! - A claim that finds nothing waits on the fan-out and the next scheduled task's due
//!   time, never polling; a waiting claim holds no database connection.
//! - Each claimed attempt carries a [`LeaseToken`] (holder and attempt number); every write
//!   for it is fenced by the store, so a stale token changes nothing and gets `lease_lost`.
//! - An attempt's end is decided once, by the store's fenced write, and whoever made that
//!   write records it: `complete`/`fail` write `output.json` and close the Run, `release`
//!   closes the Run, a cancel seen through a heartbeat writes the cancelled `output.json`.
//!   A heartbeat that finds the attempt ended (finished by a `complete` in flight, rescued,
//!   claimed again) tells the worker to stop it and records nothing: the write that ended
//!   it does.
//! - A running step may spawn steps into its workflow (`spawn`, or `complete` with steps):
//!   the same fence, and with `complete` one transaction for the steps and the end.
//! - Any daemon of the database serves any attempt: calls for an attempt that was claimed
//!   through another process (a restarted daemon, a second daemon behind the same address)
//!   reopen its trace folder on this daemon's disk ([`Lifecycle::resume`]) and go on there.
//!   Attempts open in this process are cached with their folder and the last log `seq`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::attempt::{ArtifactError, Attempt, AttemptSink, Closing, Lifecycle, PostedArtifact, RunEnd, StoredArtifact};
use crate::intake::TaskTypes;
use crate::lease::{Held, LeaseToken};
use crate::registration::{NewWorker, WorkerRecord, WorkerState};
use crate::shutdown::Shutdown;
use crate::store::{
    AttemptEnd, ClaimParams, Finish, LeaseState, RenewParams, Spawn, SpawnError, StoreError, TaskStore, WorkerStore,
};
use crate::task::{Task, TaskId, WorkerId};
use crate::tunables::WORKER_DEAD_AFTER_BEATS;
use crate::wakeups::Fanout;
use crate::workflow::{InvalidWorkflow, NewStep, SpawnedSteps};

/// Why a worker-protocol request changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Invalid(String),
    #[error("no worker with id {0}; register again")]
    WorkerNotFound(WorkerId),
    #[error("no task with id {0}")]
    TaskNotFound(TaskId),
    /// The token no longer holds the task (rescued, cancelled, ended, claimed again).
    #[error("the lease of task {0} is lost: it was rescued, cancelled, ended or claimed again")]
    LeaseLost(TaskId),
    #[error("task {id} already has an artifact named {name:?}")]
    ArtifactExists { id: TaskId, name: String },
    /// A spawn from a task that belongs to no workflow.
    #[error("task {0} is no workflow step; only a step of a workflow can spawn steps into it")]
    NotAWorkflowStep(TaskId),
    /// A spawn's steps do not fit the workflow's graph.
    #[error(transparent)]
    InvalidSteps(InvalidWorkflow),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SpawnError> for RemoteError {
    fn from(e: SpawnError) -> Self {
        match e {
            SpawnError::NotFound(id) => RemoteError::TaskNotFound(id),
            SpawnError::LeaseLost(id) => RemoteError::LeaseLost(id),
            SpawnError::NotAWorkflowStep(id) => RemoteError::NotAWorkflowStep(id),
            SpawnError::Invalid(invalid) => RemoteError::InvalidSteps(invalid),
            SpawnError::Store(e) => RemoteError::Store(e),
        }
    }
}

type RemoteResult<T> = Result<T, RemoteError>;

/// What the protocol's knobs are set to.
#[derive(Debug, Clone, Copy)]
pub struct RemoteSettings {
    /// A claim's lease (`JCT_LEASE_SECONDS`).
    pub lease: Duration,
    /// How often workers should heartbeat: a third of a lease, so two beats may be missed.
    pub heartbeat_interval: Duration,
}

/// A claimed task as the worker gets it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Claimed {
    #[serde(flatten)]
    pub task: Task,
    pub lease_token: String,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// A registered worker as `GET /workers` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Worker")]
pub struct WorkerView {
    #[serde(flatten)]
    pub record: WorkerRecord,
    pub running: u64,
    pub state: WorkerState,
}

/// What a worker heartbeat answers.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WorkerBeat {
    /// `run`, or `quiet` while this server shuts down (finish what you hold, claim nothing).
    pub signal: &'static str,
    /// Tasks the worker said it runs that it no longer holds: stop them.
    pub cancel: Vec<TaskId>,
}

/// What a task heartbeat answers.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TaskBeat {
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
}

/// An attempt open in this process: claimed here, or taken up here after it began elsewhere.
struct Open {
    token: LeaseToken,
    state: tokio::sync::Mutex<OpenState>,
}

struct OpenState {
    /// Taken when the attempt is closed.
    attempt: Option<Attempt>,
    /// The highest log `seq` appended here: a repeated one is not appended again.
    last_seq: Option<u64>,
}

/// The worker protocol's service.
pub struct Remote {
    tasks: Arc<dyn TaskStore>,
    workers: Arc<dyn WorkerStore>,
    lifecycle: Arc<Lifecycle>,
    types: Arc<TaskTypes>,
    settings: RemoteSettings,
    open: Mutex<HashMap<TaskId, Arc<Open>>>,
    wake: Arc<Fanout>,
    shutdown: Shutdown,
}

impl Remote {
    pub fn new(
        tasks: Arc<dyn TaskStore>,
        workers: Arc<dyn WorkerStore>,
        lifecycle: Arc<Lifecycle>,
        types: Arc<TaskTypes>,
        settings: RemoteSettings,
        wake: Arc<Fanout>,
        shutdown: Shutdown,
    ) -> Self {
        Remote { tasks, workers, lifecycle, types, settings, open: Mutex::new(HashMap::new()), wake, shutdown }
    }

    pub fn settings(&self) -> RemoteSettings {
        self.settings
    }

    fn cached(&self, id: TaskId, token: &LeaseToken) -> Option<Arc<Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&id).filter(|o| &o.token == token).cloned()
    }

    fn forget(&self, id: TaskId, token: &LeaseToken) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(&id).is_some_and(|o| &o.token == token) {
            open.remove(&id);
        }
    }

    fn keep(&self, id: TaskId, open: Arc<Open>) -> Arc<Open> {
        let mut map = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&id) {
            // Two calls took it up at once: the first one's folder is the one kept.
            Some(existing) if existing.token == open.token => existing.clone(),
            _ => {
                map.insert(id, open.clone());
                open
            }
        }
    }

    fn opened(token: LeaseToken, attempt: Attempt) -> Arc<Open> {
        Arc::new(Open { token, state: tokio::sync::Mutex::new(OpenState { attempt: Some(attempt), last_seq: None }) })
    }

    /// The attempt, open here, for a token the store says still holds the task: from the
    /// cache, or taken up here (its folder reopened) when it began in another process.
    async fn open_held(&self, id: TaskId, token: &LeaseToken) -> RemoteResult<Arc<Open>> {
        if let Some(open) = self.cached(id, token) {
            return Ok(open);
        }
        let task = self.tasks.get(id).await?.ok_or(RemoteError::TaskNotFound(id))?;
        Ok(self.take_up(task, token).await)
    }

    /// Takes up in this process an attempt of `task` that began elsewhere.
    async fn take_up(&self, task: Task, token: &LeaseToken) -> Arc<Open> {
        let id = task.id;
        let attempt = self.lifecycle.resume(Arc::new(task)).await;
        self.keep(id, Self::opened(token.clone(), attempt))
    }

    // -----------------------------------------------------------------------------------
    // Workers

    pub async fn register(&self, worker: NewWorker) -> RemoteResult<WorkerRecord> {
        worker.validate().map_err(RemoteError::Invalid)?;
        let record = self.workers.register(&WorkerId::generate(), &worker).await?;
        self.types.learn(&record.types);
        tracing::info!(worker_id = %record.worker_id, name = %record.name, types = ?record.types, "worker registered");
        Ok(record)
    }

    /// Records a worker's heartbeat, renews the leases of the tasks it says it runs, and
    /// tells it which of them to stop. A task no longer held is only reported: a cancel is
    /// recorded by its attempt (the cancelled `output.json`); an end that another call
    /// wrote (a `complete` in flight, a rescue) is recorded by that call.
    pub async fn worker_heartbeat(&self, id: &WorkerId, running: &[TaskId]) -> RemoteResult<WorkerBeat> {
        let worker = self.workers.beat(id).await?.ok_or_else(|| RemoteError::WorkerNotFound(id.clone()))?;
        let mut cancel = Vec::new();
        if !running.is_empty() {
            // The worker names its tasks; each is fenced by the attempt open here, or by
            // the attempt the worker holds now (read from the row: it may have been claimed
            // through another daemon).
            let mut held = Vec::with_capacity(running.len());
            for task in running {
                let token = match self.open_token(*task, id) {
                    Some(token) => token,
                    None => match self.tasks.get(*task).await? {
                        Some(t) if t.locked_by.as_deref() == Some(worker.worker_id.0.as_str()) => {
                            LeaseToken { worker: id.clone(), attempt: t.attempts }
                        }
                        _ => {
                            cancel.push(*task);
                            continue;
                        }
                    },
                };
                held.push(Held { id: *task, token });
            }
            let states = self.tasks.renew(RenewParams { attempts: &held, lease: self.settings.lease }).await?;
            for (h, state) in held.iter().zip(states) {
                match state {
                    LeaseState::Held { .. } => {}
                    LeaseState::Cancelled => {
                        cancel.push(h.id);
                        self.close_cancelled(h).await;
                    }
                    LeaseState::Lost => {
                        cancel.push(h.id);
                        self.forget(h.id, &h.token);
                    }
                }
            }
        }
        let signal = if self.shutdown.is_stopping() { "quiet" } else { "run" };
        Ok(WorkerBeat { signal, cancel })
    }

    fn open_token(&self, id: TaskId, worker: &WorkerId) -> Option<LeaseToken> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&id).filter(|o| &o.token.worker == worker).map(|o| o.token.clone())
    }

    /// Removes a worker and gives its tasks back at once.
    pub async fn deregister(&self, id: &WorkerId) -> RemoteResult<u64> {
        let released = self.workers.deregister(id).await?.ok_or_else(|| RemoteError::WorkerNotFound(id.clone()))?;
        let mine: Vec<Arc<Open>> = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<TaskId> = open.iter().filter(|(_, o)| &o.token.worker == id).map(|(t, _)| *t).collect();
            ids.iter().filter_map(|t| open.remove(t)).collect()
        };
        for open in mine {
            if let Some(attempt) = open.state.lock().await.attempt.take() {
                self.lifecycle.close(attempt, Closing::HandedBack).await;
            }
        }
        if released > 0 {
            self.wake.work_available();
        }
        tracing::info!(worker_id = %id, released, "worker deregistered");
        Ok(released)
    }

    pub async fn list_workers(&self) -> RemoteResult<Vec<WorkerView>> {
        let dead_after = self.settings.heartbeat_interval * WORKER_DEAD_AFTER_BEATS;
        let now = Utc::now();
        Ok(self
            .workers
            .list()
            .await?
            .into_iter()
            .map(|(record, running)| {
                let silent = (now - record.last_heartbeat_at).to_std().unwrap_or_default();
                let state = if silent > dead_after { WorkerState::Dead } else { WorkerState::Alive };
                WorkerView { record, running, state }
            })
            .collect())
    }

    // -----------------------------------------------------------------------------------
    // Claims

    /// Claims up to `max` tasks the worker serves, never more than its free slots; waits up
    /// to `wait` for one to become claimable. An empty list when the wait ran out.
    pub async fn claim(&self, id: &WorkerId, max: usize, wait: Duration) -> RemoteResult<Vec<Claimed>> {
        // Subscribed before the first look, so a wake-up between look and wait is not lost.
        let mut woken = self.wake.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        let worker = self.workers.beat(id).await?.ok_or_else(|| RemoteError::WorkerNotFound(id.clone()))?;
        loop {
            let held = self.tasks.running_count(id).await?;
            let room = (worker.max_slots.max(0) as u64).saturating_sub(held) as usize;
            let limit = max.min(room);
            if limit == 0 || self.shutdown.is_stopping() {
                return Ok(Vec::new());
            }
            let params = ClaimParams {
                worker: id.clone(),
                limit,
                lease: self.settings.lease,
                types: worker.types.clone(),
                queues: worker.queues.clone(),
            };
            let tasks = self.tasks.claim(&params).await?;
            if !tasks.is_empty() {
                return Ok(self.open_claimed(tasks).await);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // Sleep until woken, the next scheduled task is due, or the wait ends.
            let mut until = deadline;
            if let Some(next) = self.tasks.next_scheduled().await? {
                let due = (next - Utc::now()).to_std().unwrap_or_default();
                until = until.min(now + due.max(crate::tunables::SCHEDULE_WAIT_FLOOR));
            }
            tokio::select! {
                alive = woken.changed() => if !alive { return Ok(Vec::new()) },
                _ = tokio::time::sleep_until(until) => {}
                _ = self.shutdown.stopping() => return Ok(Vec::new()),
            }
        }
    }

    async fn open_claimed(&self, tasks: Vec<Task>) -> Vec<Claimed> {
        let mut claimed = Vec::with_capacity(tasks.len());
        for task in tasks {
            let token =
                LeaseToken { worker: WorkerId(task.locked_by.clone().unwrap_or_default()), attempt: task.attempts };
            let lease_expires_at = task.locked_until;
            let attempt = self.lifecycle.begin(Arc::new(task.clone())).await;
            self.keep(task.id, Self::opened(token.clone(), attempt));
            claimed.push(Claimed { task, lease_token: token.to_string(), lease_expires_at });
        }
        claimed
    }

    // -----------------------------------------------------------------------------------
    // One attempt

    /// Renews the attempt's lease. A cancelled attempt answers `cancel_requested` (once
    /// its trace folder records the cancel); a lost one is [`RemoteError::LeaseLost`].
    pub async fn task_heartbeat(
        &self,
        id: TaskId,
        token: &LeaseToken,
        progress: Option<&Value>,
    ) -> RemoteResult<TaskBeat> {
        let held = Held { id, token: token.clone() };
        let state = self
            .tasks
            .renew(RenewParams { attempts: std::slice::from_ref(&held), lease: self.settings.lease })
            .await?
            .pop()
            .unwrap_or(LeaseState::Lost);
        match state {
            LeaseState::Held { until } => {
                if let Some(progress) = progress {
                    let open = self.open_held(id, token).await?;
                    let state = open.state.lock().await;
                    if let Some(folder) = state.attempt.as_ref().and_then(|a| a.folder()) {
                        let _ = folder.append_lines("remote", &[format!("progress: {progress}")]);
                    }
                }
                Ok(TaskBeat { lease_expires_at: Some(until), cancel_requested: false })
            }
            LeaseState::Cancelled => {
                self.close_cancelled(&held).await;
                Ok(TaskBeat { lease_expires_at: None, cancel_requested: true })
            }
            LeaseState::Lost => {
                self.forget(id, token);
                Err(RemoteError::LeaseLost(id))
            }
        }
    }

    /// Records a cancel the store reported for this attempt: the cancelled `output.json`
    /// (once, by whichever call sees it first) and the Run.
    async fn close_cancelled(&self, held: &Held) {
        let open = match self.cached(held.id, &held.token) {
            Some(open) => open,
            None => match self.tasks.get(held.id).await {
                Ok(Some(task)) => self.take_up(task, &held.token).await,
                _ => return,
            },
        };
        self.forget(held.id, &held.token);
        let attempt = open.state.lock().await.attempt.take();
        if let Some(attempt) = attempt {
            self.lifecycle.close(attempt, Closing::Cancelled).await;
        }
    }

    /// Appends log lines once per `seq`; returns whether they were appended (false for a
    /// repeated `seq`).
    pub async fn append_log(&self, id: TaskId, token: &LeaseToken, seq: u64, lines: &[String]) -> RemoteResult<bool> {
        if !self.tasks.holds(&Held { id, token: token.clone() }).await? {
            return Err(RemoteError::LeaseLost(id));
        }
        let open = self.open_held(id, token).await?;
        let mut state = open.state.lock().await;
        if state.last_seq.is_some_and(|last| seq <= last) {
            return Ok(false);
        }
        state.last_seq = Some(seq);
        if let Some(folder) = state.attempt.as_ref().and_then(|a| a.folder()) {
            if let Err(e) = folder.append_lines("remote", lines) {
                tracing::error!(task_id = %id, error = %e, "could not append to log.txt");
            }
        }
        Ok(true)
    }

    /// Stores an artifact under the trace folder's `artifacts/` (or records a URI), and for
    /// a linked task as an Artifact of the attempt's Run.
    pub async fn add_artifact(
        &self,
        id: TaskId,
        token: &LeaseToken,
        posted: PostedArtifact,
    ) -> RemoteResult<StoredArtifact> {
        // The sink checks the name too; asked first here, a bad name is 422 whoever holds the lease.
        if !crate::trace::is_safe_artifact_name(&posted.name) {
            return Err(RemoteError::Invalid(
                "name: must be 1 to 128 of A-Z a-z 0-9 . _ - and not start with a dot".into(),
            ));
        }
        if !self.tasks.holds(&Held { id, token: token.clone() }).await? {
            return Err(RemoteError::LeaseLost(id));
        }
        let open = self.open_held(id, token).await?;
        let sink = open.state.lock().await.attempt.as_ref().map(|a| self.lifecycle.sink(a));
        // Closed meanwhile (the attempt ended): a reference is still recorded.
        let sink = sink.unwrap_or_else(|| AttemptSink::detached(id));
        sink.store(posted).await.map_err(|e| match e {
            ArtifactError::Invalid(m) => RemoteError::Invalid(m),
            ArtifactError::Exists { id, name } => RemoteError::ArtifactExists { id, name },
            ArtifactError::Io(e) => StoreError::internal("could not write the artifact").caused_by(e).into(),
        })
    }

    /// Adds steps to the workflow of the attempt's task while it runs, fenced by its token as
    /// `complete` is ([`crate::store::WorkflowStore::spawn_steps`]); the steps share the
    /// spawner's `trace_id`.
    pub async fn spawn(&self, id: TaskId, token: &LeaseToken, mut steps: Vec<NewStep>) -> RemoteResult<SpawnedSteps> {
        self.inherit_trace(id, token, &mut steps).await?;
        let spawn = Spawn { held: Held { id, token: token.clone() }, steps, completes: None };
        Ok(self.tasks.spawn_steps(&spawn).await?.steps)
    }

    /// Gives spawned steps the spawner's `trace_id`: one trace for the work it fanned out.
    async fn inherit_trace(&self, id: TaskId, token: &LeaseToken, steps: &mut [NewStep]) -> RemoteResult<()> {
        let trace = match self.cached(id, token) {
            Some(open) => open.state.lock().await.attempt.as_ref().and_then(|a| a.task().trace_id.clone()),
            None => None,
        };
        let trace = match trace {
            Some(trace) => Some(trace),
            None => self.tasks.get(id).await?.and_then(|t| t.trace_id),
        };
        if let Some(trace) = trace {
            for s in steps {
                s.task.trace_id = Some(trace.clone());
            }
        }
        Ok(())
    }

    /// Ends the attempt as the worker reports it: completed, or failed (retried per the
    /// policy, after `retry_after` when given, never when not `retryable`). The store's
    /// fenced write decides; this call then records that end (`output.json` on this
    /// daemon's disk, the Run), whichever daemon the attempt was claimed through.
    pub async fn finish(&self, id: TaskId, token: &LeaseToken, end: RunEnd) -> RemoteResult<Task> {
        Ok(self.end_attempt(id, token, end, Vec::new()).await?.0)
    }

    /// Completes the attempt with `result` as [`Remote::finish`] does, and adds `steps` to its
    /// workflow in the same transaction, the steps first, so the spawner's dependants wait for
    /// them (a `complete` that carries `spawn`).
    pub async fn complete_spawning(
        &self,
        id: TaskId,
        token: &LeaseToken,
        result: Value,
        steps: Vec<NewStep>,
    ) -> RemoteResult<(Task, Option<SpawnedSteps>)> {
        self.end_attempt(id, token, RunEnd::Returned(result), steps).await
    }

    async fn end_attempt(
        &self,
        id: TaskId,
        token: &LeaseToken,
        end: RunEnd,
        mut spawn: Vec<NewStep>,
    ) -> RemoteResult<(Task, Option<SpawnedSteps>)> {
        let open = self.cached(id, token);
        let task = match &open {
            Some(open) => open.state.lock().await.attempt.as_ref().map(|a| a.task().as_ref().clone()),
            None => None,
        };
        let task = match task {
            Some(task) => task,
            None => self.tasks.get(id).await?.ok_or(RemoteError::TaskNotFound(id))?,
        };
        if task.attempts != token.attempt {
            return Err(RemoteError::LeaseLost(id));
        }
        let finish = match self.lifecycle.decide(&task, end) {
            Ok(finish) => finish,
            Err(other) => unreachable!("a worker's report is always decided: {other:?}"),
        };
        let held = Held { id, token: token.clone() };
        let (ended, spawned) = if spawn.is_empty() {
            let end = AttemptEnd { held, finish: finish.clone() };
            let Some(ended) = self.tasks.finish_reporting(&end).await? else {
                return Err(RemoteError::LeaseLost(id));
            };
            (ended, None)
        } else {
            if let Some(trace) = &task.trace_id {
                for s in &mut spawn {
                    s.task.trace_id = Some(trace.clone());
                }
            }
            let Finish::Completed { result } = &finish else {
                unreachable!("only a returned run spawns, and a returned run is completed: {finish:?}")
            };
            let spawn = Spawn { held, steps: spawn, completes: Some(result.clone()) };
            let spawned = self.tasks.spawn_steps(&spawn).await?;
            let Some(ended) = spawned.ended else {
                return Err(RemoteError::LeaseLost(id));
            };
            (ended, Some(spawned.steps))
        };
        self.forget(id, token);
        let open = match open {
            Some(open) => open,
            None => self.take_up(task, token).await,
        };
        if let Some(attempt) = open.state.lock().await.attempt.take() {
            self.lifecycle.close(attempt, Closing::Finished(&finish)).await;
        }
        if matches!(finish, Finish::Retry { .. }) {
            self.wake.work_available();
        }
        Ok((ended, spawned))
    }

    /// Gives the attempt back to the queue, not counted.
    pub async fn release(&self, id: TaskId, token: &LeaseToken) -> RemoteResult<()> {
        let held = Held { id, token: token.clone() };
        let open = self.cached(id, token);
        // Not open here: the attempt as it was, for its Run (the release clears its times).
        let before = match &open {
            Some(_) => None,
            None => self.tasks.get(id).await?,
        };
        if self.tasks.release(std::slice::from_ref(&held)).await?.is_empty() {
            return Err(RemoteError::LeaseLost(id));
        }
        match (open, before) {
            (Some(open), _) => {
                self.forget(id, token);
                if let Some(attempt) = open.state.lock().await.attempt.take() {
                    self.lifecycle.close(attempt, Closing::HandedBack).await;
                }
            }
            (None, Some(task)) => self.lifecycle.handed_back_unseen(&task).await,
            (None, None) => {}
        }
        self.wake.work_available();
        Ok(())
    }
}

/// How long a claim may wait, as asked, within the protocol's bounds.
pub fn clamp_wait(wait_ms: Option<u64>) -> Duration {
    Duration::from_millis(wait_ms.unwrap_or(0).min(crate::tunables::CLAIM_WAIT_MAX.as_millis() as u64))
}
