//! The rescuer: keeps leases honest, ours and everyone's.
//!
//! Every few seconds it returns tasks whose lease expired (their daemon died or hung) to
//! the queue after the retry policy's backoff (as for a failed attempt, so a poison task
//! that kills its daemons is not handed to the next one at once), or to `failed` when
//! their attempts are used up, and wakes the producer. On a shorter beat it renews the leases of the tasks this daemon is
//! running, in one store call for all of them.

use std::sync::Arc;
use std::time::Duration;

use super::Worker;
use crate::shutdown::Shutdown;
use crate::tunables::{HEARTBEAT_EVERY_MIN, RESCUE_EVERY_MAX, RESCUE_EVERY_MIN};

/// How often expired leases are looked for: half a lease, within bounds.
pub fn rescue_interval(lease: Duration) -> Duration {
    (lease / 2).clamp(RESCUE_EVERY_MIN, RESCUE_EVERY_MAX)
}

/// How often our leases are renewed: a third of a lease, so two beats can be missed.
pub fn heartbeat_interval(lease: Duration) -> Duration {
    (lease / 3).max(HEARTBEAT_EVERY_MIN)
}

pub async fn run(worker: Arc<Worker>, shutdown: Shutdown) {
    let lease = worker.settings.lease;
    // A task whose daemon died while running it waits like a failed attempt.
    let retry = worker.lifecycle.retry_policy();
    let mut rescue = tokio::time::interval(rescue_interval(lease));
    let mut beat = tokio::time::interval(heartbeat_interval(lease));
    rescue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = rescue.tick(), if !shutdown.is_stopping() => match worker.store.rescue_expired(&retry).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(rescued = n, "returned tasks whose lease expired");
                    worker.wake.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "rescue failed"),
            },
            _ = beat.tick() => {
                let ids = worker.in_flight.ids();
                if ids.is_empty() {
                    continue;
                }
                match worker.store.heartbeat(&worker.settings.id, &ids, lease).await {
                    Ok(renewed) if renewed.len() < ids.len() => {
                        // Not ours any more: cancelled, or rescued after we stalled.
                        // Stop the handlers; their results would be refused anyway.
                        // A task that finished while the heartbeat ran is not renewed
                        // either, but it is no longer held: only held ones are stopped.
                        for id in ids.iter().filter(|id| !renewed.contains(id)) {
                            if worker.in_flight.lost(*id) {
                                tracing::warn!(task_id = %id, "task is no longer running under our lease; stopping it");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                }
            }
        }
    }
}
