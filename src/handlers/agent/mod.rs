//! `agent`: a coding agent CLI (a profile: `claude`, `codex`, or one from
//! `JCT_AGENT_PROFILES`) run in a git worktree of the task's repository; what it changed
//! is committed on branch `jct/<task_id>` and kept as `changes.patch`.
//!
//! Payload: `{"repo": "<local path or git URL>", "ref"?: "main", "prompt": "..",
//! "profile"?: "claude", "acceptance_criteria"?: [..], "limits"?: {..}}` (`limits` as for
//! `command`). The repository must be under
//! `JCT_ALLOWED_REPO_PREFIXES` and the profile's program on `JCT_COMMAND_ALLOW`. The agent
//! runs like a `command` (own process group, timeout, clean environment, stdin from
//! `/dev/null`); the worktree is removed when the attempt ends, the branch stays in the
//! cache. In the sandbox the agent sees the system, its worktree and the parts of the
//! repository cache git needs to commit there (objects, refs, its own worktree metadata),
//! the profile's `ro_paths`, and the network when the profile says `network = true`. Result: `{base_sha, head_sha, branch, files_changed, insertions, deletions,
//! exit_code, agent?}`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::git;
use super::limits::Asked;
use super::process::{self, Isolation, Limits, Program};
use super::{Handler, HandlerError, Refusal, TaskContext};
use crate::agent_profiles::{AgentProfile, ReportFormat, PROMPT, WORKDIR};
use crate::attempt::{ArtifactContent, PostedArtifact};
use crate::config::ExecutorConfig;
use crate::cwom::types::ArtifactType;
use crate::handlers::sandbox::{Grant, Mount};

pub use super::git::branch_name;

pub const TASK_TYPE: &str = "agent";
pub use super::git::REPO_NOT_ALLOWED;
/// The patch's artifact name (under the trace folder's `artifacts/`).
pub const PATCH: &str = "changes.patch";
/// The branch's artifact name.
pub const BRANCH: &str = "branch";
const DEFAULT_PROFILE: &str = "claude";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    repo: String,
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    prompt: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    acceptance_criteria: Vec<String>,
    #[serde(default)]
    limits: Option<Value>,
}

/// The `agent` executor of one deployment.
pub struct Agent {
    profiles: BTreeMap<String, AgentProfile>,
    allow: Vec<String>,
    base_env: Vec<(String, String)>,
    kill_grace: std::time::Duration,
    repos: Arc<git::Repos>,
    isolation: Isolation,
}

impl Agent {
    /// The executor, when `JCT_ALLOWED_REPO_PREFIXES` names repositories (`repos` is then
    /// open).
    pub fn from_config(config: &ExecutorConfig, repos: Arc<git::Repos>, isolation: Isolation) -> Self {
        Agent {
            profiles: config.agent_profiles.clone(),
            allow: config.command_allow.clone().unwrap_or_default(),
            base_env: config.base_env.clone(),
            kill_grace: config.kill_grace,
            repos,
            isolation,
        }
    }

    fn parse(&self, payload: &Value) -> Result<(Payload, &AgentProfile), Refusal> {
        let p: Payload = serde_json::from_value(payload.clone())
            .map_err(|e| Refusal::invalid(format!("payload of an agent task: {e}")))?;
        if p.prompt.trim().is_empty() {
            return Err(Refusal::invalid("payload.prompt: must not be empty"));
        }
        self.repos.check_repo("repo", &p.repo)?;
        if let Some(r) = &p.reference {
            git::check_ref("ref", r)?;
        }
        let name = p.profile.as_deref().unwrap_or(DEFAULT_PROFILE);
        let Some(profile) = self.profiles.get(name) else {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            return Err(Refusal::invalid(format!(
                "payload.profile: no profile {name:?} (known: {})",
                known.join(", ")
            )));
        };
        if !process::allowed(&self.allow, &profile.program) {
            return Err(Refusal::new(
                super::command::NOT_ALLOWED,
                format!("profile {name:?} runs {:?}, which is not in JCT_COMMAND_ALLOW", profile.program),
            ));
        }
        self.isolation.confine(Default::default(), Asked::from_payload(p.limits.as_ref())?.as_ref())?;
        Ok((p, profile))
    }
}

/// The prompt the agent gets: the task's, with its acceptance criteria.
fn full_prompt(p: &Payload) -> String {
    if p.acceptance_criteria.is_empty() {
        return p.prompt.clone();
    }
    let mut s = p.prompt.clone();
    s.push_str("\n\nAcceptance criteria:\n");
    for c in &p.acceptance_criteria {
        s.push_str("- ");
        s.push_str(c);
        s.push('\n');
    }
    s
}

/// Reads what an agent says about itself from its stdout lines.
fn observer(format: ReportFormat, into: Arc<Mutex<Option<Value>>>) -> Option<process::StdoutObserver> {
    if format == ReportFormat::None {
        return None;
    }
    Some(Box::new(move |line: &str| {
        let Ok(event) = serde_json::from_str::<Value>(line) else { return };
        let found = match format {
            ReportFormat::Claude if event["type"] == "result" => Some(json!({
                "subtype": event["subtype"],
                "is_error": event["is_error"],
                "cost_usd": event.get("total_cost_usd").or(event.get("cost_usd")),
                "num_turns": event["num_turns"],
                "session_id": event["session_id"],
                "duration_ms": event["duration_ms"],
                "result": event["result"].as_str().map(|s| s.chars().take(4000).collect::<String>()),
            })),
            ReportFormat::Codex => {
                // `codex exec --json`: `item.completed` with an `agent_message` item; older
                // releases sent `{"msg": {"type": "agent_message", "message": …}}`.
                let text = if event["type"] == "item.completed" && event["item"]["type"] == "agent_message" {
                    event["item"]["text"].as_str()
                } else if event["msg"]["type"] == "agent_message" {
                    event["msg"]["message"].as_str()
                } else {
                    None
                };
                text.map(|t| json!({ "last_message": t.chars().take(4000).collect::<String>() }))
            }
            _ => None,
        };
        if let Some(found) = found {
            *into.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
        }
    }))
}

#[async_trait]
impl Handler for Agent {
    fn admit(&self, payload: &Value) -> Result<(), Refusal> {
        self.parse(payload).map(|_| ())
    }

    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let (payload, profile) = self.parse(&ctx.payload).map_err(|r| HandlerError::new(r.message))?;
        let cache = self.repos.fetch(&payload.repo, &ctx.cancel).await?;
        let base = self.repos.resolve(&cache, payload.reference.as_deref(), &ctx.cancel).await?;
        let worktree = self.repos.add_worktree(&cache, ctx.id, ctx.attempt, &base, &ctx.cancel).await?;
        tracing::info!(repo = %payload.repo, base = %base, worktree = %worktree.display(), profile = %profile.name, "worktree ready");
        let outcome = self.work(&ctx, &payload, profile, &cache, &worktree, &base).await;
        self.repos.remove_worktree(&cache, &worktree).await;
        outcome
    }
}

impl Agent {
    async fn work(
        &self,
        ctx: &TaskContext,
        payload: &Payload,
        profile: &AgentProfile,
        cache: &git::Cache,
        worktree: &Path,
        base: &str,
    ) -> Result<Value, HandlerError> {
        let mut mounts = self.repos.sandbox_mounts(cache, worktree).await?;
        mounts.extend(profile.ro_paths.iter().cloned().map(Mount::ReadOnly));
        let grant = Grant { mounts, network: profile.network };
        let confine = Asked::from_payload(payload.limits.as_ref())
            .and_then(|asked| self.isolation.confine(grant, asked.as_ref()))
            .map_err(|r| HandlerError::new(r.message))?;
        let prompt = full_prompt(payload);
        let workdir = worktree.to_string_lossy();
        let args =
            profile.args.iter().map(|a| a.replace(WORKDIR, &workdir).replace(PROMPT, &prompt)).collect::<Vec<_>>();
        let report = Arc::new(Mutex::new(None));
        let program = Program {
            program: profile.program.clone(),
            args,
            cwd: worktree.to_path_buf(),
            env: process::environment(&self.base_env, &profile.env),
            stdin: None,
            confine,
        };
        let limits = Limits { kill_grace: self.kill_grace, output_cap: profile.output_cap };
        let finished =
            process::run(program, ctx.output.clone(), &ctx.cancel, limits, observer(profile.report, report.clone()))
                .await?;
        if finished.stopped {
            return Err(HandlerError::new(format!("stopped ({})", finished.describe())));
        }
        // Whatever the agent did is kept, also when it failed: the branch shows how far
        // it got.
        let message = format!("jct: task {} attempt {} ({})", ctx.id, ctx.attempt, profile.name);
        let head = self.repos.commit_all(worktree, &message).await?;
        let (patch, stat) = self.repos.diff(worktree, base, &head).await?;
        let branch = branch_name(ctx.id);
        let patch_len = patch.len();
        // Artifacts never overwrite each other: a later attempt's get their own names.
        let suffix = if ctx.attempt > 1 { format!("-attempt-{}", ctx.attempt) } else { String::new() };
        ctx.output
            .artifact(PostedArtifact {
                name: PATCH.replace(".patch", &format!("{suffix}.patch")),
                artifact_type: ArtifactType::CodePatch,
                media_type: Some("text/x-diff".into()),
                content: ArtifactContent::Bytes(patch),
            })
            .await?;
        ctx.output
            .artifact(PostedArtifact {
                name: format!("{BRANCH}{suffix}"),
                artifact_type: ArtifactType::Commit,
                media_type: None,
                content: ArtifactContent::Uri(format!("{}#{branch}@{head}", payload.repo)),
            })
            .await?;
        tracing::info!(%head, files = stat.files_changed, patch_bytes = patch_len, "changes committed");
        if !finished.success() {
            return Err(HandlerError::new(format!("the agent failed: {}", finished.error())));
        }
        let agent = report.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut result = json!({
            "base_sha": base,
            "head_sha": head,
            "branch": branch,
            "files_changed": stat.files_changed,
            "insertions": stat.insertions,
            "deletions": stat.deletions,
            "exit_code": finished.exit_code(),
            "profile": profile.name,
        });
        if let Some(agent) = agent {
            result["agent"] = agent;
        }
        Ok(result)
    }
}
