//! The bridge to CWOM: a task linked to an Issue (`cwom_issue_id`) gets a Run per
//! attempt, and its trace folder becomes a `trace` Artifact of that Run.
//!
//! The work itself never depends on it: a CWOM write that fails is logged and the task
//! runs and ends as it would have. A task without a link costs one `Option` check.
//!
//! A Run's id is derived from its task and attempt ([`run_id`]), so whichever daemon ends
//! an attempt (the one that claimed it, another one a remote worker's `complete` reached,
//! the rescuer of any daemon) closes the same Run without asking where it began.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::cwom::types::{Failure, FailureCategory, Telemetry};
use crate::cwom_service::{Cwom, StartRun};
use crate::task::{Task, TaskId};

/// The Run recording one attempt.
#[derive(Clone)]
pub(super) struct RunLink {
    pub(super) run_id: String,
    issue_id: String,
    started_at: DateTime<Utc>,
}

/// How an attempt ended, as the Run records it.
pub(super) enum Ending<'a> {
    Done,
    Failed { category: FailureCategory, message: &'a str },
}

/// The id of the Run recording attempt `attempt` of `task`, claimed at `claimed_at` (the
/// row's `started_at`; a task retried from scratch counts its attempts from 1 again): a
/// UUID (version 8) made from a digest of the three, the same on every daemon.
pub fn run_id(task: TaskId, attempt: i32, claimed_at: Option<DateTime<Utc>>) -> String {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    digest.update(b"jct-run\0");
    digest.update(task.0.as_bytes());
    digest.update(attempt.to_be_bytes());
    digest.update(claimed_at.map_or(0, |t| t.timestamp_micros()).to_be_bytes());
    let bytes: [u8; 16] = digest.finalize()[..16].try_into().expect("a SHA-256 digest has 32 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// The Run of an attempt that began elsewhere (another daemon, before a restart), for a
/// linked task.
pub(super) fn link_of(task: &Task, started_at: DateTime<Utc>) -> Option<RunLink> {
    let issue_id = task.cwom_issue_id.clone()?;
    Some(RunLink { run_id: run_id(task.id, task.attempts, task.started_at), issue_id, started_at })
}

/// Opens the attempt's Run (status `running`), when the task is linked to an Issue.
pub(super) async fn start(cwom: &Cwom, executor_id: &str, task: &Task, started_at: DateTime<Utc>) -> Option<RunLink> {
    let issue_id = task.cwom_issue_id.as_ref()?;
    let mut meta = serde_json::Map::new();
    meta.insert("jct.task_id".into(), json!(task.id));
    meta.insert("jct.attempt".into(), json!(task.attempts));
    meta.insert("jct.task_type".into(), json!(task.task_type));
    let start = StartRun {
        run_id: run_id(task.id, task.attempts, task.started_at),
        issue_id: issue_id.clone(),
        executor_actor_id: executor_id.to_string(),
        runtime: "jct-worker".into(),
        started_at,
        meta,
    };
    match cwom.start_run(start).await {
        Ok(run_id) => Some(RunLink { run_id, issue_id: issue_id.clone(), started_at }),
        Err(e) => {
            tracing::error!(task_id = %task.id, issue_id = %issue_id, error = %e, "could not record the CWOM Run");
            None
        }
    }
}

/// Closes the Run (`done` or `failed`, with telemetry) and registers the trace folder.
pub(super) async fn finish(
    cwom: &Cwom,
    task: &Task,
    link: Option<RunLink>,
    ending: Ending<'_>,
    trace_dir: Option<&Path>,
) {
    let Some(link) = link else { return };
    let ended_at = Utc::now();
    let telemetry = Telemetry {
        started_at: Some(link.started_at),
        ended_at: Some(ended_at),
        duration_s: Some((ended_at - link.started_at).num_microseconds().unwrap_or(0) as f64 / 1e6),
    };
    let (ok, failure) = match ending {
        Ending::Done => (true, None),
        Ending::Failed { category, message } => (false, Some(Failure { category, message: message.to_string() })),
    };
    if let Err(e) = cwom.finish_run(&link.run_id, ok, telemetry, failure).await {
        tracing::error!(task_id = %task.id, run_id = %link.run_id, error = %e, "could not close the CWOM Run");
    }
    if let Some(dir) = trace_dir {
        let uri = format!("file://{}", std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()).display());
        if let Err(e) = cwom.add_trace_artifact(&link.run_id, &link.issue_id, &uri).await {
            tracing::error!(task_id = %task.id, run_id = %link.run_id, error = %e, "could not record the trace Artifact");
        }
    }
}

/// Closes the Run of an attempt whose end was decided without its process (a lease that
/// expired), as failed with `message`; a Run already closed is left as it is.
pub(super) async fn end_unseen(
    cwom: &Cwom,
    task: TaskId,
    attempt: i32,
    claimed_at: Option<DateTime<Utc>>,
    message: &str,
) {
    let id = run_id(task, attempt, claimed_at);
    let telemetry = Telemetry { ended_at: Some(Utc::now()), ..Telemetry::default() };
    let failure = Failure { category: FailureCategory::Runtime, message: message.to_string() };
    match cwom.finish_run(&id, false, telemetry, Some(failure)).await {
        Ok(_) | Err(crate::cwom::CwomError::FinalStatus { .. }) | Err(crate::cwom::CwomError::NotFound { .. }) => {}
        Err(e) => tracing::error!(task_id = %task, run_id = %id, error = %e, "could not close the CWOM Run"),
    }
}

/// Records the end of an approval step (a decision, or its expiry) as one Run, opened
/// when it began waiting and closed now: `done` when approved, else `failed` (`policy`:
/// a person's or the clock's verdict, no fault of a program) with the step's `last_error`.
/// The decision, who gave it and the comment are the Run's meta (`jct.decision`,
/// `jct.decided_by`, `jct.comment`), and the trace folder its `trace` Artifact.
pub(super) async fn approval_ended(
    cwom: &Cwom,
    task: &Task,
    decision: Option<&crate::approval::DecisionRecord>,
    trace_dir: Option<&Path>,
) -> Option<String> {
    let issue_id = task.cwom_issue_id.as_ref()?;
    let started_at = task.started_at.unwrap_or_else(Utc::now);
    let mut meta = serde_json::Map::new();
    meta.insert("jct.task_id".into(), json!(task.id));
    meta.insert("jct.attempt".into(), json!(task.attempts));
    meta.insert("jct.task_type".into(), json!(task.task_type));
    if let Some(d) = decision {
        meta.insert("jct.decision".into(), json!(d.decision));
        meta.insert("jct.decided_by".into(), json!(d.by));
        meta.insert("jct.comment".into(), json!(d.comment));
        meta.insert("jct.decided_at".into(), json!(d.at));
    } else {
        meta.insert("jct.decision".into(), json!("expired"));
    }
    let start = StartRun {
        run_id: run_id(task.id, task.attempts, task.started_at),
        issue_id: issue_id.clone(),
        executor_actor_id: decision.and_then(|d| d.by.clone()).unwrap_or_else(|| "jct-approval".into()),
        runtime: "jct-approval".into(),
        started_at,
        meta,
    };
    let run_id = match cwom.start_run(start).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(task_id = %task.id, issue_id = %issue_id, error = %e, "could not record the CWOM Run");
            return None;
        }
    };
    let link = RunLink { run_id: run_id.clone(), issue_id: issue_id.clone(), started_at };
    let ending = match task.status {
        crate::task::TaskStatus::Completed => Ending::Done,
        _ => Ending::Failed {
            category: FailureCategory::Policy,
            message: task.last_error.as_deref().unwrap_or(crate::approval::REJECTED),
        },
    };
    finish(cwom, task, Some(link), ending, trace_dir).await;
    Some(run_id)
}

/// An artifact a worker posted for the attempt, as the Run's Artifact records it.
pub type NewRunArtifact = crate::cwom_service::RunArtifact;

/// Records an artifact of the attempt's Run; `None` (logged) when CWOM refuses it.
pub(super) async fn add_artifact(
    cwom: &Cwom,
    task: TaskId,
    link: &RunLink,
    artifact: NewRunArtifact,
) -> Option<String> {
    match cwom.add_run_artifact(&link.run_id, &link.issue_id, artifact).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(task_id = %task, run_id = %link.run_id, error = %e, "could not record the Artifact");
            None
        }
    }
}
