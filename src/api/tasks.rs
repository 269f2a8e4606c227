//! Routes under `/tasks` for clients: enqueue (one or a batch), get, list, cancel, retry,
//! bulk cancel and retry (by ids or by filter), the log and trace files. Each parses the
//! request, calls the service that owns it (the intake for enqueues, control for operator
//! actions, the store for reads), and shapes the answer; errors map in `error.rs`.

use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Buf, Filter, Reply};

use super::access::authorized;
use super::body::read_json_body;
use super::{ApiError, ApiState};
use crate::control::{BulkAction, Selection};
use crate::storable;
use crate::task::{limits, NewTask, TaskFilter, TaskId, TaskStatus};

/// Every `/tasks` route, behind the API key.
pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let auth = authorized(state.access.clone());
    let with_state = warp::any().map(move || state.clone());
    // What both enqueue routes read: content type, trace id, the body as a stream.
    let intake = warp::post()
        .and(auth.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::headers_cloned())
        .and(warp::body::stream());
    let enqueue = warp::path!("tasks" / "enqueue").and(intake.clone()).and(with_state.clone()).then(enqueue);
    let enqueue_batch = warp::path!("tasks" / "enqueue_batch").and(intake).and(with_state.clone()).then(enqueue_batch);
    let get = warp::path!("tasks" / String).and(warp::get()).and(auth.clone()).and(with_state.clone()).then(get);
    let list = warp::path!("tasks")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .and(with_state.clone())
        .then(list);
    let cancel = warp::path!("tasks" / String / "cancel")
        .and(warp::post())
        .and(auth.clone())
        .and(with_state.clone())
        .then(cancel);
    let retry =
        warp::path!("tasks" / String / "retry").and(warp::post()).and(auth.clone()).and(with_state.clone()).then(retry);
    let bulk = warp::path!("tasks" / "bulk" / String)
        .and(warp::post())
        .and(auth.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .and(with_state.clone())
        .then(bulk);
    let log = warp::path!("tasks" / String / "log")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .and(with_state.clone())
        .then(log);
    let trace = warp::path!("tasks" / String / "trace" / ..)
        .and(warp::path::tail())
        .and(warp::get())
        .and(auth)
        .and(with_state)
        .then(trace_file);
    enqueue
        .or(enqueue_batch)
        .unify()
        .or(bulk)
        .unify()
        .or(get)
        .unify()
        .or(list)
        .unify()
        .or(cancel)
        .unify()
        .or(retry)
        .unify()
        .or(log)
        .unify()
        .or(trace)
        .unify()
        .boxed()
}

/// The body of `POST /tasks/enqueue` (and each item of a batch). Unknown fields are refused.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TaskSpec")]
pub struct EnqueueRequest {
    /// The executor that runs it (`echo`, `command`, `agent`, or a remote worker's type).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = limits::TYPE_MAX))]
    pub task_type: String,
    /// Any JSON; `{}` when left out.
    #[serde(default)]
    pub payload: Option<Value>,
    /// `default` when left out.
    #[schemars(length(min = 1, max = limits::QUEUE_MAX))]
    pub queue: Option<String>,
    /// Higher runs first; 0 when left out.
    pub priority: Option<i32>,
    /// Not before this instant; now when left out.
    pub run_at: Option<DateTime<Utc>>,
    /// 3 when left out.
    #[schemars(range(min = 1, max = limits::MAX_ATTEMPTS_MAX))]
    pub max_attempts: Option<i32>,
    /// 900 when left out.
    #[schemars(range(min = 1, max = limits::TIMEOUT_SECONDS_MAX))]
    pub timeout_seconds: Option<i32>,
    /// A second enqueue with the same key is refused (409) and names the first task.
    #[schemars(length(max = limits::IDEMPOTENCY_KEY_MAX))]
    pub idempotency_key: Option<String>,
    /// Record this task's runs under this CWOM Issue (which must exist).
    pub cwom_issue_id: Option<String>,
    /// Run at most the queue's `key_concurrency` tasks of this key at a time.
    #[schemars(length(min = 1, max = limits::CONCURRENCY_KEY_MAX))]
    pub concurrency_key: Option<String>,
}

/// `POST /tasks/enqueue_batch`'s answer.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct BatchQueued {
    /// `queued`.
    status: &'static str,
    count: usize,
    /// The new tasks, in the order of the batch.
    task_ids: Vec<TaskId>,
}

/// The `/tasks` routes of this module in the OpenAPI document.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    let enqueue_422 = "`invalid_field`: a field breaks a rule or holds what no store can (a NUL anywhere, a time outside \
         0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z, an integer past int4, a bad X-Trace-Id); the \
         message names the field or a JSON pointer (`/payload/a/0`). `unknown_type`. `command_not_allowed`: a `command` program (or an \
         agent profile's) not on JCT_COMMAND_ALLOW, or `command` disabled. `repo_not_allowed`: an \
         `agent` repository outside JCT_ALLOWED_REPO_PREFIXES, or `agent` disabled. \
         Batch: `index` names the refused task; `duplicate_key_in_batch` names both uses in `indexes`. \
         `rejected_by_store`: the database refused this row (a constraint or trigger), with its message";
    let trace_header = serde_json::json!({ "type": "string", "maxLength": limits::TRACE_ID_MAX });
    doc.post("/tasks/enqueue", "Enqueue one task")
        .header("X-Trace-Id", trace_header.clone())
        .body::<EnqueueRequest>(json!({ "type": "echo", "payload": { "hello": "world" } }))
        .answers::<crate::task::Task>(201, "The task, queued")
        .changes()
        .body_errors()
        .error(400, "Malformed JSON (`malformed_json`), or a header that is not text (`invalid_header`)")
        .error(409, "Idempotency key already used (`duplicate_idempotency_key`); the body names the existing task_id")
        .error(422, enqueue_422)
        .unavailable();
    doc.post("/tasks/enqueue_batch", "Enqueue many tasks in one all-or-nothing insert")
        .header("X-Trace-Id", trace_header)
        .body::<Vec<EnqueueRequest>>(json!([{ "type": "echo", "payload": 1 }, { "type": "echo", "payload": 2 }]))
        .answers::<BatchQueued>(201, "All tasks queued")
        .changes()
        .body_errors()
        .error(409, "An idempotency key already used; the body names the existing task_id")
        .error(422, enqueue_422)
        .unavailable();
    for (action, summary, example) in [
        (
            "cancel",
            "Cancel the queued or running tasks named by id, or every task matching a filter (in bounded chunks)",
            json!({ "filter": { "status": "queued", "queue": "nightly" } }),
        ),
        (
            "retry",
            "Queue again the failed or cancelled tasks named by id, or every task matching a filter (in bounded chunks)",
            json!({ "filter": { "status": "failed" } }),
        ),
    ] {
        doc.post(&format!("/tasks/bulk/{action}"), summary)
            .body::<BulkRequest>(example)
            .answers::<crate::control::BulkResult>(200, "How many tasks the selection held and how many changed")
            .changes()
            .body_errors()
            .error(400, "Malformed JSON, or an id that is not a UUID (`invalid_id`)")
            .error(422, "Neither or both of ids and filter (`invalid_bulk`), more than 10,000 ids, or a bad filter (`invalid_filter`)")
            .unavailable();
    }
    doc.get("/tasks", "List tasks, newest first")
        .query(&["status", "type", "queue", "cwom_issue_id", "schedule_name"])
        .query_with("before", json!({ "type": "string", "format": "uuid", "description": "keyset paging: only tasks older than this one" }))
        .query_with("limit", json!({ "type": "integer", "minimum": 1, "maximum": TaskFilter::MAX_LIMIT }))
        .query_with("offset", json!({ "type": "integer", "minimum": 0 }))
        .answers::<Vec<crate::task::Task>>(200, "Tasks")
        .error(400, "Undecodable query string")
        .keyed()
        .error(422, "Unknown filter or bad value (`invalid_filter`)")
        .unavailable();
    let id = "Task id (UUID)";
    doc.get("/tasks/{id}", "One task")
        .path_param("id", id)
        .answers::<crate::task::Task>(200, "The task")
        .error(400, "Not a UUID (`invalid_id`)")
        .keyed()
        .error(404, "No such task (`task_not_found`)")
        .unavailable();
    doc.post("/tasks/{id}/cancel", "Cancel a queued or running task (a running program gets the cancel signal)")
        .path_param("id", id)
        .answers::<crate::task::Task>(200, "The task, now cancelled")
        .error(400, "Not a UUID (`invalid_id`)")
        .changes()
        .error(404, "No such task (`task_not_found`)")
        .error(409, "Already completed, failed or cancelled (`not_cancellable`)")
        .unavailable();
    doc.post("/tasks/{id}/retry", "Queue a failed or cancelled task again with a fresh attempt budget")
        .path_param("id", id)
        .answers::<crate::task::Task>(200, "The task, queued")
        .error(400, "Not a UUID (`invalid_id`)")
        .changes()
        .error(404, "No such task (`task_not_found`)")
        .error(409, "Only failed or cancelled tasks (`not_retryable`)")
        .unavailable();
    doc.get("/tasks/{id}/log", "The task's log.txt; ?follow=1 streams it as server-sent events until the attempt ends")
        .path_param("id", id)
        .query_with("follow", json!({ "type": "string", "enum": ["0", "1", "false", "true"] }))
        .answers_as(200, "log.txt, or an event stream (events line and end)", Some("text/plain"))
        .error(400, "Not a UUID (`invalid_id`)")
        .keyed()
        .error(404, "No such task, or its trace folder is off (`task_not_found`, `trace_file_not_found`)")
        .error(422, "Bad query parameter (`invalid_filter`)");
    doc.get("/tasks/{id}/trace/{file}", "A trace file: input.json, log.txt, output.json, output.attempt-N.json (attempt N's end, kept when attempt N+1 began) or artifacts/<name>")
        .path_param("id", id)
        .path_param("file", "The file's name in the trace folder")
        .answers_as(200, "The file", Some("application/octet-stream"))
        .error(400, "Not a UUID (`invalid_id`)")
        .keyed()
        .error(404, "No such task or trace file (`task_not_found`, `trace_file_not_found`)");
}

impl EnqueueRequest {
    /// The validated task this request asks for.
    pub fn into_new_task(self, trace_id: String) -> Result<NewTask, ApiError> {
        let mut task = NewTask::new(self.task_type, self.payload.unwrap_or_else(|| json!({})));
        if let Some(q) = self.queue {
            task.queue = q;
        }
        if let Some(p) = self.priority {
            task.priority = p;
        }
        task.run_at = self.run_at;
        if let Some(m) = self.max_attempts {
            task.max_attempts = m;
        }
        if let Some(t) = self.timeout_seconds {
            task.timeout_seconds = t;
        }
        task.idempotency_key = self.idempotency_key;
        task.cwom_issue_id = self.cwom_issue_id;
        task.concurrency_key = self.concurrency_key;
        task.trace_id = Some(trace_id);
        Ok(task.checked()?)
    }
}

/// The task's trace id: the `X-Trace-Id` header, checked as the stores will hold it (read
/// as raw bytes, so a value that is not text is a 422 naming the header, not a rejection),
/// or a new one.
pub(super) fn new_trace_id(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("x-trace-id") {
        Some(raw) => Ok(storable::check_header("X-Trace-Id", raw.as_bytes(), crate::task::limits::TRACE_ID_MAX)?),
        None => Ok(uuid::Uuid::new_v4().simple().to_string()),
    }
}

/// Parses and validates an enqueue body into a task.
pub fn parse_enqueue(bytes: &[u8], trace_id: String) -> Result<NewTask, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    task_from_value(value, trace_id)
}

/// Validates one task spec (an enqueue body, or one element of a batch).
pub(super) fn task_from_value(value: Value, trace_id: String) -> Result<NewTask, ApiError> {
    if !value.is_object() {
        return Err(ApiError::InvalidField("the body must be a JSON object".into()));
    }
    // The one body parser of the model: refuses what no store can hold, then names the
    // field serde refused.
    let req: EnqueueRequest = crate::cwom::requests::parse_body(value)?;
    req.into_new_task(trace_id)
}

async fn enqueue<S, B>(content_type: Option<String>, headers: HeaderMap, body: S, state: ApiState) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let result = async {
        let bytes = read_json_body(content_type.as_deref(), body, state.max_body_bytes).await?;
        let task = parse_enqueue(&bytes, new_trace_id(&headers)?)?;
        Ok::<_, ApiError>(state.intake.enqueue(task).await?)
    }
    .await;
    match result {
        Ok(task) => {
            let location = format!("/tasks/{}", task.id);
            let mut res = warp::reply::with_status(warp::reply::json(&task), StatusCode::CREATED).into_response();
            if let Ok(v) = warp::http::HeaderValue::from_str(&location) {
                res.headers_mut().insert(warp::http::header::LOCATION, v);
            }
            res
        }
        Err(e) => e.into_response(),
    }
}

/// Parses a batch body: a JSON array of task specs, each checked like a single enqueue.
pub fn parse_batch(bytes: &[u8], trace_id: String) -> Result<Vec<NewTask>, ApiError> {
    // Fast path: a well-formed batch parses straight into requests (one pass over a body
    // that may hold 100,000 tasks); only a bad one is re-read item by item to name it.
    if let Ok(requests) = serde_json::from_slice::<Vec<EnqueueRequest>>(bytes) {
        if !requests.is_empty() {
            let parsed: Result<Vec<NewTask>, ApiError> =
                requests.into_iter().map(|r| r.into_new_task(trace_id.clone())).collect();
            if let Ok(tasks) = parsed {
                return Ok(tasks);
            }
        }
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(ApiError::InvalidField("the body must be a JSON array of tasks".into()));
    };
    if items.is_empty() {
        return Err(ApiError::InvalidField("the batch is empty".into()));
    }
    let tasks = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            task_from_value(item, trace_id.clone()).map_err(|e| ApiError::InvalidBatchItem {
                index,
                code: e.code(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tasks)
}

async fn enqueue_batch<S, B>(content_type: Option<String>, headers: HeaderMap, body: S, state: ApiState) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let result = async {
        let bytes = read_json_body(content_type.as_deref(), body, state.max_body_bytes).await?;
        let tasks = parse_batch(&bytes, new_trace_id(&headers)?)?;
        Ok::<_, ApiError>(state.intake.enqueue_batch(tasks).await?)
    }
    .await;
    match result {
        Ok(ids) => {
            let body = BatchQueued { status: "queued", count: ids.len(), task_ids: ids };
            warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn parse_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse().map_err(|_| ApiError::InvalidId(raw.to_string()))
}

async fn get(raw_id: String, state: ApiState) -> Response {
    let result = async {
        let id = parse_id(&raw_id)?;
        match state.store.get(id).await? {
            Some(task) => Ok(task),
            None => Err(ApiError::TaskNotFound(id)),
        }
    }
    .await;
    match result {
        Ok(task) => warp::reply::json(&task).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parses `status`, `type`, `queue`, `cwom_issue_id`, `before` (a task id: keyset paging),
/// `limit`, `offset`; anything else is refused.
pub fn parse_filter(query: &[(String, String)]) -> Result<TaskFilter, ApiError> {
    let mut f = TaskFilter { limit: TaskFilter::DEFAULT_LIMIT, ..TaskFilter::default() };
    for (k, v) in query {
        match k.as_str() {
            "status" => {
                f.status = Some(v.parse::<TaskStatus>().map_err(|_| {
                    ApiError::InvalidFilter(format!(
                        "status must be one of waiting, queued, running, completed, failed, cancelled (got {v:?})"
                    ))
                })?)
            }
            "type" | "queue" | "cwom_issue_id" | "schedule_name" => {
                storable::check_text(k, v).map_err(|e| ApiError::InvalidFilter(e.to_string()))?;
                let slot = match k.as_str() {
                    "type" => &mut f.task_type,
                    "queue" => &mut f.queue,
                    "schedule_name" => &mut f.schedule_name,
                    _ => &mut f.cwom_issue_id,
                };
                *slot = Some(v.clone());
            }
            "before" => {
                f.before =
                    Some(v.parse().map_err(|_| {
                        ApiError::InvalidFilter(format!("before must be a task id (a UUID) (got {v:?})"))
                    })?)
            }
            "limit" => {
                f.limit =
                    v.parse::<u32>().ok().filter(|n| (1..=TaskFilter::MAX_LIMIT).contains(n)).ok_or_else(|| {
                        ApiError::InvalidFilter(format!(
                            "limit must be from 1 to {} (got {v:?})",
                            TaskFilter::MAX_LIMIT
                        ))
                    })?
            }
            "offset" => {
                f.offset = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= i64::MAX as u64)
                    .ok_or_else(|| ApiError::InvalidFilter(format!("offset must be a whole number (got {v:?})")))?
            }
            other => {
                return Err(ApiError::InvalidFilter(format!(
                    "unknown filter {other:?} (known: status, type, queue, cwom_issue_id, schedule_name, before, limit, offset)"
                )))
            }
        }
    }
    Ok(f)
}

async fn list(query: Vec<(String, String)>, state: ApiState) -> Response {
    let result = async {
        let filter = parse_filter(&query)?;
        Ok::<_, ApiError>(state.store.list(&filter).await?)
    }
    .await;
    match result {
        Ok(tasks) => warp::reply::json(&tasks).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn cancel(raw_id: String, state: ApiState) -> Response {
    let result = async {
        let id = parse_id(&raw_id)?;
        Ok::<_, ApiError>(state.control.cancel(id).await?)
    }
    .await;
    match result {
        Ok(task) => warp::reply::json(&task).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn retry(raw_id: String, state: ApiState) -> Response {
    let result = async {
        let id = parse_id(&raw_id)?;
        Ok::<_, ApiError>(state.control.retry(id).await?)
    }
    .await;
    match result {
        Ok(task) => warp::reply::json(&task).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of `POST /tasks/bulk/{cancel|retry}`: exactly one of `ids` and `filter`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    /// The tasks by id (at most 10,000).
    #[schemars(with = "Option<Vec<TaskId>>", length(max = crate::tunables::BULK_IDS_MAX))]
    ids: Option<Vec<String>>,
    /// Every task matching when the request arrives; `{}` is every task.
    #[schemars(with = "Option<BulkFilter>")]
    filter: Option<serde_json::Map<String, Value>>,
}

/// A bulk filter: the list's filters but paging. [`parse_bulk`] reads it by hand, naming
/// the bad key; this type is its schema.
#[derive(schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct BulkFilter {
    status: Option<TaskStatus>,
    #[schemars(rename = "type")]
    task_type: Option<String>,
    queue: Option<String>,
    cwom_issue_id: Option<String>,
}

fn parse_bulk(value: Value) -> Result<Selection, ApiError> {
    if !value.is_object() {
        return Err(ApiError::InvalidBulk("the body must be a JSON object with \"ids\" or \"filter\"".into()));
    }
    let req: BulkRequest = crate::cwom::requests::parse_body(value)?;
    match (req.ids, req.filter) {
        (Some(ids), None) => {
            if ids.len() > crate::tunables::BULK_IDS_MAX {
                return Err(ApiError::InvalidBulk(format!(
                    "at most {} ids per request (got {}); select by filter instead",
                    crate::tunables::BULK_IDS_MAX,
                    ids.len()
                )));
            }
            let mut parsed: Vec<TaskId> = ids.iter().map(|raw| parse_id(raw)).collect::<Result<_, _>>()?;
            parsed.sort_by_key(|id| id.0);
            parsed.dedup();
            Ok(Selection::Ids(parsed))
        }
        (None, Some(filter)) => {
            let mut pairs = Vec::new();
            for (k, v) in filter {
                if !matches!(k.as_str(), "status" | "type" | "queue" | "cwom_issue_id") {
                    return Err(ApiError::InvalidFilter(format!(
                        "unknown bulk filter {k:?} (known: status, type, queue, cwom_issue_id)"
                    )));
                }
                let Value::String(v) = v else {
                    return Err(ApiError::InvalidFilter(format!("filter {k:?} must be a string")));
                };
                pairs.push((k, v));
            }
            Ok(Selection::Filter(parse_filter(&pairs)?))
        }
        _ => Err(ApiError::InvalidBulk("give exactly one of \"ids\" (a list of task ids) or \"filter\"".into())),
    }
}

/// `POST /tasks/bulk/cancel` and `/tasks/bulk/retry`: `{"action", "matched", "changed"}`.
/// [`crate::control::Control::bulk`] walks the selection in short chunks.
async fn bulk<S, B>(action: String, content_type: Option<String>, body: S, state: ApiState) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let result = async {
        let action = match action.as_str() {
            "cancel" => BulkAction::Cancel,
            "retry" => BulkAction::Retry,
            _ => return Err(ApiError::RouteNotFound),
        };
        let value = super::body::read_json_value(content_type.as_deref(), body, state.max_body_bytes).await?;
        Ok::<_, ApiError>(state.control.bulk(action, parse_bulk(value)?).await?)
    }
    .await;
    match result {
        Ok(body) => warp::reply::json(&body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The trace folder of an existing task, or why not.
async fn trace_dir(raw_id: &str, state: &ApiState) -> Result<(crate::task::Task, std::path::PathBuf), ApiError> {
    let id = parse_id(raw_id)?;
    let task = state.store.get(id).await?.ok_or(ApiError::TaskNotFound(id))?;
    let dir = state
        .trace
        .dir_for(id)
        .ok_or_else(|| ApiError::TraceFileNotFound("trace folders are off on this daemon (JCT_TRACE=off)".into()))?;
    Ok((task, dir))
}

/// `GET /tasks/{id}/trace/{file}`: `input.json`, `log.txt`, `output.json`,
/// `output.attempt-N.json` or `artifacts/<name>`; nothing else, and no path outside the folder.
async fn trace_file(raw_id: String, tail: warp::path::Tail, state: ApiState) -> Response {
    let result = async {
        let (_, dir) = trace_dir(&raw_id, &state).await?;
        let file = tail.as_str();
        let path = match file.split_once('/') {
            None if crate::trace::is_trace_file(file) => dir.join(file),
            Some((crate::trace::ARTIFACTS_DIR, name)) if crate::trace::is_safe_artifact_name(name) => {
                dir.join(crate::trace::ARTIFACTS_DIR).join(name)
            }
            _ => return Err(ApiError::TraceFileNotFound(file.to_string())),
        };
        let bytes = tokio::fs::read(&path).await.map_err(|_| ApiError::TraceFileNotFound(file.to_string()))?;
        let media = if file.ends_with(".json") {
            "application/json"
        } else if file.ends_with(".txt") {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        Ok::<_, ApiError>((bytes, media))
    }
    .await;
    match result {
        Ok((bytes, media)) => {
            let mut res = Response::new(bytes.into());
            res.headers_mut().insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static(media));
            res
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /tasks/{id}/log`: the task's `log.txt`; with `?follow=1`, server-sent events, one
/// `line` event per line as it is written, until the attempt ends (`end` event).
async fn log(raw_id: String, query: Vec<(String, String)>, state: ApiState) -> Response {
    let follow = match query.iter().find(|(k, _)| k == "follow").map(|(_, v)| v.as_str()) {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            return ApiError::InvalidFilter(format!("follow must be 1 or 0 (got {other:?})")).into_response()
        }
    };
    if let Some((k, _)) = query.iter().find(|(k, _)| k != "follow") {
        return ApiError::InvalidFilter(format!("unknown parameter {k:?} (known: follow)")).into_response();
    }
    let (task, dir) = match trace_dir(&raw_id, &state).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let path = dir.join(crate::trace::LOG_FILE);
    if !follow {
        let text = tokio::fs::read(&path).await.unwrap_or_default();
        let mut res = Response::new(text.into());
        res.headers_mut().insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return res;
    }
    let events = follow_log(path, dir.join(crate::trace::OUTPUT_FILE), task.id, task.attempts, state);
    warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
}

/// Lines of `log` as events, from its start, then as they are appended, until this attempt's
/// `output.json` appears or the task stops running this attempt. A task of its own reads
/// the file; the response streams what it sends, and a client that goes away ends it.
fn follow_log(
    log: std::path::PathBuf,
    output: std::path::PathBuf,
    id: TaskId,
    attempt: i32,
    state: ApiState,
) -> impl Stream<Item = Result<warp::sse::Event, std::convert::Infallible>> + Send + Sync + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<warp::sse::Event>(64);
    tokio::spawn(async move {
        let line = |l: &str| warp::sse::Event::default().event("line").data(l.to_string());
        let (mut offset, mut pending) = (0u64, String::new());
        loop {
            let bytes = read_from(&log, offset).await;
            offset += bytes.len() as u64;
            pending.push_str(&String::from_utf8_lossy(&bytes));
            if let Some(at) = pending.rfind('\n') {
                let complete: String = pending.drain(..=at).collect();
                for l in complete.lines() {
                    if tx.send(line(l)).await.is_err() {
                        return; // the client went away
                    }
                }
                continue;
            }
            let ended = tokio::fs::metadata(&output).await.is_ok()
                || match state.store.get(id).await {
                    Ok(Some(t)) => t.status != TaskStatus::Running || t.attempts != attempt,
                    Ok(None) => true,
                    Err(_) => false,
                };
            if ended {
                // Lines written just before the end.
                pending.push_str(&String::from_utf8_lossy(&read_from(&log, offset).await));
                for l in pending.lines() {
                    let _ = tx.send(line(l)).await;
                }
                let _ = tx.send(warp::sse::Event::default().event("end").data(id.to_string())).await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(crate::tunables::LOG_FOLLOW_EVERY) => {}
                _ = tx.closed() => return,
            }
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)))
}

/// The bytes of `path` from `offset` on (none when it does not exist yet).
async fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(path).await else { return Vec::new() };
    if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let _ = file.read_to_end(&mut out).await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_refuse_unknown_and_bad_values() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let f = parse_filter(&q(&[("status", "failed"), ("limit", "5"), ("offset", "10")])).unwrap();
        assert_eq!((f.status, f.limit, f.offset), (Some(TaskStatus::Failed), 5, 10));
        assert!(parse_filter(&q(&[("status", "done")])).is_err());
        assert!(parse_filter(&q(&[("limit", "0")])).is_err());
        assert!(parse_filter(&q(&[("limit", "x")])).is_err());
        assert!(parse_filter(&q(&[("colour", "red")])).is_err());
        assert!(parse_filter(&q(&[("queue", "a\u{0}")])).is_err(), "no store holds a NUL");
    }
}
