//! Remote workers: the service behind the HTTP worker protocol (`api/workers.rs`).
//!
//! A worker in any language registers, long-polls for tasks, heartbeats, streams log lines,
//! posts artifacts and reports each attempt's end. Everything goes through the same parts
//! local tasks use: the task store's claim and fenced writes, and the attempt lifecycle
//! ([`crate::attempt::Lifecycle`]) for the trace folder and the CWOM Run.
//!
//! - A claim that finds nothing waits on one wake-up fan-out ([`Remote::wake`], a watch
//!   channel bumped by NOTIFY, in-process enqueues and retries) and the next scheduled
//!   task's due time, never polling; a waiting claim holds no database connection.
//! - Each claimed attempt carries a [`LeaseToken`] (holder and attempt number); every write
//!   for it is fenced by the store, so a stale token changes nothing and gets `lease_lost`.
//! - Attempts claimed through this process are open here until they end: their trace
//!   folder (for `log.txt` and `artifacts/`) and CWOM Run. A write that reaches another
//!   daemon of the same database still lands in the store; the trace folder and Run are
//!   the claiming daemon's.
//! - [`TaskTypes`] is the set of known task types: built-in handlers, `JCT_TASK_TYPES`, and
//!   the types registered workers serve.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::attempt::{ArtifactError, Attempt, AttemptSink, Closing, Lifecycle, PostedArtifact, RunEnd, StoredArtifact};
use crate::shutdown::Shutdown;
use crate::store::{ClaimParams, Finish, LeaseState, Outcome, StoreError, TaskStore, Wakeups, WorkerStore};
use crate::task::{Task, TaskId, WorkerId};
use crate::tunables::{TASK_TYPES_REFRESH, WORKER_DEAD_AFTER_BEATS};

pub mod model;

use model::{LeaseToken, NewWorker, WorkerRecord, WorkerState};

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
    #[error(transparent)]
    Store(#[from] StoreError),
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
#[derive(Debug, Clone, Serialize)]
pub struct Claimed {
    #[serde(flatten)]
    pub task: Task,
    pub lease_token: String,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// A registered worker as `GET /workers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    #[serde(flatten)]
    pub record: WorkerRecord,
    pub running: u64,
    pub state: WorkerState,
}

/// What a worker heartbeat answers.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerBeat {
    /// `run`, or `quiet` while this server shuts down (finish what you hold, claim nothing).
    pub signal: &'static str,
    /// Tasks the worker said it runs that it no longer holds: stop them.
    pub cancel: Vec<TaskId>,
}

/// What a task heartbeat answers.
#[derive(Debug, Clone, Serialize)]
pub struct TaskBeat {
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
}

/// The task types this deployment knows: built-in handlers and `JCT_TASK_TYPES` (fixed),
/// and the types registered workers serve (read from the store, cached briefly).
pub struct TaskTypes {
    fixed: HashSet<String>,
    workers: Arc<dyn WorkerStore>,
    served: RwLock<(Option<Instant>, HashSet<String>)>,
}

impl TaskTypes {
    pub fn new(fixed: impl IntoIterator<Item = String>, workers: Arc<dyn WorkerStore>) -> Self {
        TaskTypes { fixed: fixed.into_iter().collect(), workers, served: RwLock::new((None, HashSet::new())) }
    }

    /// Whether a task of this type can be enqueued. A miss re-reads the registry (at most
    /// every [`TASK_TYPES_REFRESH`]), so a worker registered through another daemon counts.
    pub async fn contains(&self, task_type: &str) -> Result<bool, StoreError> {
        if self.fixed.contains(task_type) {
            return Ok(true);
        }
        let fresh = {
            let served = self.served.read().unwrap_or_else(|p| p.into_inner());
            if served.1.contains(task_type) {
                return Ok(true);
            }
            served.0.is_some_and(|at| at.elapsed() < TASK_TYPES_REFRESH)
        };
        if fresh {
            return Ok(false);
        }
        let types: HashSet<String> = self.workers.served_types().await?.into_iter().collect();
        let known = types.contains(task_type);
        *self.served.write().unwrap_or_else(|p| p.into_inner()) = (Some(Instant::now()), types);
        Ok(known)
    }

    /// Every known type, sorted (for error messages).
    pub fn known(&self) -> Vec<String> {
        let served = self.served.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<String> = self.fixed.iter().chain(served.1.iter()).cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    fn learn(&self, types: &[String]) {
        let mut served = self.served.write().unwrap_or_else(|p| p.into_inner());
        served.1.extend(types.iter().cloned());
    }
}

/// An attempt claimed through this process, open until it ends.
struct Open {
    token: LeaseToken,
    state: tokio::sync::Mutex<OpenState>,
}

struct OpenState {
    /// Taken when the attempt is closed.
    attempt: Option<Attempt>,
    /// The highest log `seq` appended: a repeated one is not appended again.
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
    /// Bumped whenever there may be new work; waiting claims watch it.
    wake: watch::Sender<u64>,
    /// The in-process worker, told of new work and cancels too.
    local: Option<Arc<dyn Wakeups>>,
    shutdown: Shutdown,
}

impl Remote {
    pub fn new(
        tasks: Arc<dyn TaskStore>,
        workers: Arc<dyn WorkerStore>,
        lifecycle: Arc<Lifecycle>,
        types: Arc<TaskTypes>,
        settings: RemoteSettings,
        local: Option<Arc<dyn Wakeups>>,
        shutdown: Shutdown,
    ) -> Self {
        let (wake, _) = watch::channel(0);
        Remote { tasks, workers, lifecycle, types, settings, open: Mutex::new(HashMap::new()), wake, local, shutdown }
    }

    pub fn settings(&self) -> RemoteSettings {
        self.settings
    }

    pub fn types(&self) -> &Arc<TaskTypes> {
        &self.types
    }

    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// There may be new work: wake every waiting claim (and the in-process worker).
    pub fn wake(&self) {
        self.wake.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    fn open_attempt(&self, id: TaskId) -> Option<Arc<Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    fn forget(&self, id: TaskId, token: &LeaseToken) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(&id).is_some_and(|o| &o.token == token) {
            open.remove(&id);
        }
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
    /// tells it which of them to stop.
    pub async fn worker_heartbeat(&self, id: &WorkerId, running: &[TaskId]) -> RemoteResult<WorkerBeat> {
        self.workers.beat(id).await?.ok_or_else(|| RemoteError::WorkerNotFound(id.clone()))?;
        let mut cancel = Vec::new();
        if !running.is_empty() {
            let renewed = self.tasks.heartbeat(id, running, self.settings.lease).await?;
            for task in running.iter().filter(|t| !renewed.contains(t)) {
                cancel.push(*task);
                // Close what this process has open for it (cancelled, or lost).
                if let Some(open) = self.open_attempt(*task).filter(|o| &o.token.worker == id) {
                    let _ = self.task_heartbeat(*task, &open.token.clone(), None).await;
                }
            }
        }
        let signal = if self.shutdown.is_stopping() { "quiet" } else { "run" };
        Ok(WorkerBeat { signal, cancel })
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
            self.notify_all();
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
                changed = woken.changed() => if changed.is_err() { return Ok(Vec::new()) },
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
            let open = Arc::new(Open {
                token: token.clone(),
                state: tokio::sync::Mutex::new(OpenState { attempt: Some(attempt), last_seq: None }),
            });
            self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(task.id, open);
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
        let state = self.tasks.renew(id, token, self.settings.lease).await?;
        let open = self.open_attempt(id).filter(|o| &o.token == token);
        match state {
            LeaseState::Held { until } => {
                if let (Some(open), Some(progress)) = (&open, progress) {
                    let state = open.state.lock().await;
                    if let Some(folder) = state.attempt.as_ref().and_then(|a| a.folder()) {
                        let _ = folder.append_lines("remote", &[format!("progress: {progress}")]);
                    }
                }
                Ok(TaskBeat { lease_expires_at: Some(until), cancel_requested: false })
            }
            LeaseState::Cancelled => {
                if let Some(open) = open {
                    self.forget(id, token);
                    if let Some(attempt) = open.state.lock().await.attempt.take() {
                        self.lifecycle.close(attempt, Closing::Cancelled).await;
                    }
                }
                Ok(TaskBeat { lease_expires_at: None, cancel_requested: true })
            }
            LeaseState::Lost => {
                if let Some(open) = open {
                    self.forget(id, token);
                    if let Some(attempt) = open.state.lock().await.attempt.take() {
                        self.lifecycle.close(attempt, Closing::LeaseLost).await;
                    }
                }
                Err(RemoteError::LeaseLost(id))
            }
        }
    }

    /// Appends log lines once per `seq`; returns whether they were appended (false for a
    /// repeated `seq`).
    pub async fn append_log(&self, id: TaskId, token: &LeaseToken, seq: u64, lines: &[String]) -> RemoteResult<bool> {
        if !self.tasks.holds(id, token).await? {
            return Err(RemoteError::LeaseLost(id));
        }
        let Some(open) = self.open_attempt(id).filter(|o| &o.token == token) else {
            tracing::warn!(task_id = %id, "log lines for an attempt claimed through another daemon; not kept here");
            return Ok(false);
        };
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
        if !self.tasks.holds(id, token).await? {
            return Err(RemoteError::LeaseLost(id));
        }
        let open = self.open_attempt(id).filter(|o| &o.token == token);
        let sink = match &open {
            Some(open) => open.state.lock().await.attempt.as_ref().map(|a| self.lifecycle.sink(a)),
            None => None,
        };
        // Held, but not open here (claimed through another daemon): a reference is still
        // recorded; the holds check above already read the task.
        let sink = sink.unwrap_or_else(|| AttemptSink::detached(id));
        sink.store(posted).await.map_err(|e| match e {
            ArtifactError::Invalid(m) => RemoteError::Invalid(m),
            ArtifactError::Exists { id, name } => RemoteError::ArtifactExists { id, name },
            ArtifactError::Io(e) => StoreError::internal("could not write the artifact").caused_by(e).into(),
        })
    }

    /// Ends the attempt as the worker reports it: completed, or failed (retried per the
    /// policy, after `retry_after` when given, never when not `retryable`).
    pub async fn finish(&self, id: TaskId, token: &LeaseToken, end: RunEnd) -> RemoteResult<Task> {
        let open = self.open_attempt(id).filter(|o| &o.token == token);
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
        let outcome = Outcome { id, attempt: token.attempt, finish: finish.clone() };
        let Some(ended) = self.tasks.finish_one(&token.worker, &outcome).await? else {
            return Err(RemoteError::LeaseLost(id));
        };
        self.forget(id, token);
        if let Some(open) = open {
            if let Some(attempt) = open.state.lock().await.attempt.take() {
                self.lifecycle.close(attempt, Closing::Finished(&finish)).await;
            }
        }
        if matches!(finish, Finish::Retry { .. }) {
            self.notify_all();
        }
        Ok(ended)
    }

    /// Gives the attempt back to the queue, not counted.
    pub async fn release(&self, id: TaskId, token: &LeaseToken) -> RemoteResult<()> {
        if !self.tasks.release_attempt(id, token).await? {
            return Err(RemoteError::LeaseLost(id));
        }
        if let Some(open) = self.open_attempt(id).filter(|o| &o.token == token) {
            self.forget(id, token);
            if let Some(attempt) = open.state.lock().await.attempt.take() {
                self.lifecycle.close(attempt, Closing::HandedBack).await;
            }
        }
        self.notify_all();
        Ok(())
    }

    /// Wakes waiting claims and the in-process worker.
    fn notify_all(&self) {
        self.wake();
        if let Some(local) = &self.local {
            local.tasks_inserted();
        }
    }

    /// The sink the database listener and the API use: wakes waiting remote claims and the
    /// in-process worker, and passes cancels to the in-process worker.
    pub fn wakeups(self: &Arc<Self>) -> Arc<dyn Wakeups> {
        Arc::new(Fanout(self.clone()))
    }

    /// Rescues expired leases where no in-process worker does (the `api` role serving
    /// remote workers only), waking claims when tasks come back.
    pub async fn run_rescuer(self: Arc<Self>) {
        let mut every = tokio::time::interval(crate::worker::rescuer::rescue_interval(self.settings.lease));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.stopping() => return,
                _ = every.tick() => match self.tasks.rescue_expired(&self.lifecycle.retry_policy()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(rescued = n, "returned tasks whose lease expired");
                        self.wake();
                    }
                    Err(e) => tracing::warn!(error = %e, "rescue failed"),
                },
            }
        }
    }
}

struct Fanout(Arc<Remote>);

impl Wakeups for Fanout {
    fn tasks_inserted(&self) {
        self.0.notify_all();
    }

    fn task_cancelled(&self, id: TaskId) {
        if let Some(local) = &self.0.local {
            local.task_cancelled(id);
        }
    }
}

/// How long a claim may wait, as asked, within the protocol's bounds.
pub fn clamp_wait(wait_ms: Option<u64>) -> Duration {
    Duration::from_millis(wait_ms.unwrap_or(0).min(crate::tunables::CLAIM_WAIT_MAX.as_millis() as u64))
}
