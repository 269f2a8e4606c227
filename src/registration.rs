//! Remote workers as data: a registration and its stored record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::task::{limits, WorkerId};

/// Most task types or queues one worker may name.
pub const MAX_NAMES: usize = 256;
/// Most tasks one worker may hold at once.
pub const MAX_SLOTS: i32 = 1000;

/// `POST /workers`: who the worker is and what it serves. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorker {
    pub name: String,
    pub types: Vec<String>,
    /// The queues it takes work from; none named means every queue.
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    #[serde(default = "one")]
    pub max_slots: i32,
    #[serde(default)]
    pub labels: Map<String, Value>,
}

fn one() -> i32 {
    1
}

impl NewWorker {
    /// Checks the registration; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.chars().count() > 128 {
            return Err("name: must be 1 to 128 characters".into());
        }
        if self.types.is_empty() || self.types.len() > MAX_NAMES {
            return Err(format!("types: must name 1 to {MAX_NAMES} task types"));
        }
        for t in &self.types {
            if t.is_empty() || t.chars().count() > limits::TYPE_MAX {
                return Err(format!("types: {t:?} must be 1 to {} characters", limits::TYPE_MAX));
            }
        }
        if let Some(queues) = &self.queues {
            if queues.is_empty() || queues.len() > MAX_NAMES {
                return Err(format!("queues: must name 1 to {MAX_NAMES} queues, or be left out for all"));
            }
            for q in queues {
                if q.is_empty() || q.chars().count() > limits::QUEUE_MAX {
                    return Err(format!("queues: {q:?} must be 1 to {} characters", limits::QUEUE_MAX));
                }
            }
        }
        if !(1..=MAX_SLOTS).contains(&self.max_slots) {
            return Err(format!("max_slots: must be from 1 to {MAX_SLOTS}"));
        }
        Ok(())
    }
}

/// A registered worker as stored.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WorkerRecord {
    pub worker_id: WorkerId,
    pub name: String,
    pub types: Vec<String>,
    pub queues: Option<Vec<String>>,
    pub max_slots: i32,
    pub labels: Map<String, Value>,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
}

/// Whether a worker is still heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Alive,
    /// Missed three heartbeat intervals: its tasks come back when their leases end.
    Dead,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked() {
        let ok =
            NewWorker { name: "py".into(), types: vec!["echo".into()], queues: None, max_slots: 2, labels: Map::new() };
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut NewWorker)| {
            let mut w = ok.clone();
            f(&mut w);
            w.validate().unwrap_err()
        };
        assert!(bad(|w| w.types.clear()).starts_with("types"));
        assert!(bad(|w| w.max_slots = 0).starts_with("max_slots"));
        assert!(bad(|w| w.queues = Some(vec![])).starts_with("queues"));
        assert!(bad(|w| w.name = String::new()).starts_with("name"));
    }
}
