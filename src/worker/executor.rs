//! The executor: runs claimed tasks on one slot, each through the attempt lifecycle.
//!
//! For each task it begins the attempt ([`crate::attempt::Lifecycle::begin`]: trace folder,
//! CWOM Run), runs the handler inside the task's span with its timeout, turns a return, an
//! error, a panic, a timeout or an interruption into a [`RunEnd`], ends the attempt, and
//! hands the resulting store write to the completer; then it takes the next buffered task
//! on the same slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::buffer::Buffer;
use super::completer::{Completion, CompletionSender};
use super::Worker;
use crate::attempt::{AttemptSink, Disposition, PostedArtifact, RunEnd, StopReason};
use crate::handlers::{run_bounded, AttemptOutput, Bounded, DiscardOutput, HandlerError, Stream, TaskContext};
use crate::shutdown::Shutdown;
use crate::task::Task;
use crate::trace;

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
    cancel: CancellationToken,
    completer: &CompletionSender,
    shutdown: &Shutdown,
) {
    if cancel.is_cancelled() {
        // Stopped while waiting in the producer's buffer: it never ran.
        tracing::info!(task_id = %task.id, reason = ?worker.in_flight.reason(task.id), "stopped before it started");
        worker.in_flight.remove(task.id);
        return;
    }
    let attempt = worker.lifecycle.begin(Arc::new(task)).await;
    let task = attempt.task().clone();
    let span = tracing::info_span!("task", task_id = %task.id, task_type = %task.task_type, attempt = task.attempts);
    if let Some(folder) = attempt.folder() {
        trace::attach(&span, folder);
    }
    let output: Arc<dyn AttemptOutput> = if attempt.folder().is_some() {
        Arc::new(TraceOutput(worker.lifecycle.sink(&attempt)))
    } else {
        Arc::new(DiscardOutput)
    };
    let clock = Instant::now();
    let end = run_handler(worker, &task, cancel, output, shutdown).instrument(span).await;
    let took = clock.elapsed();
    worker.record_run(took);
    worker.metrics.ran(&task.task_type, took);

    match worker.lifecycle.end(attempt, end).await {
        Disposition::Write(end) => {
            worker.in_flight.mark_ended(task.id);
            completer.send(Completion::Finish(end));
        }
        Disposition::Release(held) => {
            worker.in_flight.mark_ended(held.id);
            completer.send(Completion::Release(held));
        }
        Disposition::Nothing(id) => {
            worker.in_flight.remove(id);
        }
    }
}

async fn run_handler(
    worker: &Worker,
    task: &Task,
    cancel: CancellationToken,
    output: Arc<dyn AttemptOutput>,
    shutdown: &Shutdown,
) -> RunEnd {
    let Some(handler) = worker.registry.get(&task.task_type) else {
        let known = worker.registry.types().join(", ");
        let msg = format!("unknown task type {:?} (known types: {known})", task.task_type);
        tracing::error!("{msg}");
        return RunEnd::Permanent(msg);
    };
    let ctx = TaskContext { id: task.id, attempt: task.attempts, payload: task.payload.clone(), cancel, output };
    let limit = Duration::from_secs(task.timeout_seconds.max(1) as u64);
    match run_bounded(handler.as_ref(), ctx, limit, worker.settings.stop_grace, shutdown.hard()).await {
        Bounded::Returned(value) => RunEnd::Returned(value),
        Bounded::Failed(msg) => {
            tracing::warn!(error = %msg, "handler failed");
            RunEnd::Failed(msg)
        }
        Bounded::TimedOut(limit) => {
            let msg = format!("timed out after {} s", limit.as_secs());
            tracing::error!("{msg}");
            RunEnd::Failed(msg)
        }
        Bounded::Stopped => RunEnd::Stopped(worker.in_flight.reason(task.id).unwrap_or(StopReason::Cancelled)),
        Bounded::Interrupted => RunEnd::Interrupted,
    }
}

/// A local attempt's output: lines into its `log.txt`, artifacts into its folder and Run.
struct TraceOutput(AttemptSink);

#[async_trait::async_trait]
impl AttemptOutput for TraceOutput {
    async fn lines(&self, stream: Stream, lines: Vec<String>) {
        let sink = self.0.clone();
        let _ = tokio::task::spawn_blocking(move || sink.append(stream.tag(), &lines)).await;
    }

    async fn artifact(&self, artifact: PostedArtifact) -> Result<String, HandlerError> {
        self.0.store(artifact).await.map(|stored| stored.uri).map_err(|e| HandlerError::new(e.to_string()))
    }
}
