//! The attempt lifecycle: one run of a claimed task, from its start to its recorded end.
//!
//! Whoever runs a task (the in-process executor now, the remote-worker routes next) goes
//! through [`Lifecycle`]:
//! - [`Lifecycle::begin`] opens the attempt: the trace folder with `input.json` and the
//!   `log.txt` appender, and for a task linked to a CWOM Issue the attempt's Run;
//! - [`Lifecycle::end`] takes how the run ended ([`RunEnd`]), decides what it means with
//!   the [`RetryPolicy`] (completed, retry at a time, failed, or nothing to write because
//!   the task was cancelled or handed on), writes `output.json`, closes the CWOM Run, and
//!   returns the [`Disposition`]: the fenced write the store must get.
//!
//! - [`Lifecycle::resume`] takes up an attempt that began in another process (a remote
//!   worker's calls reaching a restarted daemon, or another daemon of the database): its
//!   folder on this daemon's disk is reopened or created, with a line saying so.
//!
//! The fence is the [`Held`] the claim returned, lease holder and attempt number: every
//! [`AttemptEnd`] carries it, and the store applies it only while the task is still
//! `running` under that holder and attempt (see [`crate::store::AttemptStore::finish`]),
//! so a late end from a holder that lost its lease never overwrites the newer attempt's.
//! The end is decided once, by that write; the trace folder and the Run record what it
//! decided, written by whoever's write it was. An attempt whose lease expired is closed by
//! the rescuer ([`Lifecycle::lease_expired`]), never by a holder that only noticed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::cwom::types::FailureCategory;
use crate::cwom_service::Cwom;
use crate::lease::Held;
use crate::metrics::Metrics;
use crate::store::{AttemptEnd, Finish, Rescued};
use crate::task::{Task, TaskId, WorkerId};
use crate::trace::{AttemptRecord, TaskTrace, TraceWriter};

mod cwom_run;
mod output;

pub use cwom_run::{run_id, NewRunArtifact};
pub use output::{sha256, ArtifactContent, ArtifactError, AttemptSink, PostedArtifact, StoredArtifact};

pub use crate::task::RetryPolicy;

/// Why a running task's handler was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Cancelled through the API (or by another daemon's API, via NOTIFY).
    Cancelled,
    /// Our lease is gone: the task was rescued and may be running elsewhere.
    LeaseLost,
}

/// How a handler run ended, before the retry policy decides what it means.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    Returned(Value),
    /// Failed in a way another attempt may not repeat (an error, a panic, a timeout).
    Failed(String),
    /// Failed, and the worker asks for the next attempt no sooner than after this delay.
    FailedRetryAfter(String, Duration),
    /// Never retried: the task cannot succeed (no handler for its type).
    Permanent(String),
    /// Interrupted by the hard shutdown: handed back, not counted.
    Interrupted,
    /// Stopped on request (cancel) or because the lease was lost.
    Stopped(StopReason),
}

/// What the store must be told about an ended attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Write this end, fenced by holder and attempt.
    Write(AttemptEnd),
    /// Give the task back to the queue without counting the attempt (shutdown).
    Release(Held),
    /// Nothing: the store already says `cancelled`, or the lease (and the task with it)
    /// belongs to someone else now.
    Nothing(TaskId),
}

/// How an attempt ended, as its trace folder and CWOM Run record it.
#[derive(Debug, Clone, Copy)]
pub enum Closing<'a> {
    /// The store took this end.
    Finished(&'a Finish),
    /// Cancelled while running: the store already says so.
    Cancelled,
    /// The lease went to someone else: leave the folder alone (the rescuer closes the Run).
    LeaseLost,
    /// Given back to the queue uncounted (shutdown, or a worker's release).
    HandedBack,
}

/// One attempt in progress.
pub struct Attempt {
    task: Arc<Task>,
    started_at: DateTime<Utc>,
    clock: Instant,
    folder: Option<TaskTrace>,
    run: Option<cwom_run::RunLink>,
}

impl Attempt {
    pub fn task(&self) -> &Arc<Task> {
        &self.task
    }

    /// The open trace folder, when traces are on and it could be opened.
    pub fn folder(&self) -> Option<&TaskTrace> {
        self.folder.as_ref()
    }

    /// The CWOM Run recording this attempt, for a task linked to an Issue.
    pub fn run_id(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.run_id.as_str())
    }

    /// The fence of this attempt.
    pub fn held(&self) -> Held {
        held_of(&self.task)
    }
}

/// The fence a claimed task carries: its holder and attempt.
pub fn held_of(task: &Task) -> Held {
    Held::new(task.id, WorkerId(task.locked_by.clone().unwrap_or_default()), task.attempts)
}

/// The attempt lifecycle of one daemon: where traces go, where Runs are recorded, when
/// failures run again.
pub struct Lifecycle {
    trace: TraceWriter,
    cwom: Cwom,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Lifecycle {
    pub fn new(trace: TraceWriter, cwom: Cwom, retry: RetryPolicy, metrics: Arc<Metrics>) -> Self {
        Lifecycle { trace, cwom, retry, metrics }
    }

    /// Where trace folders go (for the routes that read them).
    pub fn trace(&self) -> &TraceWriter {
        &self.trace
    }

    /// A handle for storing what the attempt produces (log lines, artifacts) while it runs.
    pub fn sink(&self, attempt: &Attempt) -> AttemptSink {
        AttemptSink::new(attempt.task.id, attempt.folder.clone(), attempt.run.clone(), &self.cwom)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Starts an attempt of a claimed task: its trace folder and, when linked, its Run.
    /// Neither can fail the attempt: a trace or CWOM problem is logged and the task runs.
    pub async fn begin(&self, task: Arc<Task>) -> Attempt {
        let started_at = Utc::now();
        let clock = Instant::now();
        if let Some(claimed) = task.started_at {
            self.metrics.started_after_claim((started_at - claimed).to_std().unwrap_or_default());
        }
        let folder = self.open_trace(&task).await;
        // The lease holder executes: this daemon's worker, or a remote worker.
        let executor = task.locked_by.clone().unwrap_or_default();
        let run = cwom_run::start(&self.cwom, &executor, &task, started_at).await;
        Attempt { task, started_at, clock, folder, run }
    }

    /// Takes up an attempt that began in another process: reopens (or creates) its trace
    /// folder on this daemon's disk with a line saying so, and links its Run by id.
    pub async fn resume(&self, task: Arc<Task>) -> Attempt {
        let started_at = task.started_at.unwrap_or_else(Utc::now);
        let folder = if self.trace.is_enabled() {
            let writer = self.trace.clone();
            let t = task.clone();
            match tokio::task::spawn_blocking(move || writer.resume(&t)).await.map_err(std::io::Error::other) {
                Ok(Ok(folder)) => folder,
                Ok(Err(e)) | Err(e) => {
                    tracing::error!(task_id = %task.id, error = %e, "could not reopen the trace folder");
                    None
                }
            }
        } else {
            None
        };
        let run = cwom_run::link_of(&task, started_at);
        Attempt { task, started_at, clock: Instant::now(), folder, run }
    }

    /// Records the end the rescuer decided for an attempt whose lease expired: its Run is
    /// closed as failed (the folder is left as its holder left it).
    pub async fn lease_expired(&self, rescued: &Rescued) {
        if rescued.cwom_issue_id.is_some() {
            cwom_run::end_unseen(&self.cwom, rescued.id, rescued.attempt, rescued.started_at, "lease expired").await;
        }
    }

    /// Closes the Run of an attempt given back to the queue by a daemon that did not have
    /// it open (a worker's release or deregistration through another daemon).
    pub async fn handed_back_unseen(&self, task: &Task) {
        if task.cwom_issue_id.is_some() {
            let message = "handed back to the queue";
            cwom_run::end_unseen(&self.cwom, task.id, task.attempts, task.started_at, message).await;
        }
    }

    /// Records the end of an approval step, decided (`decision`) or expired (`None`), as an
    /// attempt's end is recorded: its trace folder (`input.json`; `log.txt` saying who
    /// decided what and why; `output.json` with the step's result and error) and, for a
    /// linked step, a CWOM Run holding the decision. Neither can undo the end, which the
    /// store already took: a problem is logged.
    pub async fn approval_ended(&self, task: &Task, decision: Option<&crate::approval::DecisionRecord>) {
        let line = match decision {
            Some(d) => format!(
                "{} by {}{}",
                match d.decision {
                    crate::approval::Decision::Approve => "approved",
                    crate::approval::Decision::Reject => "rejected",
                },
                d.by.as_deref().unwrap_or("(not given)"),
                d.comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
            ),
            None => format!("{}: no decision in time", crate::approval::EXPIRED),
        };
        tracing::info!(task_id = %task.id, status = %task.status, "{line}");
        let folder = if self.trace.is_enabled() {
            let writer = self.trace.clone();
            let t = task.clone();
            let written = tokio::task::spawn_blocking(move || {
                let folder = writer.begin(&t)?;
                if let Some(f) = &folder {
                    f.append_lines("approval", &[line])?;
                }
                Ok::<_, std::io::Error>(folder)
            })
            .await
            .map_err(std::io::Error::other);
            match written {
                Ok(Ok(folder)) => folder,
                Ok(Err(e)) | Err(e) => {
                    tracing::error!(task_id = %task.id, error = %e, "could not write the approval's trace folder");
                    None
                }
            }
        } else {
            None
        };
        let run_id = cwom_run::approval_ended(&self.cwom, task, decision, folder.as_ref().map(|f| f.dir())).await;
        if let Some(folder) = folder {
            let started_at = task.started_at.unwrap_or(task.updated_at);
            let finished_at = task.finished_at.unwrap_or(task.updated_at);
            let record = AttemptRecord {
                task_id: task.id,
                status: task.status.as_str(),
                attempt: task.attempts,
                result: task.result.clone(),
                error: task.last_error.clone(),
                retry_at: None,
                started_at,
                finished_at,
                duration_ms: (finished_at - started_at).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                cwom_run_id: run_id,
            };
            self.write_output(folder, record, task).await;
        }
    }

    /// What a run's end means for the task, by the retry policy.
    pub fn decide(&self, task: &Task, end: RunEnd) -> Result<Finish, RunEnd> {
        match end {
            RunEnd::Returned(result) => Ok(Finish::Completed { result }),
            RunEnd::Permanent(error) => Ok(Finish::Failed { error }),
            RunEnd::Failed(error) if task.attempts < task.max_attempts => {
                let delay = chrono::Duration::from_std(self.retry.delay(task.attempts)).unwrap_or_default();
                Ok(Finish::Retry { error, run_at: Utc::now() + delay })
            }
            RunEnd::Failed(error) => Ok(Finish::Failed { error }),
            RunEnd::FailedRetryAfter(error, after) if task.attempts < task.max_attempts => {
                let delay = chrono::Duration::from_std(after).unwrap_or_default();
                Ok(Finish::Retry { error, run_at: Utc::now() + delay })
            }
            RunEnd::FailedRetryAfter(error, _) => Ok(Finish::Failed { error }),
            other => Err(other),
        }
    }

    /// Ends an attempt: decides what the run's end means, records it in the trace folder
    /// and the CWOM Run, and says what the store must get.
    pub async fn end(&self, attempt: Attempt, end: RunEnd) -> Disposition {
        let task = attempt.task.clone();
        match self.decide(&task, end) {
            Ok(finish) => {
                self.close(attempt, Closing::Finished(&finish)).await;
                Disposition::Write(AttemptEnd { held: held_of(&task), finish })
            }
            Err(RunEnd::Interrupted) => {
                tracing::info!(task_id = %task.id, "interrupted by shutdown; handing back");
                self.close(attempt, Closing::HandedBack).await;
                Disposition::Release(held_of(&task))
            }
            Err(RunEnd::Stopped(StopReason::LeaseLost)) => {
                tracing::warn!(task_id = %task.id, attempt = task.attempts, "stopped: lease lost");
                self.close(attempt, Closing::LeaseLost).await;
                Disposition::Nothing(task.id)
            }
            Err(RunEnd::Stopped(StopReason::Cancelled)) => {
                tracing::info!(task_id = %task.id, attempt = task.attempts, "stopped: task cancelled");
                self.close(attempt, Closing::Cancelled).await;
                Disposition::Nothing(task.id)
            }
            Err(other) => unreachable!("decide settles {other:?}"),
        }
    }

    /// Records how an attempt ended: counts and logs a finish, writes `output.json` (not for
    /// a lost lease, whose folder may be another holder's now, nor for a hand-back, which
    /// is not an end), and closes the CWOM Run (not for a lost lease: the rescuer's update
    /// decided that end, and the rescuer closes it).
    pub async fn close(&self, attempt: Attempt, how: Closing<'_>) {
        let Attempt { task, started_at, clock, folder, run } = attempt;
        let run_id = run.as_ref().map(|r| r.run_id.clone());
        let trace_dir = folder.as_ref().map(|f| f.dir().to_path_buf());
        let (ending, ended, keep_trace) = match how {
            Closing::Finished(finish) => {
                self.count_and_log(&task, finish);
                let ending = match finish {
                    Finish::Completed { .. } => cwom_run::Ending::Done,
                    Finish::Retry { error, .. } | Finish::Failed { error } => {
                        cwom_run::Ending::Failed { category: FailureCategory::Runtime, message: error }
                    }
                };
                (ending, Some(Ended::Finished(finish)), true)
            }
            Closing::Cancelled => (
                cwom_run::Ending::Failed { category: FailureCategory::Unknown, message: "cancelled while running" },
                Some(Ended::Cancelled),
                true,
            ),
            Closing::LeaseLost => return,
            Closing::HandedBack => (
                cwom_run::Ending::Failed { category: FailureCategory::Runtime, message: "handed back to the queue" },
                None,
                false,
            ),
        };
        let trace_dir = if keep_trace { trace_dir } else { None };
        cwom_run::finish(&self.cwom, &task, run, ending, trace_dir.as_deref()).await;
        if let (Some(folder), Some(ended)) = (folder, ended) {
            let mut record = record(&task, ended, started_at, clock.elapsed());
            record.cwom_run_id = run_id;
            self.write_output(folder, record, &task).await;
        }
    }

    fn count_and_log(&self, task: &Task, finish: &Finish) {
        match finish {
            Finish::Completed { .. } => {
                self.metrics.completed(&task.task_type);
                tracing::debug!(task_id = %task.id, "task completed");
            }
            Finish::Retry { error, run_at } => {
                self.metrics.retried(&task.task_type);
                tracing::info!(
                    task_id = %task.id,
                    trace_id = task.trace_id.as_deref().unwrap_or(""),
                    attempt = task.attempts,
                    %error,
                    %run_at,
                    "attempt failed; will retry"
                );
            }
            Finish::Failed { error } => {
                self.metrics.failed(&task.task_type);
                tracing::warn!(
                    task_id = %task.id,
                    trace_id = task.trace_id.as_deref().unwrap_or(""),
                    attempt = task.attempts,
                    %error,
                    "task failed"
                );
            }
        }
    }

    async fn open_trace(&self, task: &Arc<Task>) -> Option<TaskTrace> {
        if !self.trace.is_enabled() {
            return None;
        }
        let writer = self.trace.clone();
        let t = task.clone();
        match tokio::task::spawn_blocking(move || writer.begin(&t)).await {
            Ok(Ok(folder)) => folder,
            // The task still runs: a trace problem must not lose work.
            Ok(Err(e)) => {
                tracing::error!(task_id = %task.id, error = %e, "could not open the trace folder");
                None
            }
            Err(e) => {
                tracing::error!(task_id = %task.id, error = %e, "trace folder job failed");
                None
            }
        }
    }

    /// Writes `output.json` (and closes the folder's log when `folder` drops).
    async fn write_output(&self, folder: TaskTrace, record: AttemptRecord, task: &Task) {
        let writer = self.trace.clone();
        let written = tokio::task::spawn_blocking(move || writer.finish(&folder, &record)).await;
        if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
            tracing::error!(task_id = %task.id, error = %e, "could not write output.json");
        }
    }
}

/// How an attempt that `output.json` describes ended.
#[derive(Clone, Copy)]
enum Ended<'a> {
    Finished(&'a Finish),
    Cancelled,
}

fn record(task: &Task, ended: Ended<'_>, started_at: DateTime<Utc>, took: Duration) -> AttemptRecord {
    let (status, result, error, retry_at) = match ended {
        Ended::Finished(Finish::Completed { result }) => ("completed", Some(result.clone()), None, None),
        Ended::Finished(Finish::Retry { error, run_at }) => ("queued", None, Some(error.clone()), Some(*run_at)),
        Ended::Finished(Finish::Failed { error }) => ("failed", None, Some(error.clone()), None),
        Ended::Cancelled => ("cancelled", None, Some("cancelled while running".to_string()), None),
    };
    AttemptRecord {
        task_id: task.id,
        status,
        attempt: task.attempts,
        result,
        error,
        retry_at,
        started_at,
        finished_at: Utc::now(),
        duration_ms: took.as_secs_f64() * 1000.0,
        cwom_run_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunables::RETRY_JITTER_MIN;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..=12 {
            let d = policy.delay(attempt);
            let nominal = policy.base.saturating_mul(1 << (attempt - 1)).min(policy.cap);
            assert!(d <= nominal && d >= nominal.mul_f64(RETRY_JITTER_MIN), "attempt {attempt}: {d:?} vs {nominal:?}");
        }
        assert!(policy.delay(40) <= policy.cap);
        let fast = RetryPolicy { base: Duration::from_millis(10), cap: Duration::from_millis(40) };
        assert!(fast.delay(1) <= Duration::from_millis(10));
        assert!(fast.delay(10) <= Duration::from_millis(40) && fast.delay(10) >= Duration::from_millis(30));
    }
}
