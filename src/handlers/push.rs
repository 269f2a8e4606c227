//! `push`: pushes a commit of a repository's cache (an agent's work, by its `head_sha`) to a
//! branch of a remote, the last step of a change pipeline.
//!
//! Payload: `{"repo": "<the repository the commit belongs to>", "ref": "<commit, branch or
//! tag>", "branch": "<branch on the remote>", "remote"?: "<local path or git URL, default
//! repo>", "force"?: false, "limits"?: {..}}`. `repo` and `remote` must be under
//! `JCT_ALLOWED_REPO_PREFIXES`. The commit is looked up in the same cache the `agent`
//! executor commits in (after a fetch of `repo`, so a branch or tag of the source names one
//! too).
//!
//! `git push` runs as a program of the task (own process group, timeout, the clean
//! environment of `JCT_COMMAND_ENV_ALLOW`, which is the only way credentials reach it: a
//! `GIT_ASKPASS` helper, `GIT_SSH_COMMAND`, `GIT_CONFIG_*` for an HTTP header), and in the
//! sandbox: it sees the system, the cache read-only, a local remote writable, and the
//! network only for a remote that is a URL. The remote's hooks are never run from the
//! cache's side (`core.hooksPath=/dev/null`). A rejected push (not a fast-forward without
//! `force`, a protected branch) fails the attempt with git's words. Result:
//! `{remote, branch, commit, forced}`.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::git::{self, Repos};
use super::limits::Asked;
use super::process::{self, Isolation, Limits, Program};
use super::sandbox::{Grant, Mount};
use super::{Handler, HandlerError, Refusal, TaskContext};
use crate::config::ExecutorConfig;
use crate::tunables::COMMAND_OUTPUT_CAP;

pub const TASK_TYPE: &str = "push";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    repo: String,
    #[serde(rename = "ref")]
    reference: String,
    branch: String,
    #[serde(default)]
    remote: Option<String>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    limits: Option<Value>,
}

impl Payload {
    fn remote(&self) -> &str {
        self.remote.as_deref().unwrap_or(&self.repo)
    }
}

/// The `push` executor of one deployment.
pub struct Push {
    repos: Arc<Repos>,
    base_env: Vec<(String, String)>,
    kill_grace: std::time::Duration,
    isolation: Isolation,
}

impl Push {
    pub fn from_config(config: &ExecutorConfig, repos: Arc<Repos>, isolation: Isolation) -> Self {
        Push { repos, base_env: config.base_env.clone(), kill_grace: config.kill_grace, isolation }
    }

    fn parse(&self, payload: &Value) -> Result<Payload, Refusal> {
        let p: Payload = serde_json::from_value(payload.clone())
            .map_err(|e| Refusal::invalid(format!("payload of a push task: {e}")))?;
        self.repos.check_repo("repo", &p.repo)?;
        if let Some(remote) = &p.remote {
            self.repos.check_repo("remote", remote)?;
        }
        git::check_ref("ref", &p.reference)?;
        check_branch(&p.branch)?;
        self.isolation.confine(Grant::default(), Asked::from_payload(p.limits.as_ref())?.as_ref())?;
        Ok(p)
    }
}

/// A branch name git would take (`git check-ref-format --branch`'s rules that matter for a
/// refspec), so a payload cannot push to a tag or smuggle a second refspec.
fn check_branch(branch: &str) -> Result<(), Refusal> {
    let bad = branch.is_empty()
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with(".lock")
        || branch.ends_with('.')
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch.starts_with("refs/")
        || branch.chars().any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err(Refusal::invalid(format!("payload.branch: {branch:?} is not a branch name")));
    }
    Ok(())
}

#[async_trait]
impl Handler for Push {
    fn admit(&self, payload: &Value) -> Result<(), Refusal> {
        self.parse(payload).map(|_| ())
    }

    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let payload = self.parse(&ctx.payload).map_err(|r| HandlerError::new(r.message))?;
        let cache = self.repos.fetch(&payload.repo, &ctx.cancel).await?;
        let commit = self.repos.resolve(&cache, Some(&payload.reference), &ctx.cancel).await?;
        let remote = payload.remote();
        let local = remote.starts_with('/');
        let mut mounts = vec![Mount::ReadOnly(cache.dir())];
        if local {
            mounts.push(Mount::Writable(Path::new(remote).to_path_buf()));
        }
        let grant = Grant { mounts, network: !local };
        let confine = Asked::from_payload(payload.limits.as_ref())
            .and_then(|asked| self.isolation.confine(grant, asked.as_ref()))
            .map_err(|r| HandlerError::new(r.message))?;
        let refspec = format!("{}{commit}:refs/heads/{}", if payload.force { "+" } else { "" }, payload.branch);
        let mut env = process::environment(&self.base_env, &[]);
        env.extend([("GIT_TERMINAL_PROMPT".into(), "0".into()), ("GIT_CONFIG_NOSYSTEM".into(), "1".into())]);
        let program = Program {
            program: "git".into(),
            args: [
                "-C",
                &cache.dir().to_string_lossy(),
                "-c",
                "core.hooksPath=/dev/null",
                "push",
                "--porcelain",
                "--no-verify",
                "--end-of-options",
                remote,
                &refspec,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            cwd: cache.dir(),
            env,
            stdin: None,
            confine,
        };
        tracing::info!(remote, branch = %payload.branch, %commit, force = payload.force, "pushing");
        let limits = Limits { kill_grace: self.kill_grace, output_cap: COMMAND_OUTPUT_CAP };
        let finished = process::run(program, ctx.output.clone(), &ctx.cancel, limits, None).await?;
        if finished.stopped {
            return Err(HandlerError::new(format!("stopped ({})", finished.describe())));
        }
        if !finished.success() {
            return Err(HandlerError::new(format!("git push to {remote} failed: {}", finished.error())));
        }
        Ok(json!({ "remote": remote, "branch": payload.branch, "commit": commit, "forced": payload.force }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_checked() {
        for ok in ["main", "jct/feature-1", "release/2026.12"] {
            assert!(check_branch(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "-f", "a b", "a:b", "refs/tags/v1", "a..b", "x.lock", "a/", "a^", "a~1", "a@{1}"] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
    }
}
