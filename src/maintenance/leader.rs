//! Leadership: a lease in the store's `leaders` table, taken when free or expired and
//! renewed by its holder, so one daemon at a time runs the maintenance services and a dead
//! leader is replaced within [`LEADER_TTL`] plus a renewal. On SQLite the process holding
//! the file is the only one that asks, so it leads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::store::{LeadParams, TaskStore};
use crate::tunables::LEADER_TTL;

/// One daemon's claim on one leadership.
pub struct Leadership {
    store: Arc<dyn TaskStore>,
    name: &'static str,
    holder: String,
    leading: AtomicBool,
}

impl Leadership {
    pub fn new(store: Arc<dyn TaskStore>, name: &'static str, holder: String) -> Self {
        Leadership { store, name, holder, leading: AtomicBool::new(false) }
    }

    /// Takes or renews the lease; whether this daemon leads now. A store that cannot be
    /// reached means not leading: a leader cut off from the database must not believe it
    /// still leads once its lease may have passed to another daemon.
    pub async fn keep(&self) -> bool {
        let params = LeadParams { name: self.name, holder: &self.holder, ttl: LEADER_TTL };
        let leads = match self.store.lead(params).await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(leadership = self.name, error = %e, "cannot renew the leadership");
                false
            }
        };
        let was = self.leading.swap(leads, Ordering::Relaxed);
        if leads != was {
            if leads {
                tracing::info!(leadership = self.name, holder = %self.holder, "leading");
            } else {
                tracing::info!(leadership = self.name, holder = %self.holder, "no longer leading");
            }
        }
        leads
    }

    /// Gives the lease up (clean shutdown), so another daemon takes over at once.
    pub async fn resign(&self) {
        if let Err(e) = self.store.resign(self.name, &self.holder).await {
            tracing::warn!(leadership = self.name, error = %e, "could not give the leadership up");
        }
        self.leading.store(false, Ordering::Relaxed);
    }
}
