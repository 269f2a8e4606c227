//! The executor: runs claimed tasks on one slot, each from trace folder to outcome.
//!
//! For each task it opens the trace folder (one blocking job), runs the handler inside the
//! task's span with its timeout, turns a return, an error, a panic, a timeout or an
//! interruption into an attempt end, writes `output.json`, and hands the end to the
//! completer; then it takes the producer's next buffered task on the same slot. The retry
//! policy (which failures run again, and when) lives here too.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::bridge::{self, Ending};
use super::completer::{Completion, CompletionSender};
use super::producer::Buffer;
use super::{StopReason, Worker};
use crate::cwom::types::FailureCategory;
use crate::handlers::{HandlerError, TaskContext};
use crate::shutdown::Shutdown;
use crate::store::{Finish, Outcome};
use crate::task::Task;
use crate::trace::{self, AttemptRecord, TaskTrace};

/// First retry delay; each further attempt doubles it, up to [`RETRY_CAP`].
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_CAP: Duration = Duration::from_secs(600);

/// The delay before attempt `attempt + 1`: `RETRY_BASE · 2^(attempt-1)`, capped at
/// `RETRY_CAP`, then scaled by a random factor in [0.75, 1.0] so that tasks failing
/// together do not retry in lockstep.
pub fn retry_delay(attempt: i32) -> Duration {
    let exp = attempt.clamp(1, 30) - 1;
    let raw = RETRY_BASE.saturating_mul(1u32 << exp).min(RETRY_CAP);
    raw.mul_f64(0.75 + 0.25 * rand::random::<f64>())
}

/// How a handler run ended, before the retry policy decides what it means.
enum RunEnd {
    Returned(Value),
    Failed(String),
    /// Never retried: the task cannot succeed (no handler for its type).
    Permanent(String),
    /// Interrupted by the hard shutdown: handed back, not counted.
    Interrupted,
    /// Stopped on request (cancel) or because our lease was lost.
    Stopped(StopReason),
}

/// How long a handler asked to stop may take to return before it is dropped.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `task` on the slot `permit` in a tokio task of its own, then the buffer's next
/// tasks on the same slot until the buffer is empty or shutdown is asked for; the slot is
/// freed then.
pub fn spawn(
    worker: Arc<Worker>,
    task: Task,
    permit: OwnedSemaphorePermit,
    buffer: Arc<Buffer>,
    completer: CompletionSender,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        let mut next = Some(task);
        while let Some(task) = next {
            // Not held: let go (stopped, or lost) between the claim and now.
            if let Some(token) = worker.in_flight.token(task.id) {
                // Whoever writes the task's end lets it go: the completer after its store
                // write, or `run` itself when nothing is left to write.
                run(&worker, task, token, &completer, &shutdown).await;
            }
            next = if shutdown.is_stopping() { None } else { buffer.take() };
        }
        drop(permit);
    });
}

async fn run(
    worker: &Worker,
    task: Task,
    cancel: tokio_util::sync::CancellationToken,
    completer: &CompletionSender,
    shutdown: &Shutdown,
) {
    if cancel.is_cancelled() {
        // Stopped while waiting in the producer's buffer: it never ran.
        tracing::info!(task_id = %task.id, reason = ?worker.in_flight.reason(task.id), "stopped before it started");
        worker.in_flight.remove(task.id);
        return;
    }
    let started_at = Utc::now();
    let clock = Instant::now();
    if let Some(claimed) = task.started_at {
        worker.metrics.started_after_claim((started_at - claimed).to_std().unwrap_or_default());
    }
    let task = Arc::new(task);
    let folder = open_trace(worker, &task).await;
    let run = bridge::start(worker, &task, started_at).await;
    let run_id = run.as_ref().map(|r| r.run_id.clone());
    let trace_dir = folder.as_ref().map(|f| f.dir().to_path_buf());

    let span = tracing::info_span!("task", task_id = %task.id, task_type = %task.task_type, attempt = task.attempts);
    if let Some(folder) = &folder {
        trace::attach(&span, folder);
    }
    let handler_clock = Instant::now();
    let end = run_handler(worker, &task, cancel, shutdown).instrument(span).await;
    let took = handler_clock.elapsed();
    worker.record_run(took);
    worker.metrics.ran(&task.task_type, took);

    let outcome = match end {
        RunEnd::Interrupted => {
            tracing::info!(task_id = %task.id, "interrupted by shutdown; handing back");
            let ending = Ending::Failed { category: FailureCategory::Runtime, message: "interrupted by shutdown" };
            bridge::finish(worker, &task, run, ending, None).await;
            worker.in_flight.mark_ended(task.id);
            completer.send(Completion::Release(task.id));
            return;
        }
        RunEnd::Stopped(StopReason::LeaseLost) => {
            // Another daemon may own the task (and its trace folder) now: leave both alone.
            tracing::warn!(task_id = %task.id, attempt = task.attempts, "stopped: lease lost");
            let ending = Ending::Failed { category: FailureCategory::Runtime, message: "lease lost" };
            bridge::finish(worker, &task, run, ending, None).await;
            worker.in_flight.remove(task.id);
            return;
        }
        RunEnd::Stopped(StopReason::Cancelled) => {
            tracing::info!(task_id = %task.id, attempt = task.attempts, "stopped: task cancelled");
            let ending = Ending::Failed { category: FailureCategory::Unknown, message: "cancelled while running" };
            bridge::finish(worker, &task, run, ending, trace_dir.as_deref()).await;
            // The store already says `cancelled`; only the trace needs the ending.
            if let Some(folder) = folder {
                let mut record = attempt_record(&task, Ended::Cancelled, started_at, Utc::now(), clock.elapsed());
                record.cwom_run_id = run_id;
                write_output(worker, folder, record, &task).await;
            }
            worker.in_flight.remove(task.id);
            return;
        }
        RunEnd::Returned(result) => Finish::Completed { result },
        RunEnd::Permanent(error) => Finish::Failed { error },
        RunEnd::Failed(error) if task.attempts < task.max_attempts => {
            let run_at = Utc::now() + chrono::Duration::from_std(retry_delay(task.attempts)).unwrap_or_default();
            Finish::Retry { error, run_at }
        }
        RunEnd::Failed(error) => Finish::Failed { error },
    };
    match &outcome {
        Finish::Completed { .. } => worker.metrics.completed(&task.task_type),
        Finish::Retry { .. } => worker.metrics.retried(&task.task_type),
        Finish::Failed { .. } => worker.metrics.failed(&task.task_type),
    }
    match &outcome {
        Finish::Completed { .. } => tracing::debug!(task_id = %task.id, "task completed"),
        Finish::Retry { error, run_at } => tracing::info!(
            task_id = %task.id,
            trace_id = task.trace_id.as_deref().unwrap_or(""),
            attempt = task.attempts,
            %error,
            %run_at,
            "attempt failed; will retry"
        ),
        Finish::Failed { error } => tracing::warn!(
            task_id = %task.id,
            trace_id = task.trace_id.as_deref().unwrap_or(""),
            attempt = task.attempts,
            %error,
            "task failed"
        ),
    }
    let ending = match &outcome {
        Finish::Completed { .. } => Ending::Done,
        Finish::Retry { error, .. } | Finish::Failed { error } => {
            Ending::Failed { category: FailureCategory::Runtime, message: error }
        }
    };
    bridge::finish(worker, &task, run, ending, trace_dir.as_deref()).await;
    if let Some(folder) = folder {
        let mut record = attempt_record(&task, Ended::Finished(&outcome), started_at, Utc::now(), clock.elapsed());
        record.cwom_run_id = run_id;
        write_output(worker, folder, record, &task).await;
    }
    worker.in_flight.mark_ended(task.id);
    completer.send(Completion::Finish(Outcome { id: task.id, attempt: task.attempts, finish: outcome }));
}

/// Writes `output.json` (and closes the folder's log when `folder` drops).
async fn write_output(worker: &Worker, folder: TaskTrace, record: AttemptRecord, task: &Task) {
    let writer = worker.trace.clone();
    let written = tokio::task::spawn_blocking(move || writer.finish(&folder, &record)).await;
    if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
        tracing::error!(task_id = %task.id, error = %e, "could not write output.json");
    }
}

async fn open_trace(worker: &Worker, task: &Arc<Task>) -> Option<TaskTrace> {
    if !worker.trace.is_enabled() {
        return None;
    }
    let writer = worker.trace.clone();
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

async fn run_handler(
    worker: &Worker,
    task: &Task,
    cancel: tokio_util::sync::CancellationToken,
    shutdown: &Shutdown,
) -> RunEnd {
    let Some(handler) = worker.registry.get(&task.task_type) else {
        let known = worker.registry.types().join(", ");
        let msg = format!("unknown task type {:?} (known types: {known})", task.task_type);
        tracing::error!("{msg}");
        return RunEnd::Permanent(msg);
    };
    let ctx =
        TaskContext { id: task.id, attempt: task.attempts, payload: task.payload.clone(), cancel: cancel.clone() };
    let limit = Duration::from_secs(task.timeout_seconds.max(1) as u64);
    let guarded = AssertUnwindSafe(handler.run(ctx)).catch_unwind();
    let mut ran = std::pin::pin!(tokio::time::timeout(limit, guarded));
    tokio::select! {
        biased;
        _ = shutdown.hard() => {
            cancel.cancel();
            RunEnd::Interrupted
        }
        _ = cancel.cancelled() => {
            let reason = worker.in_flight.reason(task.id).unwrap_or(StopReason::Cancelled);
            tracing::warn!(?reason, "asked to stop; waiting up to {} s for the handler", STOP_GRACE.as_secs());
            // A cooperative handler returns soon; an uncooperative one is dropped.
            let _ = tokio::time::timeout(STOP_GRACE, &mut ran).await;
            RunEnd::Stopped(reason)
        }
        ran = &mut ran => match ran {
            Ok(Ok(Ok(value))) => RunEnd::Returned(value),
            Ok(Ok(Err(HandlerError(msg)))) => {
                tracing::warn!(error = %msg, "handler returned an error");
                RunEnd::Failed(msg)
            }
            Ok(Err(panic)) => {
                let msg = format!("handler panicked: {}", panic_message(&panic));
                tracing::error!("{msg}");
                RunEnd::Failed(msg)
            }
            Err(_) => {
                cancel.cancel();
                let msg = format!("timed out after {} s", limit.as_secs());
                tracing::error!("{msg}");
                RunEnd::Failed(msg)
            }
        }
    }
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

/// How an attempt that `output.json` describes ended.
enum Ended<'a> {
    Finished(&'a Finish),
    Cancelled,
}

fn attempt_record(
    task: &Task,
    ended: Ended<'_>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    took: Duration,
) -> AttemptRecord {
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
        finished_at,
        duration_ms: took.as_secs_f64() * 1000.0,
        cwom_run_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        for attempt in 1..=12 {
            let d = retry_delay(attempt);
            let nominal = RETRY_BASE.saturating_mul(1 << (attempt - 1)).min(RETRY_CAP);
            assert!(d <= nominal && d >= nominal.mul_f64(0.75), "attempt {attempt}: {d:?} vs {nominal:?}");
        }
        assert!(retry_delay(40) <= RETRY_CAP);
    }
}
