//! The HTTP worker protocol: `/workers` (register, heartbeat, deregister, list) and the
//! routes a worker uses on its tasks: claim, heartbeat, log, artifacts, complete, fail,
//! release. Every route needs the API key when one is set. The service behind them is
//! [`crate::remote::Remote`].

use base64::Engine;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Deserialize;
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
use crate::registration::NewWorker;
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
                "heartbeat" | "log" | "artifacts" | "complete" | "fail" | "release" => Ok((id, op)),
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
    reply(
        StatusCode::CREATED,
        &json!({
            "worker_id": record.worker_id,
            "heartbeat_interval_s": settings.heartbeat_interval.as_secs_f64(),
            "lease_s": settings.lease.as_secs_f64(),
            "worker": record,
        }),
    )
}

async fn list(state: ApiState) -> Result<Response, ApiError> {
    reply(StatusCode::OK, &state.remote.list_workers().await?)
}

#[derive(Deserialize)]
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
    reply(StatusCode::OK, &json!({ "worker_id": id, "released": released }))
}

#[derive(Deserialize)]
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
    #[derive(serde::Serialize)]
    struct Answer {
        tasks: Vec<crate::remote::Claimed>,
    }
    let tasks = state.remote.claim(&storable_worker(req.worker_id)?, max, clamp_wait(req.wait_ms)).await?;
    reply(StatusCode::OK, &Answer { tasks })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskHeartbeat {
    lease_token: String,
    #[serde(default)]
    progress: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogRequest {
    lease_token: String,
    seq: u64,
    lines: Vec<String>,
}

#[derive(Deserialize)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    lease_token: String,
    #[serde(default)]
    result: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailError {
    message: String,
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    lease_token: String,
    error: FailError,
    retryable: Option<bool>,
    retry_after_s: Option<f64>,
}

#[derive(Deserialize)]
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
            reply(StatusCode::OK, &json!({ "task_id": id, "seq": req.seq, "appended": appended }))
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
        "complete" => {
            let req: CompleteRequest = parse(ct, body, &state).await?;
            let end = RunEnd::Returned(req.result.unwrap_or(Value::Null));
            let task = remote.finish(id, &parse_token(&req.lease_token)?, end).await?;
            reply(StatusCode::OK, &task)
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
