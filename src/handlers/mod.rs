//! Handlers (executors): the code that runs a task of a given `type`, and the registry that
//! finds it.
//!
//! - `builtin`: `echo`, `sleep`, `fail`;
//! - `process`: running a program for a task (own process group, clean environment, output
//!   streamed line by line, a stop that leaves no process behind), shared by:
//! - `command`: a program from `JCT_COMMAND_ALLOW`, in a fresh workspace per attempt;
//! - `agent`: a coding agent CLI in a git worktree of the task's repository, its changes
//!   committed on `jct/<task_id>` and written as `changes.patch`.
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
pub mod process;

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

    /// The built-ins, plus `command` when `JCT_COMMAND_ALLOW` names programs and `agent`
    /// when `JCT_ALLOWED_REPO_PREFIXES` names repositories. Prunes the agent's stale
    /// worktrees.
    pub fn from_config(config: &ExecutorConfig) -> Result<Self, SetupError> {
        let mut r = Registry::builtin();
        if let Some(command) = command::Command::from_config(config) {
            r.register(command::TASK_TYPE, command);
        }
        if let Some(agent) = agent::Agent::from_config(config)? {
            r.register(agent::TASK_TYPE, agent);
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
            None if task_type == command::TASK_TYPE => Err(Refusal::new(
                command::NOT_ALLOWED,
                "the command executor is disabled here: JCT_COMMAND_ALLOW names no program",
            )),
            None if task_type == agent::TASK_TYPE => Err(Refusal::new(
                agent::REPO_NOT_ALLOWED,
                "the agent executor is disabled here: JCT_ALLOWED_REPO_PREFIXES names no repository",
            )),
            None => Ok(()),
        }
    }
}
