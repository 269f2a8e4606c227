//! The producer: decides when to claim, how many, and when each claimed task starts.
//!
//! A wake-up is only a hint. The producer always claims through the store and keeps
//! claiming while batches come back full. A wake-up that arrives during a claim is kept
//! by the [`Notify`](tokio::sync::Notify) permit, so it causes one more claim rather than
//! being lost. When idle it sleeps until the earliest of: a wake-up, the poll interval,
//! the next scheduled `run_at`, a freed slot it has work for, or shutdown.
//!
//! Claims fill a small local buffer ahead of the slots when tasks are short (see
//! [`prefetch`]): one round trip then feeds many executions, which is what lets a single
//! daemon drain tens of thousands of short tasks a second. Long tasks get no buffer, so a
//! daemon never sits on work another daemon could start. Buffered tasks hold leases like
//! running ones (the heartbeat renews them) and are handed back at shutdown.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;

use super::completer::{Completion, CompletionSender};
use super::{executor, Worker};
use crate::shutdown::Shutdown;
use crate::store::ClaimParams;
use crate::task::Task;

/// Tasks shorter than this on average are worth claiming ahead of free slots.
const SHORT_TASK: Duration = Duration::from_millis(10);

/// How many tasks beyond the free slots one claim may fetch: none until tasks prove
/// short, then sixteen per slot (64 to 512).
pub fn prefetch(slots: usize, average_run: Option<Duration>) -> usize {
    match average_run {
        Some(avg) if avg < SHORT_TASK => (slots * 16).clamp(64, 512),
        _ => 0,
    }
}

/// Runs until shutdown is asked for; hands back what it buffered and returns without
/// waiting for running tasks.
pub async fn run(worker: &Arc<Worker>, slots: &Arc<Semaphore>, completer: &CompletionSender, shutdown: &Shutdown) {
    let params = ClaimParams { worker: worker.settings.id.clone(), limit: 0, lease: worker.settings.lease };
    let poll = worker.settings.poll_interval;
    let mut buffer: VecDeque<Task> = VecDeque::new();
    // Whether the queue may hold due work we have not claimed yet.
    let mut maybe_more = true;
    loop {
        if shutdown.is_stopping() {
            break;
        }
        // Start what we hold on every free slot.
        while !buffer.is_empty() {
            let Ok(permit) = slots.clone().try_acquire_owned() else { break };
            let task = buffer.pop_front().expect("buffer is not empty");
            executor::spawn(worker.clone(), task, permit, completer.clone(), shutdown.clone());
        }

        let extra = prefetch(worker.settings.slots, worker.average_run());
        let room = (slots.available_permits() + extra).saturating_sub(buffer.len());
        // Refill when the buffer runs low, not after every task.
        if maybe_more && room > 0 && buffer.len() <= extra / 2 {
            match worker.store.claim(&ClaimParams { limit: room, ..params.clone() }).await {
                Ok(tasks) => {
                    maybe_more = tasks.len() == room;
                    for task in tasks {
                        worker.in_flight.hold(task.id, shutdown);
                        buffer.push_back(task);
                    }
                    if !buffer.is_empty() || maybe_more {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying after the poll interval");
                    maybe_more = false;
                }
            }
        }

        // Nothing to do right now: sleep until something changes.
        let mut wait = poll;
        if !maybe_more && buffer.is_empty() {
            if let Ok(Some(next)) = worker.store.next_scheduled().await {
                // A floor keeps a clock skew between daemon and database from spinning.
                let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                wait = wait.min(until.max(Duration::from_millis(2)));
            }
        }
        let want_slot = !buffer.is_empty() || maybe_more;
        tokio::select! {
            biased;
            _ = shutdown.stopping() => break,
            _ = worker.wake.notified() => maybe_more = true,
            permit = slots.clone().acquire_owned(), if want_slot => drop(permit),
            _ = tokio::time::sleep(wait) => maybe_more = true,
        }
    }
    // Claimed but never started: give them back uncounted.
    for task in buffer {
        worker.in_flight.remove(task.id);
        completer.send(Completion::Release(task.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_only_for_short_tasks() {
        assert_eq!(prefetch(4, None), 0, "unknown durations get no buffer");
        assert_eq!(prefetch(4, Some(Duration::from_millis(50))), 0);
        assert_eq!(prefetch(4, Some(Duration::from_micros(200))), 64);
        assert_eq!(prefetch(16, Some(Duration::from_micros(200))), 256);
        assert_eq!(prefetch(100, Some(Duration::from_micros(200))), 512);
    }
}
