//! The MCP server as a JCT worker: one registration per set of types and queues an agent
//! claims with (made on first use, made again when the server has forgotten it), heartbeats
//! that keep the workers and the leases of the tasks they hold alive while this process
//! runs, the numbering of log appends, and deregistration when it stops.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::client::{Client, ClientError};
use crate::tunables::{MCP_DEREGISTER_WITHIN, MCP_WORKER_SLOTS};

/// What a worker registration serves: claims only ever return tasks of these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Serves {
    types: BTreeSet<String>,
    /// `None`: every queue.
    queues: Option<BTreeSet<String>>,
}

impl Serves {
    pub fn new(types: Vec<String>, queues: Option<Vec<String>>) -> Self {
        Serves { types: types.into_iter().collect(), queues: queues.map(|q| q.into_iter().collect()) }
    }
}

/// One registration as the server answered it.
#[derive(Debug, Clone)]
struct Registered {
    worker_id: String,
    heartbeat: Duration,
}

#[derive(Default)]
struct State {
    workers: HashMap<Serves, Registered>,
    /// Tasks claimed here and not yet ended here, by task id: the worker holding each. Their
    /// leases are renewed by the worker heartbeats, so an agent that thinks for minutes
    /// between calls does not lose its task.
    held: HashMap<String, String>,
    /// The next `seq` of each task's log appends.
    next_seq: HashMap<String, u64>,
}

/// The worker side of the MCP server; shared by every tool call and the heartbeat loop.
pub struct Agent {
    client: Client,
    /// The MCP process's name for its registrations (`mcp@<host>`), shown by `GET /workers`.
    name: String,
    state: Mutex<State>,
    /// Wakes the heartbeat loop when the first worker registers.
    registered: Notify,
    /// Held while registering, so concurrent first claims make one registration: a second
    /// would never be heartbeated, and neither would the tasks claimed through it.
    registering: tokio::sync::Mutex<()>,
}

impl Agent {
    pub fn new(client: Client, name: String) -> Self {
        Agent {
            client,
            name,
            state: Mutex::new(State::default()),
            registered: Notify::new(),
            registering: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims one task for `serves`, waiting up to `wait`: `{"task": …}` or `{"task": null}`.
    pub async fn claim(&self, serves: &Serves, wait: Duration) -> Result<Value, ClientError> {
        let mut registered_now = false;
        loop {
            let worker = self.worker_for(serves).await?;
            let body = json!({ "worker_id": worker.worker_id, "max": 1, "wait_ms": wait.as_millis() as u64 });
            match self.client.post_json_waiting("/tasks/claim", &body, wait).await {
                Ok(answer) => {
                    let task = answer["tasks"].as_array().and_then(|t| t.first()).cloned().unwrap_or(Value::Null);
                    if let Some(id) = task["task_id"].as_str() {
                        self.state().held.insert(id.to_string(), worker.worker_id.clone());
                    }
                    return Ok(json!({ "task": task }));
                }
                // The server forgot the worker (it was silent too long, or the server's
                // store was reset): register again, once per call.
                Err(e) if e.code() == Some("worker_not_found") && !registered_now => {
                    self.forget_worker(&worker.worker_id);
                    registered_now = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The registration for `serves`, made now if there is none.
    async fn worker_for(&self, serves: &Serves) -> Result<Registered, ClientError> {
        if let Some(r) = self.state().workers.get(serves) {
            return Ok(r.clone());
        }
        let _one_at_a_time = self.registering.lock().await;
        if let Some(r) = self.state().workers.get(serves) {
            return Ok(r.clone());
        }
        let body = json!({
            "name": self.name,
            "types": serves.types,
            "queues": serves.queues,
            "max_slots": MCP_WORKER_SLOTS,
            "labels": { "via": "mcp" },
        });
        let answer = self.client.post_json("/workers", &body).await?;
        let protocol = |reason: &str| ClientError::Protocol {
            url: format!("{}/workers", self.client.base_url()),
            reason: reason.to_string(),
        };
        let worker_id = answer["worker_id"].as_str().ok_or_else(|| protocol("no worker_id"))?.to_string();
        let seconds = answer["heartbeat_interval_s"].as_f64().filter(|s| s.is_finite() && *s > 0.0);
        let heartbeat = Duration::from_secs_f64(seconds.ok_or_else(|| protocol("no heartbeat_interval_s"))?);
        let registered = Registered { worker_id, heartbeat };
        tracing::info!(worker_id = %registered.worker_id, types = ?serves.types, "registered as a JCT worker");
        self.state().workers.insert(serves.clone(), registered.clone());
        self.registered.notify_one();
        Ok(registered)
    }

    fn forget_worker(&self, worker_id: &str) {
        let mut state = self.state();
        state.workers.retain(|_, r| r.worker_id != worker_id);
        state.held.retain(|_, w| w != worker_id);
    }

    /// The task's attempt ended through this server (completed, failed): stop renewing it.
    pub fn ended(&self, task_id: &str) {
        let mut state = self.state();
        state.held.remove(task_id);
        state.next_seq.remove(task_id);
    }

    /// The `seq` for the next log append to `task_id`. The first is the clock (microseconds
    /// since 1970) and the next ones count up from it: an MCP server restarted mid-task, which
    /// has forgotten its counters, still numbers above what the JCT server has seen, so its
    /// lines are not dropped as repeats.
    pub fn next_seq(&self, task_id: &str) -> u64 {
        let mut state = self.state();
        let next = state.next_seq.entry(task_id.to_string()).or_insert_with(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.as_micros() as u64
        });
        let seq = *next;
        *next += 1;
        seq
    }

    /// Heartbeats every registered worker at the shortest interval the server gave, with the
    /// tasks each holds, until dropped. Runs for the life of the MCP server.
    pub async fn keep_alive(self: Arc<Self>) {
        loop {
            let every = self.state().workers.values().map(|r| r.heartbeat).min();
            match every {
                None => self.registered.notified().await,
                Some(every) => {
                    tokio::time::sleep(every).await;
                    self.beat_all().await;
                }
            }
        }
    }

    async fn beat_all(&self) {
        let workers: Vec<(String, Vec<String>)> = {
            let state = self.state();
            state
                .workers
                .values()
                .map(|r| {
                    let held = state.held.iter().filter(|(_, w)| **w == r.worker_id).map(|(t, _)| t.clone()).collect();
                    (r.worker_id.clone(), held)
                })
                .collect()
        };
        for (worker_id, running) in workers {
            let path = format!("/workers/{worker_id}/heartbeat");
            match self.client.post_json(&path, &json!({ "running": running })).await {
                Ok(beat) => {
                    // Cancelled or lost: the agent learns it from its next call on the task.
                    let mut state = self.state();
                    for id in beat["cancel"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        state.held.remove(id);
                    }
                }
                Err(e) if e.code() == Some("worker_not_found") => {
                    tracing::warn!(%worker_id, "the server forgot this worker; the next claim registers again");
                    self.forget_worker(&worker_id);
                }
                Err(e) => tracing::warn!(%worker_id, error = %e, "worker heartbeat failed"),
            }
        }
    }

    /// Deregisters every worker (their unfinished tasks go back to the queue at once).
    pub async fn deregister_all(&self) {
        let ids: Vec<String> = self.state().workers.drain().map(|(_, r)| r.worker_id).collect();
        let all = futures_util::future::join_all(ids.iter().map(|id| async move {
            match self.client.delete(&format!("/workers/{id}")).await {
                Ok(_) => tracing::info!(worker_id = %id, "deregistered"),
                Err(e) => tracing::warn!(worker_id = %id, error = %e, "could not deregister"),
            }
        }));
        if tokio::time::timeout(MCP_DEREGISTER_WITHIN, all).await.is_err() {
            tracing::warn!("deregistering took too long; the server will forget these workers when their leases end");
        }
    }
}
