//! Queue controls as data: a queue's pause and limits ([`QueueSettings`]), the change a
//! `PUT /queues/{name}` asks for ([`SettingsChange`], validated, naming the field), and a
//! queue as the API shows it ([`QueueView`]).
//!
//! A queue needs no row: tasks name any queue, and a row is stored when a setting is made.
//! The limits are enforced inside the claim by each store driver (see
//! [`crate::store::AttemptStore::claim`]); nothing here counts anything.

use serde_json::{Map, Value};

use crate::task::{limits, InvalidField};

/// The most a limit may be (a larger one is no limit at all on any machine).
pub const LIMIT_MAX: i64 = 1_000_000;
/// The most starts a rate may allow per window: the sliding log keeps one time per start.
pub const RATE_LIMIT_MAX: i64 = 100_000;
/// The longest rate window, in seconds (a day).
pub const RATE_WINDOW_MAX_S: f64 = 86_400.0;

/// At most `limit` starts in any window of `per_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Rate {
    #[schemars(range(min = 1, max = RATE_LIMIT_MAX))]
    pub limit: i64,
    /// Above 0, at most 86400.
    #[schemars(range(max = RATE_WINDOW_MAX_S))]
    pub per_s: f64,
}

/// A queue's stored controls; the default is an unpaused queue without limits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueueSettings {
    pub paused: bool,
    /// At most this many of the queue's tasks running at once.
    pub concurrency: Option<i64>,
    /// At most this many running at once per `concurrency_key` (tasks without a key are
    /// held only to `concurrency`).
    pub key_concurrency: Option<i64>,
    pub rate: Option<Rate>,
}

impl QueueSettings {
    /// Whether a claim from this queue must go through its limits.
    pub fn limited(&self) -> bool {
        self.concurrency.is_some() || self.key_concurrency.is_some() || self.rate.is_some()
    }
}

/// One field of a change: left as it is, or set (to a value or to none).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Change<T> {
    #[default]
    Keep,
    Set(Option<T>),
}

impl<T: Copy> Change<T> {
    fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Change::Keep => current,
            Change::Set(v) => v,
        }
    }
}

/// What `PUT /queues/{name}` asks: each limit absent (kept), `null` (removed) or a value.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SettingsChange {
    pub concurrency: Change<i64>,
    pub key_concurrency: Change<i64>,
    pub rate: Change<Rate>,
}

impl SettingsChange {
    /// Parses and checks a `PUT` body; the error names the field.
    pub fn from_body(body: &Value) -> Result<SettingsChange, InvalidField> {
        let Some(map) = body.as_object() else {
            return Err(InvalidField::new("body", "must be a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !["concurrency", "key_concurrency", "rate"].contains(&k.as_str())) {
            return Err(InvalidField::new(
                unknown.clone(),
                "unknown field (expected concurrency, key_concurrency, rate)",
            ));
        }
        Ok(SettingsChange {
            concurrency: limit(map, "concurrency")?,
            key_concurrency: limit(map, "key_concurrency")?,
            rate: match map.get("rate") {
                None => Change::Keep,
                Some(Value::Null) => Change::Set(None),
                Some(v) => Change::Set(Some(rate(v)?)),
            },
        })
    }

    /// The settings after this change.
    pub fn applied_to(&self, current: QueueSettings) -> QueueSettings {
        QueueSettings {
            paused: current.paused,
            concurrency: self.concurrency.apply(current.concurrency),
            key_concurrency: self.key_concurrency.apply(current.key_concurrency),
            rate: self.rate.apply(current.rate),
        }
    }
}

fn limit(map: &Map<String, Value>, field: &str) -> Result<Change<i64>, InvalidField> {
    match map.get(field) {
        None => Ok(Change::Keep),
        Some(Value::Null) => Ok(Change::Set(None)),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=LIMIT_MAX).contains(&n) => Ok(Change::Set(Some(n))),
            _ => Err(InvalidField::new(field, format!("must be an integer from 1 to {LIMIT_MAX}, or null"))),
        },
    }
}

fn rate(v: &Value) -> Result<Rate, InvalidField> {
    let Some(map) = v.as_object() else {
        return Err(InvalidField::new("rate", "must be an object {\"limit\": N, \"per_s\": S}, or null"));
    };
    if let Some(unknown) = map.keys().find(|k| !["limit", "per_s"].contains(&k.as_str())) {
        return Err(InvalidField::new(format!("rate.{unknown}"), "unknown field (expected limit, per_s)"));
    }
    let limit = match map.get("limit").and_then(Value::as_i64) {
        Some(n) if (1..=RATE_LIMIT_MAX).contains(&n) => n,
        _ => return Err(InvalidField::new("rate.limit", format!("must be an integer from 1 to {RATE_LIMIT_MAX}"))),
    };
    let per_s = match map.get("per_s").and_then(Value::as_f64) {
        Some(s) if s > 0.0 && s <= RATE_WINDOW_MAX_S => s,
        _ => {
            return Err(InvalidField::new(
                "rate.per_s",
                format!("must be a number of seconds above 0, at most {RATE_WINDOW_MAX_S}"),
            ))
        }
    };
    Ok(Rate { limit, per_s })
}

/// Checks a queue name from a path or a body: what a task's `queue` may be.
pub fn check_name(name: &str) -> Result<(), InvalidField> {
    if name.is_empty() || name.chars().count() > limits::QUEUE_MAX {
        return Err(InvalidField::new("name", format!("must be 1 to {} characters", limits::QUEUE_MAX)));
    }
    crate::storable::check_text("name", name).map_err(InvalidField::from)
}

/// The live tasks of a queue, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    pub queued: i64,
    pub running: i64,
    pub waiting: i64,
}

/// A queue as `GET /queues` shows it: its settings and its live tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueView {
    pub name: String,
    pub settings: QueueSettings,
    pub counts: QueueCounts,
}

impl QueueView {
    /// The API's answer for this queue.
    pub fn answer(&self) -> QueueAnswer {
        let s = &self.settings;
        QueueAnswer {
            name: self.name.clone(),
            paused: s.paused,
            concurrency: s.concurrency,
            key_concurrency: s.key_concurrency,
            rate: s.rate,
            queued: self.counts.queued,
            running: self.counts.running,
            waiting: self.counts.waiting,
        }
    }
}

/// A queue as the API shows it: its controls and its live tasks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[schemars(rename = "Queue")]
pub struct QueueAnswer {
    pub name: String,
    /// Nobody claims from a paused queue; its running tasks go on.
    pub paused: bool,
    /// Most running tasks of the queue, across every daemon and remote worker.
    pub concurrency: Option<i64>,
    /// Most running tasks per `concurrency_key` in the queue.
    pub key_concurrency: Option<i64>,
    pub rate: Option<Rate>,
    pub queued: i64,
    pub running: i64,
    pub waiting: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_change_keeps_what_it_does_not_name_and_removes_what_it_nulls() {
        let current = QueueSettings { paused: true, concurrency: Some(3), key_concurrency: Some(1), rate: None };
        let change =
            SettingsChange::from_body(&json!({ "key_concurrency": null, "rate": { "limit": 5, "per_s": 2 } })).unwrap();
        let after = change.applied_to(current);
        assert_eq!(after.concurrency, Some(3));
        assert_eq!(after.key_concurrency, None);
        assert_eq!(after.rate, Some(Rate { limit: 5, per_s: 2.0 }));
        assert!(after.paused, "a limit change leaves the pause alone");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (body, field) in [
            (json!({ "concurrency": 0 }), "concurrency"),
            (json!({ "concurrency": "3" }), "concurrency"),
            (json!({ "key_concurrency": 1.5 }), "key_concurrency"),
            (json!({ "rate": { "limit": 0, "per_s": 1 } }), "rate.limit"),
            (json!({ "rate": { "limit": 5 } }), "rate.per_s"),
            (json!({ "rate": { "limit": 5, "per_s": 1, "burst": 2 } }), "rate.burst"),
            (json!({ "rate": 5 }), "rate"),
            (json!({ "paused": true }), "paused"),
            (json!([1]), "body"),
        ] {
            assert_eq!(SettingsChange::from_body(&body).unwrap_err().field, field, "{body}");
        }
    }
}
