//! The heartbeat: renews the leases of the tasks this daemon holds, in one store call for
//! all of them, and stops those it no longer holds (cancelled, or rescued after a stall).

use std::sync::Arc;
use std::time::Duration;

use super::Worker;
use crate::attempt::StopReason;
use crate::shutdown::Shutdown;
use crate::store::{LeaseState, RenewParams};
use crate::tunables::HEARTBEAT_EVERY_MIN;

/// How often our leases are renewed: a third of a lease, so two beats can be missed.
pub fn heartbeat_interval(lease: Duration) -> Duration {
    (lease / 3).max(HEARTBEAT_EVERY_MIN)
}

pub async fn run(worker: Arc<Worker>, _shutdown: Shutdown) {
    let lease = worker.settings.lease;
    let mut beat = tokio::time::interval(heartbeat_interval(lease));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        let held = worker.in_flight.held(&worker.settings.id);
        if held.is_empty() {
            continue;
        }
        match worker.store.renew(RenewParams { attempts: &held, lease }).await {
            Ok(states) => {
                for (h, state) in held.iter().zip(states) {
                    match state {
                        LeaseState::Held { .. } => {}
                        // Cancelled through a daemon whose notification did not reach us.
                        LeaseState::Cancelled => {
                            worker.in_flight.stop(h.id, StopReason::Cancelled);
                        }
                        // Not ours any more: rescued after we stalled. Stop the handler; its
                        // result would be refused anyway. A task that finished while the
                        // renewal ran is not held either, but it is ended: only held ones
                        // are stopped.
                        LeaseState::Lost => {
                            if worker.in_flight.lost(h.id) {
                                tracing::warn!(task_id = %h.id, "task is no longer running under our lease; stopping it");
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
    }
}
