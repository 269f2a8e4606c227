//! The approval expiry: fails approval steps that awaited their decision longer than
//! their payload's `expires_after_s`, with `last_error` `approval_expired`, records each
//! like a decision (trace folder, CWOM Run), and wakes the fleet for the `run` dependants
//! the failure released. A decision and the expiry at the same instant: both are one
//! UPDATE fenced by the step still awaiting, so exactly one ends it.
//!
//! A poll every [`APPROVAL_EXPIRY_EVERY`] under the maintenance leadership (one daemon of
//! the fleet does it; two at once would still each end a step at most once).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Service;
use crate::attempt::Lifecycle;
use crate::store::{StoreError, TaskStore};
use crate::tunables::{APPROVAL_EXPIRY_BATCH, APPROVAL_EXPIRY_EVERY};
use crate::wakeups::Fanout;

pub struct Expirer {
    store: Arc<dyn TaskStore>,
    lifecycle: Arc<Lifecycle>,
    wake: Arc<Fanout>,
}

impl Expirer {
    pub fn new(store: Arc<dyn TaskStore>, lifecycle: Arc<Lifecycle>, wake: Arc<Fanout>) -> Self {
        Expirer { store, lifecycle, wake }
    }
}

#[async_trait]
impl Service for Expirer {
    fn name(&self) -> &'static str {
        "approval expiry"
    }

    fn every(&self) -> Duration {
        APPROVAL_EXPIRY_EVERY
    }

    async fn run_once(&self) -> Result<(), StoreError> {
        loop {
            let expired = self.store.expire_approvals(APPROVAL_EXPIRY_BATCH).await?;
            if expired.is_empty() {
                return Ok(());
            }
            tracing::info!(expired = expired.len(), "approvals expired without a decision");
            self.wake.work_available();
            for task in &expired {
                self.lifecycle.approval_ended(task, None).await;
            }
            if expired.len() < APPROVAL_EXPIRY_BATCH as usize {
                return Ok(());
            }
        }
    }
}
