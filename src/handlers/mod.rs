//! Handlers (executors): the code that runs a task of a given `type`, and the registry that
//! finds it.
//!
//! - `builtin`: `echo`, `sleep`, `fail`;
//! - `process`: running a program for a task (own process group, clean environment, output
//!   streamed line by line, a stop that leaves no process behind), with `sandbox` (the
//!   bubblewrap command line, `JCT_SANDBOX`), `limits` (rlimits, a cgroup per program where
//!   delegated, which limit a run hit) and `tree` (every process a program started), shared by:
//! - `command`: a program from `JCT_COMMAND_ALLOW`, in a fresh workspace per attempt, or in
//!   a worktree of a repository at a commit (`repo`, `ref`);
//! - `agent`: a coding agent CLI in a git worktree of the task's repository, its changes
//!   committed on `jct/<task_id>` and written as `changes.patch`;
//! - `push`: `git push` of a commit of the repository cache to a remote's branch;
//! - `git`: the repositories all three share (allowed prefixes, the cache, worktrees).
//!
//! To add a task type, implement [`Handler`] and register it on a [`Registry`]. A handler
//! gets a [`TaskContext`]: the payload, the attempt number, a cancellation token it must
//! watch in any long wait, and the attempt's [`AttemptOutput`], where program output and
//! artifacts go (this daemon's trace folder, or the server's for a remote worker).
//! Everything a handler logs with `tracing` lands in its task's `log.txt` too.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::attempt::{ArtifactContent, PostedArtifact};
use crate::config::ExecutorConfig;
use crate::task::TaskId;

pub mod agent;
mod builtin;
pub mod command;
pub mod git;
pub mod limits;
pub mod process;
pub mod push;
pub mod sandbox;
mod tree;

pub use builtin::{Echo, Fail, Sleep};

/// What a handler sees of the task it runs.
#[derive(Clone)]
pub struct TaskContext {
    pub id: TaskId,
    pub attempt: i32,
    pub payload: Value,
    /// Cancelled when the task is cancelled, times out, loses its lease or the daemon
    /// stops past its grace period: a handler should return soon after.
    pub cancel: CancellationToken,
    /// Where the attempt's program output and artifacts go.
    pub output: Arc<dyn AttemptOutput>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext").field("id", &self.id).field("attempt", &self.attempt).finish_non_exhaustive()
    }
}

/// Why an attempt failed, in words for `last_error` and `output.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(msg: impl Into<String>) -> Self {
        HandlerError(msg.into())
    }
}

/// Runs tasks of one type.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt; the value is stored as the task's `result`.
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError>;

    /// Whether a payload may be enqueued at all (asked at intake, before anything is
    /// stored, and again by the worker that runs it). Most handlers take any payload.
    fn admit(&self, _payload: &Value) -> Result<(), Refusal> {
        Ok(())
    }
}

/// How a handler's run, held to its limits by [`run_bounded`], ended.
#[derive(Debug)]
pub enum Bounded {
    Returned(Value),
    /// The handler returned an error, or panicked.
    Failed(String),
    TimedOut(std::time::Duration),
    /// `ctx.cancel` was cancelled from outside (a cancel, a lost lease).
    Stopped,
    /// The hard shutdown came first.
    Interrupted,
}

/// Runs `handler` within `limit`, for the in-process executor and the HTTP worker alike.
/// A timeout, a cancel of `ctx.cancel` or `hard` stops it: the token is cancelled, and the
/// handler gets `stop_grace` to return (a program's group gets SIGTERM, then SIGKILL after
/// the kill grace) before it is dropped. A panic is a failure.
pub async fn run_bounded(
    handler: &dyn Handler,
    ctx: TaskContext,
    limit: std::time::Duration,
    stop_grace: std::time::Duration,
    hard: impl std::future::Future<Output = ()>,
) -> Bounded {
    use futures_util::FutureExt;
    let cancel = ctx.cancel.clone();
    let mut ran = std::pin::pin!(std::panic::AssertUnwindSafe(handler.run(ctx)).catch_unwind());
    let stopped = tokio::select! {
        biased;
        _ = hard => Bounded::Interrupted,
        _ = cancel.cancelled() => Bounded::Stopped,
        _ = tokio::time::sleep(limit) => Bounded::TimedOut(limit),
        ran = &mut ran => return match ran {
            Ok(Ok(value)) => Bounded::Returned(value),
            Ok(Err(HandlerError(msg))) => Bounded::Failed(msg),
            Err(panic) => Bounded::Failed(format!("handler panicked: {}", panic_message(&panic))),
        },
    };
    tracing::warn!(why = ?stopped, "stopping the handler; waiting up to {} s for it", stop_grace.as_secs());
    cancel.cancel();
    let _ = tokio::time::timeout(stop_grace, &mut ran).await;
    stopped
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Why a task may not be enqueued: an error code of the API and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Refusal::new("invalid_field", message)
    }
}

/// Which stream a line of program output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// What the executor itself says about the run (start, stop, the output cap).
    Executor,
}

impl Stream {
    pub fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Executor => "executor",
        }
    }
}

/// Where an attempt's program output and artifacts go.
#[async_trait]
pub trait AttemptOutput: Send + Sync {
    /// Lines of output, in the order they came; each is stored stamped and tagged.
    async fn lines(&self, stream: Stream, lines: Vec<String>);
    /// A file (or a reference) the attempt produced; its stored location on success.
    async fn artifact(&self, artifact: PostedArtifact) -> Result<String, HandlerError>;
}

/// Output for a run with nowhere to keep it (traces off): lines go to the daemon's log,
/// file artifacts are refused.
pub struct DiscardOutput;

#[async_trait]
impl AttemptOutput for DiscardOutput {
    async fn lines(&self, stream: Stream, lines: Vec<String>) {
        for line in lines {
            tracing::info!(stream = stream.tag(), "{line}");
        }
    }

    async fn artifact(&self, artifact: PostedArtifact) -> Result<String, HandlerError> {
        match artifact.content {
            ArtifactContent::Uri(uri) => Ok(uri),
            ArtifactContent::Bytes(_) => {
                Err(HandlerError::new(format!("no trace folder to keep the artifact {} in", artifact.name)))
            }
        }
    }
}

/// Handlers by task type.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

/// Why the executors could not be set up; stops start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("JCT_AGENT_PROFILES={path}: {reason}")]
    Profiles { path: String, reason: String },
    #[error("JCT_WORKSPACE_DIR={path}: {reason}")]
    Workspace { path: String, reason: String },
    #[error("JCT_SANDBOX=bwrap: bubblewrap does not work here: {reason}")]
    Sandbox { reason: String },
}

impl Registry {
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in handlers: `echo`, `sleep`, `fail`.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        r.register("echo", Echo);
        r.register("sleep", Sleep);
        r.register("fail", Fail);
        r
    }

    /// The built-ins, plus `command` when `JCT_COMMAND_ALLOW` names programs, and `agent`
    /// and `push` when `JCT_ALLOWED_REPO_PREFIXES` names repositories. Decides the sandbox
    /// (`JCT_SANDBOX`) when either runs programs here, and prunes the agent's stale
    /// worktrees.
    pub fn from_config(config: &ExecutorConfig) -> Result<Self, SetupError> {
        let mut r = Registry::builtin();
        let runs_programs = config.command_allow.as_ref().is_some_and(|a| !a.is_empty())
            || config.repo_prefixes.as_ref().is_some_and(|p| !p.is_empty());
        if !runs_programs {
            return Ok(r);
        }
        let isolation = process::Isolation::from_config(config)?;
        // One cache of repositories for every executor, so a later step finds an agent's
        // commit; opening it removes the worktrees an earlier run of this workspace left.
        let repos = match config.repo_prefixes.clone().filter(|p| !p.is_empty()) {
            Some(prefixes) => {
                let repos =
                    git::Repos::open(prefixes, &config.workspace_dir, config.base_env.clone()).map_err(|e| {
                        SetupError::Workspace {
                            path: config.workspace_dir.display().to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                Some(Arc::new(repos))
            }
            None => None,
        };
        if let Some(command) = command::Command::from_config(config, repos.clone(), isolation.clone()) {
            r.register(command::TASK_TYPE, command);
        }
        if let Some(repos) = repos {
            r.register(agent::TASK_TYPE, agent::Agent::from_config(config, repos.clone(), isolation.clone()));
            r.register(push::TASK_TYPE, push::Push::from_config(config, repos, isolation));
        }
        Ok(r)
    }

    pub fn register(&mut self, task_type: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(task_type.into(), Arc::new(handler));
        self
    }

    pub fn get(&self, task_type: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(task_type)
    }

    pub fn contains(&self, task_type: &str) -> bool {
        self.handlers.contains_key(task_type)
    }

    /// The registered types, sorted.
    pub fn types(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
    }

    /// Whether a task may be enqueued: its handler's judgement of the payload, and for the
    /// executors that run programs, whether this deployment enabled them at all.
    pub fn admit(&self, task_type: &str, payload: &Value) -> Result<(), Refusal> {
        match self.handlers.get(task_type) {
            Some(handler) => handler.admit(payload),
            None => self.enabled(task_type),
        }
    }

    /// Whether a task whose payload is a template (a workflow step with `$from` values,
    /// filled in when it is claimed) may be enqueued: only whether this deployment runs
    /// its type's programs at all. Its handler judges the filled-in payload when it runs.
    pub fn admit_template(&self, task_type: &str) -> Result<(), Refusal> {
        match self.handlers.get(task_type) {
            Some(_) => Ok(()),
            None => self.enabled(task_type),
        }
    }

    fn enabled(&self, task_type: &str) -> Result<(), Refusal> {
        match task_type {
            command::TASK_TYPE => Err(Refusal::new(
                command::NOT_ALLOWED,
                "the command executor is disabled here: JCT_COMMAND_ALLOW names no program",
            )),
            agent::TASK_TYPE | push::TASK_TYPE => Err(Refusal::new(
                git::REPO_NOT_ALLOWED,
                format!("the {task_type} executor is disabled here: JCT_ALLOWED_REPO_PREFIXES names no repository"),
            )),
            _ => Ok(()),
        }
    }
}
