//! The lease rescuer: returns tasks whose lease expired (their holder died or hung) to the
//! queue after the retry policy's backoff (as for a failed attempt, so a poison task that
//! kills its daemons is not handed to the next one at once), or to `failed` when their
//! attempts are used up; wakes the fleet, and closes the CWOM Runs of the rescued attempts.
//! One rescuer serves every role and every kind of holder, local or remote.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Service;
use crate::attempt::Lifecycle;
use crate::store::{StoreError, TaskStore};
use crate::tunables::{RESCUE_EVERY_MAX, RESCUE_EVERY_MIN};
use crate::wakeups::Fanout;

/// How often expired leases are looked for: half a lease, within bounds.
pub fn rescue_interval(lease: Duration) -> Duration {
    (lease / 2).clamp(RESCUE_EVERY_MIN, RESCUE_EVERY_MAX)
}

pub struct Rescuer {
    store: Arc<dyn TaskStore>,
    lifecycle: Arc<Lifecycle>,
    wake: Arc<Fanout>,
    every: Duration,
}

impl Rescuer {
    pub fn new(store: Arc<dyn TaskStore>, lifecycle: Arc<Lifecycle>, wake: Arc<Fanout>, lease: Duration) -> Self {
        Rescuer { store, lifecycle, wake, every: rescue_interval(lease) }
    }
}

#[async_trait]
impl Service for Rescuer {
    fn name(&self) -> &'static str {
        "rescuer"
    }

    fn every(&self) -> Duration {
        self.every
    }

    async fn run_once(&self) -> Result<(), StoreError> {
        let rescued = self.store.rescue_expired(&self.lifecycle.retry_policy()).await?;
        if rescued.is_empty() {
            return Ok(());
        }
        tracing::warn!(rescued = rescued.len(), "returned tasks whose lease expired");
        self.wake.work_available();
        for r in &rescued {
            self.lifecycle.lease_expired(r).await;
        }
        Ok(())
    }
}
