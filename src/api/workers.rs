//! The HTTP worker protocol: `/workers` (register, heartbeat, deregister, list) and the
//! routes a worker uses on its tasks: claim, heartbeat, log, artifacts, spawn, complete,
//! fail, release. Every route needs the API key when one is set. The service behind them is
//! [`crate::remote::Remote`].

use base64::Engine;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Buf, Filter, Reply};

use super::access::authorized;
use super::body::read_json;
use super::{ApiError, ApiState};
use crate::attempt::RunEnd;
use crate::attempt::{ArtifactContent, PostedArtifact};
use crate::cwom::types::ArtifactType;
use crate::lease::LeaseToken;
use crate::registration::{NewWorker, WorkerRecord};
use crate::remote::clamp_wait;
use crate::storable;
use crate::task::{TaskId, WorkerId};
use crate::tunables::{CLAIM_MAX, LOG_LINES_MAX};

/// Every worker-protocol route, behind the API key.
pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let auth = authorized(state.access.clone());
    let with_state = warp::any().map(move || state.clone());
    let json_body = warp::header::optional::<String>("content-type").and(warp::body::stream());

    let register = warp::path!("workers")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body)
        .and(with_state.clone())
        .then(|ct, body, state: ApiState| async move { respond(register(ct, body, state).await) });
    let list = warp::path!("workers")
        .and(warp::get())
        .and(auth.clone())
        .and(with_state.clone())
        .then(|state: ApiState| async move { respond(list(state).await) });
    let beat = warp::path!("workers" / String / "heartbeat")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body)
        .and(with_state.clone())
        .then(|id, ct, body, state| async move { respond(worker_heartbeat(id, ct, body, state).await) });
    let deregister = warp::path!("workers" / String)
        .and(warp::delete())
        .and(auth.clone())
        .and(with_state.clone())
        .then(|id, state| async move { respond(deregister(id, state).await) });
    let claim = warp::path!("tasks" / "claim")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body)
        .and(with_state.clone())
        .then(|ct, body, state| async move { respond(claim(ct, body, state).await) });
    // The operation is checked before the body is read: a route this is not (cancel,
    // retry, the bulk routes) must find the body still there.
    let task_op = warp::path!("tasks" / String / String)
        .and(warp::post())
        .and_then(|id: String, op: String| async move {
            match op.as_str() {
                "heartbeat" | "log" | "artifacts" | "spawn" | "complete" | "fail" | "release" => Ok((id, op)),
                // Not ours (cancel, retry, bulk): let the other filters answer.
                _ => Err(warp::reject::not_found()),
            }
        })
        .untuple_one()
        .and(auth)
        .and(json_body)
        .and(with_state)
        .then(|id, op, ct, body, state| async move { respond(task_op(id, op, ct, body, state).await) });
    register.or(list).unify().or(beat).unify().or(deregister).unify().or(claim).unify().or(task_op).unify().boxed()
}

/// The worker protocol in the OpenAPI document.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    let worker = "Worker id";
    let gone = "No such worker (`worker_not_found`): register again";
    doc.post("/workers", "Register a worker")
        .body::<NewWorker>(json!({ "name": "py-worker", "types": ["build"], "max_slots": 2 }))
        .answers::<Registration>(201, "Registered")
        .changes()
        .body_errors()
        .error(422, "An invalid registration (`invalid_field`), naming the field")
        .unavailable();
    doc.get("/workers", "Registered workers, with their running tasks and state (alive, dead)")
        .answers::<Vec<crate::remote::WorkerView>>(200, "Workers")
        .keyed()
        .unavailable();
    doc.post(
        "/workers/{id}/heartbeat",
        "A worker's heartbeat; renews the leases of the tasks it names and says which to stop",
    )
    .path_param("id", worker)
    .body::<WorkerHeartbeat>(json!({ "running": [] }))
    .answers::<crate::remote::WorkerBeat>(200, "Signal and cancels")
    .changes()
    .body_errors()
    .error(404, gone)
    .error(422, "Invalid field (`invalid_field`)")
    .unavailable();
    doc.delete("/workers/{id}", "Deregister a worker; its running tasks go back to the queue at once")
        .path_param("id", worker)
        .answers::<Deregistered>(200, "Deregistered")
        .changes()
        .error(404, gone)
        .unavailable();
    doc.post("/tasks/claim", "Long-poll for tasks the worker serves (at most max, never more than its free slots)")
        .body::<ClaimRequest>(json!({ "worker_id": "w-unknown", "max": 10, "wait_ms": 0 }))
        .answers::<ClaimAnswer>(200, "Claimed tasks, each with lease_token; empty when the wait ran out")
        .changes()
        .body_errors()
        .error(404, gone)
        .error(422, "max outside 1..100 or wait_ms outside 0..30000 (`invalid_field`)")
        .unavailable();
    let token = "1.w-00000000";
    // Every write on a held task: fenced by its lease token.
    fn fenced(op: super::openapi::Op<'_>) -> super::openapi::Op<'_> {
        op.path_param("id", "Task id (UUID)")
            .error(400, "Not a UUID (`invalid_id`), or malformed JSON")
            .changes()
            .error(404, "No such task (`task_not_found`)")
            .error(409, "`lease_lost`: the token no longer holds the task")
            .error(413, "Body larger than JCT_MAX_BODY_BYTES (`payload_too_large`)")
            .error(415, "Not application/json (`unsupported_media_type`)")
            .error(422, "Invalid field (a bad lease_token, say; `invalid_field`)")
            .unavailable()
    }
    fenced(doc.post("/tasks/{id}/heartbeat", "Extend the attempt's lease; answers whether it was cancelled"))
        .body::<TaskHeartbeat>(json!({ "lease_token": token, "progress": { "pct": 50 } }))
        .answers::<crate::remote::TaskBeat>(200, "Lease");
    fenced(doc.post("/tasks/{id}/log", "Append log lines to log.txt, once per seq"))
        .body::<LogRequest>(json!({ "lease_token": token, "seq": 1, "lines": ["hello"] }))
        .answers::<LogAppended>(200, "Appended (false for a repeated seq)");
    fenced(doc.post(
        "/tasks/{id}/artifacts",
        "Store an artifact of the attempt under artifacts/ in the trace folder (and as a CWOM Artifact of its Run)",
    ))
    .body::<ArtifactRequest>(
        json!({ "lease_token": token, "name": "changes.patch", "type": "code_patch", "content_base64": "eA==" }),
    )
    .answers::<crate::attempt::StoredArtifact>(201, "The stored artifact")
    .error(409, "`lease_lost`, or an artifact of that name exists (`artifact_exists`)");
    let steps_refused = "`invalid_field` (a bad lease_token, a missing field), or `invalid_workflow` naming the step(s): a repeated key or one the workflow has (`key`, `index`), an unknown dependency or one on a step that waits for this one, a cycle (`keys`), a `cancel` step on a parent that ended failed or cancelled (`dependency`, `status`), more than 10,000 steps or 100,000 in the workflow (`count`), an invalid step (`index`, `key`, `cause`)";
    fenced(doc.post(
        "/tasks/{id}/spawn",
        "Add steps to the running step's workflow (fan-out decided at run time): each waits for its depends_on (new steps or any step of the workflow), and whatever depends on this step waits for all of them too",
    ))
    .body::<SpawnRequest>(json!({
        "lease_token": token,
        "steps": [
            { "key": "shard-0", "type": "echo", "payload": { "shard": 0 } },
            { "key": "shard-1", "type": "echo", "payload": { "shard": 1 } }
        ]
    }))
    .answers::<crate::workflow::SpawnedSteps>(201, "The workflow and each new step's task and status (queued or waiting)")
    .error(409, "`lease_lost`: the token no longer holds the task; `not_a_workflow_step`: the task is in no workflow")
    .error(422, steps_refused);
    fenced(doc.post(
        "/tasks/{id}/complete",
        "Complete the attempt with a result; with spawn, add those steps in the same transaction first (as /spawn does)",
    ))
    .body::<CompleteRequest>(json!({ "lease_token": token, "result": { "ok": true } }))
    .answers::<Completed>(200, "The task (and the spawned steps when spawn was given)")
    .error(409, "`lease_lost`: the token no longer holds the task; `not_a_workflow_step`: spawn from a task in no workflow")
    .error(422, steps_refused);
    fenced(doc.post(
        "/tasks/{id}/fail",
        "Fail the attempt: retried per max_attempts (after retry_after_s when given), never when retryable is false",
    ))
    .body::<FailRequest>(
        json!({ "lease_token": token, "error": { "message": "boom", "kind": "runtime" }, "retryable": true }),
    )
    .answers::<crate::task::Task>(200, "The task, queued again or failed");
    fenced(doc.post("/tasks/{id}/release", "Give the task back to the queue, the attempt not counted"))
        .body::<ReleaseRequest>(json!({ "lease_token": token }))
        .answers::<crate::task::Task>(200, "The task, queued");
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| e.into_response())
}

/// `body` as JSON with `status`, serialised straight from its type.
fn reply(status: StatusCode, body: &impl serde::Serialize) -> Result<Response, ApiError> {
    Ok(warp::reply::with_status(warp::reply::json(body), status).into_response())
}

/// Reads and parses a JSON body into `T` (unknown fields refused by `T`): 415, 413, 400,
/// then 422 naming the field.
async fn parse<T, S, B>(content_type: Option<String>, body: S, state: &ApiState) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    read_json(content_type.as_deref(), body, state.max_body_bytes).await
}

/// An id from the path, or a lease token's holder: no stored worker or task can have one
/// that no store can hold, so such an id names nothing.
fn storable_worker(raw: String) -> Result<WorkerId, ApiError> {
    match storable::check_text("worker_id", &raw) {
        Ok(()) => Ok(WorkerId(raw)),
        Err(_) => Err(ApiError::WorkerNotFound(WorkerId(raw.replace('\0', "\\0")))),
    }
}

fn parse_task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse().map_err(|_| ApiError::InvalidId(raw.to_string()))
}

fn parse_token(raw: &str) -> Result<LeaseToken, ApiError> {
    storable::check_text("lease_token", raw)?;
    raw.parse().map_err(ApiError::InvalidField)
}

async fn register<S, B>(ct: Option<String>, body: S, state: ApiState) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let worker: NewWorker = parse(ct, body, &state).await?;
    let record = state.remote.register(worker).await?;
    let settings = state.remote.settings();
    let answer = Registration {
        worker_id: record.worker_id.clone(),
        heartbeat_interval_s: settings.heartbeat_interval.as_secs_f64(),
        lease_s: settings.lease.as_secs_f64(),
        worker: record,
    };
    reply(StatusCode::CREATED, &answer)
}

/// `POST /workers`' answer.
#[derive(Serialize, schemars::JsonSchema)]
struct Registration {
    worker_id: WorkerId,
    /// Send a worker heartbeat at least this often.
    heartbeat_interval_s: f64,
    /// How long a claimed task's lease lasts without a task heartbeat.
    lease_s: f64,
    worker: WorkerRecord,
}

/// `DELETE /workers/{id}`'s answer.
#[derive(Serialize, schemars::JsonSchema)]
struct Deregistered {
    worker_id: String,
    /// The tasks it held, back in the queue.
    released: u64,
}

/// `POST /tasks/claim`'s answer.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "Claim")]
struct ClaimAnswer {
    /// Each with its `lease_token`; empty when the wait ran out.
    tasks: Vec<crate::remote::Claimed>,
}

/// `POST /tasks/{id}/log`'s answer.
#[derive(Serialize, schemars::JsonSchema)]
struct LogAppended {
    task_id: TaskId,
    seq: u64,
    /// False for a repeated `seq`.
    appended: bool,
}

async fn list(state: ApiState) -> Result<Response, ApiError> {
    reply(StatusCode::OK, &state.remote.list_workers().await?)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct WorkerHeartbeat {
    #[serde(default)]
    running: Vec<TaskId>,
}

async fn worker_heartbeat<S, B>(id: String, ct: Option<String>, body: S, state: ApiState) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let beat: WorkerHeartbeat = parse(ct, body, &state).await?;
    let answer = state.remote.worker_heartbeat(&storable_worker(id)?, &beat.running).await?;
    reply(StatusCode::OK, &answer)
}

async fn deregister(id: String, state: ApiState) -> Result<Response, ApiError> {
    let released = state.remote.deregister(&storable_worker(id.clone())?).await?;
    reply(StatusCode::OK, &Deregistered { worker_id: id, released })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    worker_id: String,
    max: Option<usize>,
    wait_ms: Option<u64>,
}

async fn claim<S, B>(ct: Option<String>, body: S, state: ApiState) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let req: ClaimRequest = parse(ct, body, &state).await?;
    let max = req.max.unwrap_or(1);
    if !(1..=CLAIM_MAX).contains(&max) {
        return Err(ApiError::InvalidField(format!("max: must be from 1 to {CLAIM_MAX}")));
    }
    if req.wait_ms.is_some_and(|w| w > crate::tunables::CLAIM_WAIT_MAX.as_millis() as u64) {
        return Err(ApiError::InvalidField(format!(
            "wait_ms: must be from 0 to {}",
            crate::tunables::CLAIM_WAIT_MAX.as_millis()
        )));
    }
    let tasks = state.remote.claim(&storable_worker(req.worker_id)?, max, clamp_wait(req.wait_ms)).await?;
    reply(StatusCode::OK, &ClaimAnswer { tasks })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TaskHeartbeat {
    lease_token: String,
    #[serde(default)]
    progress: Option<Value>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct LogRequest {
    lease_token: String,
    seq: u64,
    lines: Vec<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ArtifactRequest {
    lease_token: String,
    name: String,
    #[serde(rename = "type")]
    artifact_type: ArtifactType,
    media_type: Option<String>,
    content_base64: Option<String>,
    uri: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    lease_token: String,
    #[serde(default)]
    result: Option<Value>,
    /// Steps to add to the task's workflow in the transaction of its end (as `/spawn`
    /// takes them); an empty list spawns nothing.
    #[serde(default)]
    #[schemars(with = "Option<Vec<super::workflows::StepBody>>")]
    spawn: Option<Vec<Value>>,
}

/// `POST /tasks/{id}/complete`'s answer: the task, and what it spawned when it did.
#[derive(Serialize, schemars::JsonSchema)]
struct Completed {
    #[serde(flatten)]
    task: crate::task::Task,
    #[serde(skip_serializing_if = "Option::is_none")]
    spawned: Option<crate::workflow::SpawnedSteps>,
}

/// The body of `POST /tasks/{id}/spawn`; each step is read as a workflow's is.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpawnRequest {
    lease_token: String,
    #[schemars(with = "Vec<super::workflows::StepBody>", length(min = 1, max = crate::workflow::limits::STEPS_MAX))]
    steps: Vec<Value>,
}

/// Reads spawned steps and has the intake check each as an enqueue (the store checks the
/// graph). They get a fresh trace id here; the remote service gives them the spawner's.
async fn spawned_steps(state: &ApiState, steps: Vec<Value>) -> Result<Vec<crate::workflow::NewStep>, ApiError> {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let steps = super::workflows::parse_steps(steps, &trace, None)?;
    state.intake.admit_steps(&steps).await?;
    Ok(steps)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FailError {
    message: String,
    kind: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    lease_token: String,
    error: FailError,
    retryable: Option<bool>,
    retry_after_s: Option<f64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    lease_token: String,
}

async fn task_op<S, B>(
    raw_id: String,
    op: String,
    ct: Option<String>,
    body: S,
    state: ApiState,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let id = parse_task_id(&raw_id)?;
    let remote = &state.remote;
    match op.as_str() {
        "heartbeat" => {
            let req: TaskHeartbeat = parse(ct, body, &state).await?;
            let beat = remote.task_heartbeat(id, &parse_token(&req.lease_token)?, req.progress.as_ref()).await?;
            reply(StatusCode::OK, &beat)
        }
        "log" => {
            let req: LogRequest = parse(ct, body, &state).await?;
            if req.lines.len() > LOG_LINES_MAX {
                return Err(ApiError::InvalidField(format!("lines: at most {LOG_LINES_MAX} per request")));
            }
            let appended = remote.append_log(id, &parse_token(&req.lease_token)?, req.seq, &req.lines).await?;
            reply(StatusCode::OK, &LogAppended { task_id: id, seq: req.seq, appended })
        }
        "artifacts" => {
            let req: ArtifactRequest = parse(ct, body, &state).await?;
            let token = parse_token(&req.lease_token)?;
            let content = match (req.content_base64, req.uri) {
                (Some(b64), None) => ArtifactContent::Bytes(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .map_err(|e| ApiError::InvalidField(format!("content_base64: not base64 ({e})")))?,
                ),
                (None, Some(uri)) if !uri.is_empty() && uri.len() <= 2000 => ArtifactContent::Uri(uri),
                (None, Some(_)) => return Err(ApiError::InvalidField("uri: must be 1 to 2000 characters".into())),
                _ => return Err(ApiError::InvalidField("give exactly one of content_base64 and uri".into())),
            };
            let posted = PostedArtifact {
                name: req.name,
                artifact_type: req.artifact_type,
                media_type: req.media_type,
                content,
            };
            let stored = remote.add_artifact(id, &token, posted).await?;
            reply(StatusCode::CREATED, &stored)
        }
        "spawn" => {
            let req: SpawnRequest = parse(ct, body, &state).await?;
            let token = parse_token(&req.lease_token)?;
            let steps = spawned_steps(&state, req.steps).await?;
            let spawned = remote.spawn(id, &token, steps.clone()).await?;
            state.intake.steps_entered(&steps);
            reply(StatusCode::CREATED, &spawned)
        }
        "complete" => {
            let req: CompleteRequest = parse(ct, body, &state).await?;
            let token = parse_token(&req.lease_token)?;
            let steps = match req.spawn {
                Some(steps) if !steps.is_empty() => spawned_steps(&state, steps).await?,
                _ => Vec::new(),
            };
            let result = req.result.unwrap_or(Value::Null);
            let (task, spawned) = remote.complete_spawning(id, &token, result, steps.clone()).await?;
            if spawned.is_some() {
                state.intake.steps_entered(&steps);
            }
            reply(StatusCode::OK, &Completed { task, spawned })
        }
        "fail" => {
            let req: FailRequest = parse(ct, body, &state).await?;
            let token = parse_token(&req.lease_token)?;
            let message = match req.error.kind {
                Some(kind) => format!("{kind}: {}", req.error.message),
                None => req.error.message,
            };
            let end = match (req.retryable, req.retry_after_s) {
                (Some(false), _) => RunEnd::Permanent(message),
                (_, Some(after)) if after.is_finite() && (0.0..=86_400.0 * 7.0).contains(&after) => {
                    RunEnd::FailedRetryAfter(message, std::time::Duration::from_secs_f64(after))
                }
                (_, Some(_)) => {
                    return Err(ApiError::InvalidField("retry_after_s: must be from 0 to 604800".into()));
                }
                _ => RunEnd::Failed(message),
            };
            let task = remote.finish(id, &token, end).await?;
            reply(StatusCode::OK, &task)
        }
        "release" => {
            let req: ReleaseRequest = parse(ct, body, &state).await?;
            remote.release(id, &parse_token(&req.lease_token)?).await?;
            let task = state.store.get(id).await?.ok_or(ApiError::TaskNotFound(id))?;
            reply(StatusCode::OK, &task)
        }
        other => unreachable!("routed only for worker operations, not {other:?}"),
    }
}
