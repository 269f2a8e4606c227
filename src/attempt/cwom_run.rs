//! The bridge to CWOM: a task linked to an Issue (`cwom_issue_id`) gets a Run per
//! attempt, and its trace folder becomes a `trace` Artifact of that Run.
//!
//! The work itself never depends on it: a CWOM write that fails is logged and the task
//! runs and ends as it would have. A task without a link costs one `Option` check.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::cwom::types::{Failure, FailureCategory, Telemetry};
use crate::cwom::{Cwom, StartRun};
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

/// Opens the attempt's Run (status `running`), when the task is linked to an Issue.
pub(super) async fn start(cwom: &Cwom, executor_id: &str, task: &Task, started_at: DateTime<Utc>) -> Option<RunLink> {
    let issue_id = task.cwom_issue_id.as_ref()?;
    let mut meta = serde_json::Map::new();
    meta.insert("jct.task_id".into(), json!(task.id));
    meta.insert("jct.attempt".into(), json!(task.attempts));
    meta.insert("jct.task_type".into(), json!(task.task_type));
    let start = StartRun {
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

/// An artifact a worker posted for the attempt, as the Run's Artifact records it.
pub type NewRunArtifact = crate::cwom::RunArtifact;

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
