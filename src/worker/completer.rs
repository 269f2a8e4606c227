//! The completer: writes the ends of attempts back to the store, in batches.
//!
//! Executors send their results here and move on; the completer takes whatever has
//! arrived, writes it in one fenced store call, and repeats (no waiting for more: the ends
//! that arrive during a write make the next batch). A write that fails because
//! the database is away is retried until it lands while the daemon runs. Once shutdown is
//! under way the retries are bounded: after the grace period plus
//! [`COMPLETER_SHUTDOWN_EXTRA`] the completer gives up, logs one line with the number of
//! attempt ends it could not write, and returns, so a daemon whose database is gone still
//! exits. Those tasks stay `running` under a lease nobody renews, and the rescuer of any
//! daemon brings them back when it expires: at-least-once holds.
//! A write the fence refuses (the lease moved to another daemon) is logged and dropped,
//! because the newer attempt owns the task now.

use std::sync::Arc;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::InFlight;
use crate::lease::Held;
use crate::shutdown::Shutdown;
use crate::store::{AttemptEnd, Finish, StoreResult, TaskStore};
use crate::tunables::{
    COMPLETER_LAST_TRY, COMPLETER_MAX_BATCH, COMPLETER_RETRY_CAP, COMPLETER_RETRY_FIRST, COMPLETER_SHUTDOWN_EXTRA,
};
use crate::wakeups::Fanout;

/// What an executor reports.
#[derive(Debug)]
pub enum Completion {
    /// The attempt ended; write its end.
    Finish(AttemptEnd),
    /// The attempt was interrupted by shutdown; give the task back uncounted.
    Release(Held),
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

/// Runs until every sender is dropped and everything sent is written, or, once `shutdown`
/// is under way, until `grace` plus [`COMPLETER_SHUTDOWN_EXTRA`] has passed (then what is
/// left unwritten is counted in one log line).
///
/// `wake` is nudged after retries and hand-backs: the producer (and any waiting remote
/// claim) may be asleep until a later poll and must learn of the new `run_at`. Each written task is let go from
/// `in_flight` (its lease no longer renewed, its place among the unfinished freed).
pub async fn run(
    store: Arc<dyn TaskStore>,
    wake: Arc<Fanout>,
    in_flight: Arc<InFlight>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    shutdown: Shutdown,
    grace: Duration,
) {
    let give_up = CancellationToken::new();
    let deadline = tokio::spawn({
        let give_up = give_up.clone();
        async move {
            shutdown.stopping().await;
            tokio::time::sleep(grace + COMPLETER_SHUTDOWN_EXTRA).await;
            give_up.cancel();
        }
    });
    // Attempt ends (finishes and hand-backs) given up on at shutdown.
    let mut unwritten = 0usize;
    let mut buf = Vec::with_capacity(COMPLETER_MAX_BATCH);
    // Whatever has arrived, at once: what arrives during a write is the next batch.
    while rx.recv_many(&mut buf, COMPLETER_MAX_BATCH).await > 0 {
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
            if !write_outcomes(&*store, &outcomes, &give_up).await {
                unwritten += outcomes.len();
            }
            for o in &outcomes {
                in_flight.remove(o.id());
            }
        }
        if !releases.is_empty() {
            match retry_until_ok("hand back", &give_up, || store.release(&releases)).await {
                Some(ids) => tracing::info!(handed_back = ids.len(), "interrupted tasks returned to the queue"),
                None => unwritten += releases.len(),
            }
            for h in &releases {
                in_flight.remove(h.id);
            }
        }
        if requeued || !releases.is_empty() {
            wake.work_available();
        }
    }
    deadline.abort();
    if unwritten > 0 {
        tracing::error!(
            unwritten,
            "shutdown: {unwritten} attempt ends could not be written (the database is unreachable); \
             those tasks come back through their leases"
        );
    }
}

/// Writes attempt ends; false when shutdown gave up on them.
async fn write_outcomes(store: &dyn TaskStore, outcomes: &[AttemptEnd], give_up: &CancellationToken) -> bool {
    let Some(applied) = retry_until_ok("finish", give_up, || store.finish(outcomes)).await else {
        return false;
    };
    if applied.len() < outcomes.len() {
        for o in outcomes.iter().filter(|o| !applied.contains(&o.id())) {
            tracing::warn!(
                task_id = %o.id(),
                attempt = o.held.token.attempt,
                "result discarded: the task is no longer running under this daemon's lease"
            );
        }
    }
    true
}

/// Retries a store write with capped backoff until it succeeds, or until `give_up` (the
/// shutdown deadline) fires, which also abandons a write in flight: `None`. A write that
/// arrives after the deadline (a handler that ignored its stop) still gets one try of at
/// most [`COMPLETER_LAST_TRY`]: the database may well be there.
async fn retry_until_ok<T, F, Fut>(what: &str, give_up: &CancellationToken, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    if give_up.is_cancelled() {
        return match tokio::time::timeout(COMPLETER_LAST_TRY, op()).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "completer: {what} failed after the shutdown deadline");
                None
            }
            Err(_) => None,
        };
    }
    let mut delay = COMPLETER_RETRY_FIRST;
    loop {
        let result = tokio::select! {
            r = op() => r,
            _ = give_up.cancelled() => return None,
        };
        match result {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "completer: {what} failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = give_up.cancelled() => return None,
                }
                delay = (delay * 2).min(COMPLETER_RETRY_CAP);
            }
        }
    }
}
