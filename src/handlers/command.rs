//! `command`: runs a program named in `JCT_COMMAND_ALLOW`, without a shell, in a fresh
//! workspace directory per attempt, under the rules of [`super::process`].
//!
//! Payload: `{"argv": ["prog", "arg", ..], "cwd"?: "<relative path in the workspace>",
//! "env"?: {"NAME": "value"}, "stdin"?: "text", "limits"?: {"memory_mb"?, "pids"?, "file_mb"?}}`
//! (`limits` lower `JCT_TASK_*` for this task, never raise them). In the sandbox the program
//! sees the system read-only and its workspace, nothing else. Exit 0 completes the task with
//! `{exit_code, duration_ms, stdout_tail}`; any other end fails the attempt with the exit
//! code or signal and the tail of stderr.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::limits::Asked;
use super::process::{self, Isolation, Limits, Program};
use super::sandbox::{Grant, Mount};
use super::{Handler, HandlerError, Refusal, TaskContext};
use crate::config::ExecutorConfig;
use crate::tunables::COMMAND_OUTPUT_CAP;

pub const TASK_TYPE: &str = "command";
/// The API's error code for a program that is not on the allowlist.
pub const NOT_ALLOWED: &str = "command_not_allowed";
/// Where attempts' workspaces go, under `JCT_WORKSPACE_DIR`.
const WORKSPACES: &str = "commands";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    argv: Vec<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    limits: Option<Value>,
}

/// The `command` executor of one deployment.
pub struct Command {
    allow: Arc<Vec<String>>,
    base_env: Arc<Vec<(String, String)>>,
    limits: Limits,
    workspaces: PathBuf,
    isolation: Isolation,
}

impl Command {
    /// The executor, when `JCT_COMMAND_ALLOW` names at least one program.
    pub fn from_config(config: &ExecutorConfig, isolation: Isolation) -> Option<Self> {
        let allow = config.command_allow.clone().filter(|a| !a.is_empty())?;
        Some(Command {
            allow: Arc::new(allow),
            base_env: Arc::new(config.base_env.clone()),
            limits: Limits { kill_grace: config.kill_grace, output_cap: COMMAND_OUTPUT_CAP },
            workspaces: config.workspace_dir.join(WORKSPACES),
            isolation,
        })
    }

    fn parse(&self, payload: &Value) -> Result<Payload, Refusal> {
        let p: Payload = serde_json::from_value(payload.clone())
            .map_err(|e| Refusal::invalid(format!("payload of a command task: {e}")))?;
        let Some(program) = p.argv.first() else {
            return Err(Refusal::invalid("payload.argv: must name a program"));
        };
        if !process::allowed(&self.allow, program) {
            return Err(Refusal::new(
                NOT_ALLOWED,
                format!("program {program:?} is not in JCT_COMMAND_ALLOW ({})", self.allow.join(", ")),
            ));
        }
        if let Some(cwd) = &p.cwd {
            relative_inside(cwd).map_err(|why| Refusal::invalid(format!("payload.cwd: {why}")))?;
        }
        check_env_names(&p.env)?;
        self.isolation.confine(Grant::default(), Asked::from_payload(p.limits.as_ref())?.as_ref())?;
        Ok(p)
    }
}

/// Checks that `path` stays inside the directory it is joined to.
pub(super) fn relative_inside(path: &str) -> Result<(), &'static str> {
    let p = Path::new(path);
    if p.is_absolute() {
        return Err("must be a relative path");
    }
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err("must not leave the workspace (no ..)");
    }
    Ok(())
}

pub(super) fn check_env_names(env: &BTreeMap<String, String>) -> Result<(), Refusal> {
    for name in env.keys() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(Refusal::invalid(format!("payload.env: {name:?} is not a variable name")));
        }
    }
    Ok(())
}

#[async_trait]
impl Handler for Command {
    fn admit(&self, payload: &Value) -> Result<(), Refusal> {
        self.parse(payload).map(|_| ())
    }

    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        // Checked again here: a task may have been inserted by SQL, or enqueued through a
        // server whose allowlist differs from this worker's.
        let payload = self.parse(&ctx.payload).map_err(|r| HandlerError::new(r.message))?;
        let workspace = self.workspaces.join(format!("{}-{}", ctx.id, ctx.attempt));
        let cwd = match &payload.cwd {
            Some(rel) => workspace.join(rel),
            None => workspace.clone(),
        };
        let fresh = {
            let (workspace, cwd) = (workspace.clone(), cwd.clone());
            tokio::task::spawn_blocking(move || {
                if workspace.exists() {
                    std::fs::remove_dir_all(&workspace)?;
                }
                std::fs::create_dir_all(&cwd)
            })
            .await
        };
        if let Ok(Err(e)) | Err(e) = fresh.map_err(std::io::Error::other) {
            return Err(HandlerError::new(format!("cannot make the workspace {}: {e}", workspace.display())));
        }
        // Only its own workspace: absolute, as the program sees the same paths as the daemon.
        let workspace = std::path::absolute(&workspace).unwrap_or(workspace);
        let cwd = std::path::absolute(&cwd).unwrap_or(cwd);
        let grant = Grant { mounts: vec![Mount::Writable(workspace.clone())], network: false };
        let confine = Asked::from_payload(payload.limits.as_ref())
            .and_then(|asked| self.isolation.confine(grant, asked.as_ref()))
            .map_err(|r| HandlerError::new(r.message))?;
        let mut argv = payload.argv.into_iter();
        let program = Program {
            program: argv.next().unwrap_or_default(),
            args: argv.collect(),
            cwd,
            env: process::environment(&self.base_env, &payload.env.into_iter().collect::<Vec<_>>()),
            stdin: payload.stdin,
            confine,
        };
        let ran = process::run(program, ctx.output.clone(), &ctx.cancel, self.limits, None).await;
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&workspace)).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(error = %e, "could not remove the attempt's workspace");
        }
        let finished = ran?;
        if finished.stopped {
            return Err(HandlerError::new(format!("stopped ({})", finished.describe())));
        }
        if !finished.success() {
            return Err(HandlerError::new(finished.error()));
        }
        Ok(json!({
            "exit_code": 0,
            "duration_ms": finished.duration.as_secs_f64() * 1000.0,
            "stdout_tail": finished.stdout_tail,
        }))
    }
}
