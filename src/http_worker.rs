//! `worker --server URL`: runs this binary's handlers (the built-ins, `command`, `agent`)
//! for a JCT server over the HTTP worker protocol, with no database access.
//!
//! It registers with the types its registry serves, long-polls `POST /tasks/claim` for its
//! free slots, and runs each task as the in-process worker would: the handler under the
//! task's timeout, its output streamed to the server's `log.txt` (`POST /tasks/{id}/log`),
//! its artifacts posted (`POST /tasks/{id}/artifacts`), its end reported (`complete`,
//! `fail`, or `release` when interrupted by shutdown). The worker heartbeat renews the
//! leases of the running tasks and brings back the ones to stop (cancelled, or no longer
//! ours). SIGTERM stops claiming, gives running tasks the grace period, then stops them
//! and hands them back; the worker deregisters on the way out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::attempt::{ArtifactContent, PostedArtifact};
use crate::client::{Client, ClientError};
use crate::handlers::{run_bounded, AttemptOutput, Bounded, HandlerError, Registry, Stream, TaskContext};
use crate::shutdown::Shutdown;
use crate::task::TaskId;
use crate::tunables::{CLAIM_WAIT_MAX, STARTUP_RETRY_CAP, STARTUP_RETRY_FIRST};

/// What the runner is told from outside.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: String,
    pub api_key: Option<String>,
    pub name: String,
    pub slots: usize,
    pub shutdown_grace: Duration,
    /// How long a handler asked to stop may take (see [`crate::worker::stop_grace`]).
    pub stop_grace: Duration,
}

/// Why the runner stopped other than by a shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the server refused this worker: {0}")]
    Refused(ClientError),
    #[error("the server's answer to registration has no {0}")]
    Protocol(&'static str),
}

struct Registration {
    worker_id: String,
    heartbeat: Duration,
}

/// A task running here: how to stop it, and whether the server asked.
struct Running {
    token: CancellationToken,
    cancelled_by_server: bool,
}

type RunningMap = Arc<Mutex<HashMap<TaskId, Running>>>;

/// Runs until shutdown.
pub async fn run(settings: Settings, registry: Arc<Registry>, shutdown: Shutdown) -> Result<(), RunError> {
    let client = Client::new(&settings.server, settings.api_key.clone()).map_err(RunError::Refused)?;
    let Some(reg) = register(&client, &settings, &registry, &shutdown).await? else {
        return Ok(());
    };
    tracing::info!(server = %settings.server, worker_id = %reg.worker_id, slots = settings.slots, types = ?registry.types(), "registered");
    let running: RunningMap = Arc::default();
    let slots = Arc::new(Semaphore::new(settings.slots));
    let quiet = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let current_id = Arc::new(Mutex::new(reg.worker_id.clone()));

    let beats = tokio::spawn(heartbeats(
        client.clone(),
        settings.clone(),
        registry.clone(),
        running.clone(),
        current_id.clone(),
        reg.heartbeat,
        quiet.clone(),
        shutdown.clone(),
    ));

    while !shutdown.is_stopping() {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.stopping() => break,
        };
        if quiet.load(Ordering::Relaxed) {
            drop(permit);
            tokio::select! {
                _ = tokio::time::sleep(reg.heartbeat) => continue,
                _ = shutdown.stopping() => break,
            }
        }
        // The heartbeat registers again when the server forgot this worker.
        let worker_id = current_id.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let free = 1 + slots.available_permits();
        let body =
            json!({ "worker_id": worker_id, "max": free.min(100), "wait_ms": CLAIM_WAIT_MAX.as_millis() as u64 });
        let claimed = tokio::select! {
            c = client.post_json_waiting("/tasks/claim", &body, CLAIM_WAIT_MAX) => c,
            _ = shutdown.stopping() => break,
        };
        let tasks = match claimed {
            Ok(answer) => answer["tasks"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                // The heartbeat re-registers after a 404; anything else: wait a moment.
                tracing::warn!(error = %e, "claim failed");
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(STARTUP_RETRY_FIRST * 4) => continue,
                    _ = shutdown.stopping() => break,
                }
            }
        };
        let mut permit = Some(permit);
        for task in tasks {
            let p = match permit.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // More than we have slots for (should not happen): give it back.
                        release(&client, &task).await;
                        continue;
                    }
                },
            };
            let Some(id) = task["task_id"].as_str().and_then(|s| s.parse::<TaskId>().ok()) else {
                tracing::error!(%task, "a claimed task without a task_id");
                continue;
            };
            let token = shutdown.hard_token().child_token();
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Running { token: token.clone(), cancelled_by_server: false });
            let (client, registry, running, settings, shutdown) =
                (client.clone(), registry.clone(), running.clone(), settings.clone(), shutdown.clone());
            let span = tracing::info_span!("task", task_id = %id, task_type = task["type"].as_str().unwrap_or(""));
            tokio::spawn(
                async move {
                    run_task(&client, &registry, &settings, id, task, token, &running, &shutdown).await;
                    running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    drop(p);
                }
                .instrument(span),
            );
        }
    }

    // Drain: running tasks get the grace period, then are stopped and handed back.
    let all = settings.slots as u32;
    if tokio::time::timeout(settings.shutdown_grace, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(grace_s = settings.shutdown_grace.as_secs_f64(), "grace period over; stopping running tasks");
        shutdown.trigger_hard();
        let _ = slots.acquire_many(all).await;
    }
    beats.abort();
    let id = current_id.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Err(e) = client.delete(&format!("/workers/{id}")).await {
        tracing::warn!(error = %e, "could not deregister");
    }
    Ok(())
}

/// Registers, retrying while the server is unreachable; `None` when shut down first.
async fn register(
    client: &Client,
    settings: &Settings,
    registry: &Registry,
    shutdown: &Shutdown,
) -> Result<Option<Registration>, RunError> {
    let body = json!({ "name": settings.name, "types": registry.types(), "max_slots": settings.slots });
    let mut delay = STARTUP_RETRY_FIRST;
    loop {
        match client.post_json("/workers", &body).await {
            Ok(answer) => {
                let worker_id = answer["worker_id"].as_str().ok_or(RunError::Protocol("worker_id"))?.to_string();
                let secs = answer["heartbeat_interval_s"].as_f64().ok_or(RunError::Protocol("heartbeat_interval_s"))?;
                let heartbeat = Duration::from_secs_f64(secs.clamp(0.05, 3600.0));
                return Ok(Some(Registration { worker_id, heartbeat }));
            }
            Err(e @ ClientError::Unreachable { .. }) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "server not reachable yet");
            }
            Err(e) if e.status().is_some_and(|s| s >= 500) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "server not ready yet");
            }
            Err(e) => return Err(RunError::Refused(e)),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.stopping() => return Ok(None),
        }
        delay = (delay * 2).min(STARTUP_RETRY_CAP);
    }
}

/// Renews the running tasks' leases and stops those the server says to; registers again
/// when the server forgot this worker.
#[allow(clippy::too_many_arguments)]
async fn heartbeats(
    client: Client,
    settings: Settings,
    registry: Arc<Registry>,
    running: RunningMap,
    current_id: Arc<Mutex<String>>,
    interval: Duration,
    quiet: Arc<std::sync::atomic::AtomicBool>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.hard() => return,
        }
        let ids: Vec<TaskId> = running.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        let id = current_id.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match client.post_json(&format!("/workers/{id}/heartbeat"), &json!({ "running": ids })).await {
            Ok(answer) => {
                quiet.store(answer["signal"] == "quiet", Ordering::Relaxed);
                let cancel = answer["cancel"].as_array().cloned().unwrap_or_default();
                let mut map = running.lock().unwrap_or_else(|p| p.into_inner());
                for task in cancel.iter().filter_map(|v| v.as_str()?.parse::<TaskId>().ok()) {
                    if let Some(r) = map.get_mut(&task) {
                        tracing::info!(task_id = %task, "the server asks to stop the task");
                        r.cancelled_by_server = true;
                        r.token.cancel();
                    }
                }
            }
            Err(e) if e.code() == Some("worker_not_found") => {
                tracing::warn!("the server forgot this worker; registering again");
                if let Ok(Some(reg)) = register(&client, &settings, &registry, &shutdown).await {
                    *current_id.lock().unwrap_or_else(|p| p.into_inner()) = reg.worker_id;
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Runs one claimed task and reports its end.
#[allow(clippy::too_many_arguments)]
async fn run_task(
    client: &Client,
    registry: &Registry,
    settings: &Settings,
    id: TaskId,
    task: Value,
    cancel: CancellationToken,
    running: &RunningMap,
    shutdown: &Shutdown,
) {
    let token = task["lease_token"].as_str().unwrap_or_default().to_string();
    let task_type = task["type"].as_str().unwrap_or_default();
    let payload = task["payload"].clone();
    let limit = Duration::from_secs(task["timeout_seconds"].as_u64().unwrap_or(300).max(1));
    let Some(handler) = registry.get(task_type) else {
        let msg = format!("this worker has no handler for type {task_type:?}");
        report(client, id, "fail", json!({ "lease_token": token, "error": { "message": msg }, "retryable": false }))
            .await;
        return;
    };
    if let Err(refusal) = handler.admit(&payload) {
        let body = json!({ "lease_token": token, "error": { "message": refusal.message, "kind": refusal.code }, "retryable": false });
        report(client, id, "fail", body).await;
        return;
    }
    let output = Arc::new(HttpOutput { client: client.clone(), id, token: token.clone(), seq: AtomicU64::new(0) });
    let ctx = TaskContext {
        id,
        attempt: task["attempts"].as_i64().unwrap_or(1) as i32,
        payload,
        cancel: cancel.clone(),
        output,
    };
    let end: Result<Value, String> =
        match run_bounded(handler.as_ref(), ctx, limit, settings.stop_grace, shutdown.hard()).await {
            Bounded::Returned(value) => Ok(value),
            Bounded::Failed(message) => Err(message),
            Bounded::TimedOut(limit) => Err(format!("timed out after {} s", limit.as_secs())),
            Bounded::Interrupted => {
                report(client, id, "release", json!({ "lease_token": token })).await;
                return;
            }
            Bounded::Stopped => {
                let by_server =
                    running.lock().unwrap_or_else(|p| p.into_inner()).get(&id).is_some_and(|r| r.cancelled_by_server);
                if by_server {
                    // Cancelled, or the lease is someone else's: nothing of ours to report.
                    tracing::info!("stopped at the server's request");
                    return;
                }
                Err("stopped".to_string())
            }
        };
    match end {
        Ok(result) => report(client, id, "complete", json!({ "lease_token": token, "result": result })).await,
        Err(message) => {
            report(client, id, "fail", json!({ "lease_token": token, "error": { "message": message } })).await
        }
    }
}

async fn report(client: &Client, id: TaskId, what: &str, body: Value) {
    match client.post_json(&format!("/tasks/{id}/{what}"), &body).await {
        Ok(_) => tracing::info!(task_id = %id, "reported: {what}"),
        Err(e) => tracing::warn!(task_id = %id, error = %e, "could not report {what}"),
    }
}

async fn release(client: &Client, task: &Value) {
    if let Some(id) = task["task_id"].as_str().and_then(|s| s.parse::<TaskId>().ok()) {
        report(client, id, "release", json!({ "lease_token": task["lease_token"] })).await;
    }
}

/// A remote attempt's output: lines and artifacts go to the server's trace folder.
struct HttpOutput {
    client: Client,
    id: TaskId,
    token: String,
    seq: AtomicU64,
}

#[async_trait]
impl AttemptOutput for HttpOutput {
    async fn lines(&self, stream: Stream, lines: Vec<String>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let tagged: Vec<String> = lines.into_iter().map(|l| format!("{}: {l}", stream.tag())).collect();
        let body = json!({ "lease_token": self.token, "seq": seq, "lines": tagged });
        if let Err(e) = self.client.post_json(&format!("/tasks/{}/log", self.id), &body).await {
            tracing::warn!(task_id = %self.id, error = %e, "could not send log lines");
        }
    }

    async fn artifact(&self, artifact: PostedArtifact) -> Result<String, HandlerError> {
        let mut body = json!({ "lease_token": self.token, "name": artifact.name, "type": artifact.artifact_type });
        if let Some(media_type) = artifact.media_type {
            body["media_type"] = json!(media_type);
        }
        match artifact.content {
            ArtifactContent::Bytes(bytes) => {
                body["content_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            ArtifactContent::Uri(uri) => body["uri"] = json!(uri),
        }
        let stored = self
            .client
            .post_json(&format!("/tasks/{}/artifacts", self.id), &body)
            .await
            .map_err(|e| HandlerError::new(format!("could not post the artifact: {e}")))?;
        Ok(stored["uri"].as_str().unwrap_or_default().to_string())
    }
}
