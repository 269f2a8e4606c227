//! `command`: runs a program named in `JCT_COMMAND_ALLOW`, without a shell, in a fresh
//! workspace directory per attempt, under the rules of [`super::process`].
//!
//! Payload: `{"argv": ["prog", "arg", ..], "cwd"?: "<relative path in the workspace>",
//! "env"?: {"NAME": "value"}, "stdin"?: "text", "limits"?: {"memory_mb"?, "pids"?, "file_mb"?},
//! "repo"?: "<local path or git URL>", "ref"?: "<branch, tag or commit>"}` (`limits` lower
//! `JCT_TASK_*` for this task, never raise them). With `repo` (under
//! `JCT_ALLOWED_REPO_PREFIXES`) the workspace is a worktree of the repository at `ref`
//! (default: its default branch), detached, from the same cache the `agent` executor
//! commits in: a workflow's test step runs on exactly the commit its agent step made
//! (`"ref": {"$from": "agent", "pointer": "/head_sha"}`). In the sandbox the program
//! sees the system read-only and its workspace, nothing else. Exit 0 completes the task with
//! `{exit_code, duration_ms, stdout_tail}` (and `repo`, `commit` with a `repo`); any other
//! end fails the attempt with the exit code or signal and the tail of stderr.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::git::Repos;
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

#[derive(Debug, Clone, Deserialize)]
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
    #[serde(default)]
    repo: Option<String>,
    #[serde(default, rename = "ref")]
    reference: Option<String>,
}

/// The `command` executor of one deployment.
pub struct Command {
    allow: Arc<Vec<String>>,
    /// The repositories (when `JCT_ALLOWED_REPO_PREFIXES` names some): a `repo` payload's
    /// worktree comes from their cache.
    repos: Option<Arc<Repos>>,
    base_env: Arc<Vec<(String, String)>>,
    limits: Limits,
    workspaces: PathBuf,
    isolation: Isolation,
}

impl Command {
    /// The executor, when `JCT_COMMAND_ALLOW` names at least one program.
    pub fn from_config(config: &ExecutorConfig, repos: Option<Arc<Repos>>, isolation: Isolation) -> Option<Self> {
        let allow = config.command_allow.clone().filter(|a| !a.is_empty())?;
        Some(Command {
            allow: Arc::new(allow),
            repos,
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
        match (&p.repo, &self.repos) {
            (Some(repo), Some(repos)) => repos.check_repo("repo", repo)?,
            (Some(_), None) => {
                return Err(Refusal::new(
                    super::git::REPO_NOT_ALLOWED,
                    "payload.repo: JCT_ALLOWED_REPO_PREFIXES names no repository here",
                ))
            }
            (None, _) if p.reference.is_some() => {
                return Err(Refusal::invalid("payload.ref: names a commit of payload.repo, which is missing"))
            }
            (None, _) => {}
        }
        if let Some(r) = &p.reference {
            super::git::check_ref("ref", r)?;
        }
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
        match (&payload.repo, &self.repos) {
            (Some(repo), Some(repos)) => {
                let cache = repos.fetch(repo, &ctx.cancel).await?;
                let commit = repos.resolve(&cache, payload.reference.as_deref(), &ctx.cancel).await?;
                let worktree = repos.add_detached(&cache, ctx.id, ctx.attempt, &commit, &ctx.cancel).await?;
                let ran = match repos.sandbox_mounts(&cache, &worktree).await {
                    Ok(mounts) => self.run_in(&ctx, payload.clone(), &worktree, mounts).await,
                    Err(e) => Err(e),
                };
                repos.remove_worktree(&cache, &worktree).await;
                let mut result = ran?;
                result["repo"] = json!(repo);
                result["commit"] = json!(commit);
                Ok(result)
            }
            _ => {
                let workspace = self.workspaces.join(format!("{}-{}", ctx.id, ctx.attempt));
                let fresh = {
                    let workspace = workspace.clone();
                    tokio::task::spawn_blocking(move || {
                        if workspace.exists() {
                            std::fs::remove_dir_all(&workspace)?;
                        }
                        std::fs::create_dir_all(&workspace)
                    })
                    .await
                };
                if let Ok(Err(e)) | Err(e) = fresh.map_err(std::io::Error::other) {
                    return Err(HandlerError::new(format!("cannot make the workspace {}: {e}", workspace.display())));
                }
                // Only its own workspace: absolute, as the program sees the same paths as the
                // daemon.
                let workspace = std::path::absolute(&workspace).unwrap_or(workspace);
                let mounts = vec![Mount::Writable(workspace.clone())];
                let ran = self.run_in(&ctx, payload, &workspace, mounts).await;
                let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&workspace)).await;
                if let Ok(Err(e)) = removed {
                    tracing::warn!(error = %e, "could not remove the attempt's workspace");
                }
                ran
            }
        }
    }
}

impl Command {
    /// Runs the program in `workspace` (made, and removed after, by the caller), seeing
    /// `mounts` in the sandbox.
    async fn run_in(
        &self,
        ctx: &TaskContext,
        payload: Payload,
        workspace: &Path,
        mounts: Vec<Mount>,
    ) -> Result<Value, HandlerError> {
        let cwd = match &payload.cwd {
            Some(rel) => workspace.join(rel),
            None => workspace.to_path_buf(),
        };
        if let Err(e) = tokio::fs::create_dir_all(&cwd).await {
            return Err(HandlerError::new(format!("cannot make the directory {}: {e}", cwd.display())));
        }
        let cwd = std::path::absolute(&cwd).unwrap_or(cwd);
        let grant = Grant { mounts, network: false };
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
        let finished = process::run(program, ctx.output.clone(), &ctx.cancel, self.limits, None).await?;
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
