//! The completer: writes the ends of attempts back to the store, in batches.
//!
//! Executors send their results here and move on; the completer takes whatever has
//! arrived, writes it in one fenced store call, and repeats. A write that fails because
//! the database is away is retried until it lands: a finished attempt is never dropped.
//! A write the fence refuses (the lease moved to another daemon) is logged and dropped,
//! because the newer attempt owns the task now.

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use super::InFlight;
use crate::store::{Finish, Outcome, StoreResult, TaskStore};
use crate::task::{TaskId, WorkerId};
use crate::tunables::{COMPLETER_LINGER, COMPLETER_MAX_BATCH, COMPLETER_RETRY_CAP, COMPLETER_RETRY_FIRST};

/// What an executor reports.
#[derive(Debug)]
pub enum Completion {
    /// The attempt ended; write its outcome.
    Finish(Outcome),
    /// The attempt was interrupted by shutdown; give the task back uncounted.
    Release(TaskId),
}

#[derive(Debug, Clone)]
pub struct CompletionSender(mpsc::UnboundedSender<Completion>);

impl CompletionSender {
    pub fn send(&self, c: Completion) {
        // The receiver lives until every sender is gone, so this cannot fail while we run.
        let _ = self.0.send(c);
    }
}

pub fn channel() -> (CompletionSender, mpsc::UnboundedReceiver<Completion>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (CompletionSender(tx), rx)
}

/// Runs until every sender is dropped and everything sent is written.
///
/// `wake` is nudged after retries and hand-backs: the producer may be asleep until a
/// later poll and must learn of the new `run_at`. Each written task is let go from
/// `in_flight` (its lease no longer renewed, its place among the unfinished freed).
pub async fn run(
    store: Arc<dyn TaskStore>,
    worker: WorkerId,
    wake: Arc<Notify>,
    in_flight: Arc<InFlight>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
) {
    let mut buf = Vec::with_capacity(COMPLETER_MAX_BATCH);
    while rx.recv_many(&mut buf, COMPLETER_MAX_BATCH).await > 0 {
        let linger = tokio::time::sleep(COMPLETER_LINGER);
        tokio::pin!(linger);
        while buf.len() < COMPLETER_MAX_BATCH {
            let room = COMPLETER_MAX_BATCH - buf.len();
            tokio::select! {
                n = rx.recv_many(&mut buf, room) => if n == 0 { break },
                _ = &mut linger => break,
            }
        }
        let mut outcomes = Vec::with_capacity(buf.len());
        let mut releases = Vec::new();
        for c in buf.drain(..) {
            match c {
                Completion::Finish(o) => outcomes.push(o),
                Completion::Release(id) => releases.push(id),
            }
        }
        let requeued = outcomes.iter().any(|o| matches!(o.finish, Finish::Retry { .. }));
        if !outcomes.is_empty() {
            write_outcomes(&*store, &worker, &outcomes).await;
            for o in &outcomes {
                in_flight.remove(o.id);
            }
        }
        if !releases.is_empty() {
            let n = retry_until_ok("hand back", || store.release(&worker, &releases)).await;
            tracing::info!(handed_back = n, "interrupted tasks returned to the queue");
            for id in &releases {
                in_flight.remove(*id);
            }
        }
        if requeued || !releases.is_empty() {
            wake.notify_one();
        }
    }
}

async fn write_outcomes(store: &dyn TaskStore, worker: &WorkerId, outcomes: &[Outcome]) {
    let applied = retry_until_ok("finish", || store.finish(worker, outcomes)).await;
    if applied.len() < outcomes.len() {
        for o in outcomes.iter().filter(|o| !applied.contains(&o.id)) {
            tracing::warn!(
                task_id = %o.id,
                attempt = o.attempt,
                "result discarded: the task is no longer running under this daemon's lease"
            );
        }
    }
}

/// Retries a store write with capped backoff until it succeeds.
async fn retry_until_ok<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut delay = COMPLETER_RETRY_FIRST;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "completer: {what} failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(COMPLETER_RETRY_CAP);
            }
        }
    }
}
