//! The producer: decides when to claim, and how many.
//!
//! A wake-up is only a hint. The producer always claims through the store, as many tasks
//! as it has free slots, and keeps claiming while batches come back full. A wake-up that
//! arrives during a claim is kept by the [`Notify`](tokio::sync::Notify) permit, so it
//! causes one more claim rather than being lost. When idle it sleeps until the earliest
//! of: a wake-up, the poll interval, the next scheduled `run_at`, or shutdown.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;

use super::completer::CompletionSender;
use super::{executor, Worker};
use crate::shutdown::Shutdown;
use crate::store::ClaimParams;

/// Runs until shutdown is asked for; returns without waiting for running tasks.
pub async fn run(worker: &Arc<Worker>, slots: &Arc<Semaphore>, completer: &CompletionSender, shutdown: &Shutdown) {
    let params = ClaimParams { worker: worker.settings.id.clone(), limit: 0, lease: worker.settings.lease };
    let poll = worker.settings.poll_interval;
    loop {
        // Wait for at least one free slot, then take every other free one.
        let first = tokio::select! {
            biased;
            _ = shutdown.stopping() => return,
            permit = slots.clone().acquire_owned() => permit.expect("slots semaphore is never closed"),
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let wanted = permits.len();
        let claimed = worker.store.claim(&ClaimParams { limit: wanted, ..params.clone() }).await;
        let full = match claimed {
            Ok(tasks) => {
                let got = tasks.len();
                for (task, permit) in tasks.into_iter().zip(permits.drain(..)) {
                    executor::spawn(worker.clone(), task, permit, completer.clone(), shutdown.clone());
                }
                got == wanted
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying after the poll interval");
                false
            }
        };
        drop(permits);
        if full {
            continue;
        }

        let mut wait = poll;
        if let Ok(Some(next)) = worker.store.next_scheduled().await {
            // A floor keeps a clock skew between daemon and database from spinning.
            let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until.max(Duration::from_millis(2)));
        }
        tokio::select! {
            biased;
            _ = shutdown.stopping() => return,
            _ = worker.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
