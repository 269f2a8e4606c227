//! The task types this deployment knows: what intake admits.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::store::{StoreError, WorkerStore};
use crate::tunables::TASK_TYPES_REFRESH;

/// The task types this deployment knows: built-in handlers and `JCT_TASK_TYPES` (fixed),
/// and the types registered workers serve (read from the store, cached briefly).
pub struct TaskTypes {
    fixed: HashSet<String>,
    workers: Arc<dyn WorkerStore>,
    served: RwLock<(Option<Instant>, HashSet<String>)>,
}

impl TaskTypes {
    pub fn new(fixed: impl IntoIterator<Item = String>, workers: Arc<dyn WorkerStore>) -> Self {
        TaskTypes { fixed: fixed.into_iter().collect(), workers, served: RwLock::new((None, HashSet::new())) }
    }

    /// Whether a task of this type can be enqueued. A miss re-reads the registry (at most
    /// every [`TASK_TYPES_REFRESH`]), so a worker registered through another daemon counts.
    pub async fn contains(&self, task_type: &str) -> Result<bool, StoreError> {
        if self.fixed.contains(task_type) {
            return Ok(true);
        }
        let fresh = {
            let served = self.served.read().unwrap_or_else(|p| p.into_inner());
            if served.1.contains(task_type) {
                return Ok(true);
            }
            served.0.is_some_and(|at| at.elapsed() < TASK_TYPES_REFRESH)
        };
        if fresh {
            return Ok(false);
        }
        let types: HashSet<String> = self.workers.served_types().await?.into_iter().collect();
        let known = types.contains(task_type);
        *self.served.write().unwrap_or_else(|p| p.into_inner()) = (Some(Instant::now()), types);
        Ok(known)
    }

    /// Every known type, sorted (for error messages).
    pub fn known(&self) -> Vec<String> {
        let served = self.served.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<String> = self.fixed.iter().chain(served.1.iter()).cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    /// Adds the types a worker just registered with (no need to wait for the refresh).
    pub fn learn(&self, types: &[String]) {
        let mut served = self.served.write().unwrap_or_else(|p| p.into_inner());
        served.1.extend(types.iter().cloned());
    }
}
