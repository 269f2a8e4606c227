//! Routes under `/workflows`: create (through the intake), get, list, cancel, retry. Each parses
//! the request, calls the service that owns it (the intake for a new workflow, control for
//! the cancel and the retry, the store for reads), and shapes the answer; errors map in `error.rs` (422
//! `invalid_workflow` naming the step(s), 409 `duplicate_idempotency_key` with the
//! existing `workflow_id`, 404 `workflow_not_found`).

use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Buf, Filter, Reply};

use super::access::authorized;
use super::body::read_json_value;
use super::error::answer;
use super::tasks::{new_trace_id, task_from_value};
use super::{ApiError, ApiState};
use crate::workflow::{
    limits, CreatedWorkflow, InvalidWorkflow, NewStep, NewWorkflow, OnParentFailure, StepKey, StepsRetried,
    WorkflowFilter, WorkflowId, WorkflowStatus, WorkflowView,
};

/// Every `/workflows` route, behind the API key (the read-only key may only GET).
pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let auth = authorized(state.access.clone());
    let with_state = warp::any().map(move || state.clone());
    let create = warp::path!("workflows")
        .and(warp::post())
        .and(auth.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_state.clone())
        .then(create);
    let list = warp::path!("workflows")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .and(with_state.clone())
        .then(list);
    let get = warp::path!("workflows" / String).and(warp::get()).and(auth.clone()).and(with_state.clone()).then(get);
    let cancel = warp::path!("workflows" / String / "cancel")
        .and(warp::post())
        .and(auth.clone())
        .and(with_state.clone())
        .then(cancel);
    let retry = warp::path!("workflows" / String / "retry").and(warp::post()).and(auth).and(with_state).then(retry);
    create.or(list).unify().or(get).unify().or(cancel).unify().or(retry).unify().boxed()
}

/// The body of `POST /workflows`; each step is read on its own ([`parse_step`]).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WorkflowBody")]
struct WorkflowRequest {
    #[schemars(length(min = 1, max = crate::workflow::limits::NAME_MAX))]
    name: String,
    #[schemars(with = "Vec<StepBody>", length(min = 1, max = crate::workflow::limits::STEPS_MAX))]
    steps: Vec<Value>,
    idempotency_key: Option<String>,
    cwom_issue_id: Option<String>,
}

/// One step of `POST /workflows`: an enqueue body (without `idempotency_key`: the workflow
/// has one) plus its key and dependencies. [`parse_step`] reads it, naming the step it
/// refuses; this type is its schema.
#[derive(schemars::JsonSchema)]
#[schemars(rename = "WorkflowStep")]
#[allow(dead_code)]
pub(super) struct StepBody {
    /// Unique in the workflow: `[A-Za-z0-9_.-]{1,64}`.
    #[schemars(length(min = 1, max = crate::workflow::limits::KEY_MAX))]
    key: String,
    /// The keys of the steps this one waits for.
    #[serde(default)]
    depends_on: Vec<String>,
    /// `cancel` when left out.
    #[serde(default)]
    on_parent_failure: OnParentFailure,
    #[serde(flatten)]
    task: super::tasks::EnqueueRequest,
}

/// `POST /workflows/{id}/cancel`'s answer: the workflow as it now is.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct CancelledWorkflow {
    #[serde(flatten)]
    workflow: WorkflowView,
    /// How many steps this cancel ended.
    cancelled: u64,
}

/// `POST /workflows/{id}/retry`'s answer: the workflow as it now is, and what the retry changed.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct RetriedWorkflow {
    #[serde(flatten)]
    workflow: WorkflowView,
    #[serde(flatten)]
    retried: StepsRetried,
}

/// The `/workflows` routes in the OpenAPI document.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    let example = json!({
        "name": "release", "idempotency_key": "release-openapi",
        "steps": [
            { "key": "build", "type": "echo", "payload": { "image": "app:1" } },
            { "key": "test", "type": "echo", "depends_on": ["build"] },
            { "key": "report", "type": "echo", "depends_on": ["test"], "on_parent_failure": "run" }
        ]
    });
    doc.post("/workflows", "Store a workflow whole: steps are enqueue bodies plus key, depends_on and on_parent_failure; steps without parents are queued, the others waiting until their parents end; an `approval` step (payload {prompt, expires_after_s?}) then waits for POST /tasks/{id}/decision")
        .header("X-Trace-Id", json!({ "type": "string", "maxLength": crate::task::limits::TRACE_ID_MAX }))
        .body::<WorkflowRequest>(example)
        .answers::<CreatedWorkflow>(201, "The workflow and each step's task; its path in Location")
        .changes()
        .body_errors()
        .error(409, "`duplicate_idempotency_key`: the key is taken; `workflow_id` is the workflow holding it")
        .error(422, "`invalid_workflow` naming the step(s): a repeated key (`key`, `indexes`), an unknown dependency (`index`, `key`, `dependency`), a cycle (`keys`), more than 10,000 steps (`count`), an invalid step (`index`, `key`, `cause`), or a bad `field`")
        .unavailable();
    doc.get("/workflows", "Workflows newest first, filtered by status (running, completed, failed, cancelled) and name; before=<workflow id> pages")
        .query_with("status", serde_json::to_value(schemars::schema_for!(WorkflowStatus)).unwrap_or_default())
        .query(&["name"])
        .query_with("before", json!({ "type": "string", "format": "uuid" }))
        .query_with("limit", json!({ "type": "integer", "minimum": 1, "maximum": WorkflowFilter::MAX_LIMIT }))
        .answers::<Vec<crate::workflow::WorkflowSummary>>(200, "The workflows")
        .keyed()
        .error(422, "A bad filter (`invalid_filter`)")
        .unavailable();
    let id = "Workflow id (a UUID)";
    doc.get(
        "/workflows/{id}",
        "A workflow: its status and every step with key, task_id, status, depends_on, attempts and times",
    )
    .path_param("id", id)
    .answers::<WorkflowView>(200, "The workflow")
    .error(400, "Not a workflow id (`invalid_id`)")
    .keyed()
    .error(404, "No such workflow (`workflow_not_found`)")
    .unavailable();
    doc.post(
        "/workflows/{id}/cancel",
        "Cancel every unfinished step (waiting, queued, running); running ones get the cancel signal",
    )
    .path_param("id", id)
    .answers::<CancelledWorkflow>(200, "The workflow as it now is, with how many steps this cancelled")
    .error(400, "Not a workflow id (`invalid_id`)")
    .changes()
    .error(404, "No such workflow (`workflow_not_found`)")
    .unavailable();
    doc.post(
        "/workflows/{id}/retry",
        "Run the failed and cancelled steps again with fresh attempts: each is queued when all its parents completed, else waiting for those that run again",
    )
    .path_param("id", id)
    .answers::<RetriedWorkflow>(200, "The workflow as it now is, with how many steps were requeued and reopened")
    .error(400, "Not a workflow id (`invalid_id`)")
    .changes()
    .error(404, "No such workflow (`workflow_not_found`)")
    .error(409, "`not_retryable`: no step failed or was cancelled; `status` is the workflow's")
    .unavailable();
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidWorkflow(InvalidWorkflow::Field { field: field.into(), reason: reason.into() })
}

/// Parses and checks a workflow body: each step as an enqueue body (the same rules and
/// words as `POST /tasks/enqueue`) plus its place in the graph, then the graph.
pub fn parse_workflow(value: Value, trace_id: String) -> Result<NewWorkflow, ApiError> {
    if !value.is_object() {
        return Err(field("body", "must be a JSON object"));
    }
    let req: WorkflowRequest = crate::fields::from_value(value).map_err(|e| match e {
        crate::fields::FieldError::Data { field: Some(f), reason } => field(f, reason),
        other => field("body", other.to_string()),
    })?;
    if req.name.is_empty() || req.name.chars().count() > limits::NAME_MAX {
        return Err(field("name", format!("must be 1 to {} characters", limits::NAME_MAX)));
    }
    if let Some(key) = &req.idempotency_key {
        if key.is_empty() || key.chars().count() > crate::task::limits::IDEMPOTENCY_KEY_MAX {
            return Err(field(
                "idempotency_key",
                format!("must be 1 to {} characters", crate::task::limits::IDEMPOTENCY_KEY_MAX),
            ));
        }
    }
    if let Some(issue) = &req.cwom_issue_id {
        if issue.is_empty() || issue.chars().count() > crate::task::limits::CWOM_ISSUE_ID_MAX {
            return Err(field(
                "cwom_issue_id",
                format!("must be 1 to {} characters", crate::task::limits::CWOM_ISSUE_ID_MAX),
            ));
        }
    }
    let steps = parse_steps(req.steps, &trace_id, req.cwom_issue_id.as_deref())?;
    let workflow = NewWorkflow {
        id: WorkflowId::new(),
        name: req.name,
        idempotency_key: req.idempotency_key,
        cwom_issue_id: req.cwom_issue_id,
        steps,
    };
    workflow.checked().map_err(ApiError::InvalidWorkflow)
}

/// The steps of a workflow body or a spawn, each read by [`parse_step`] (the graph is
/// checked after: by [`NewWorkflow::checked`], or by the store for a spawn).
pub(super) fn parse_steps(steps: Vec<Value>, trace_id: &str, issue: Option<&str>) -> Result<Vec<NewStep>, ApiError> {
    // Counted before any step is read: a body of a million steps costs no more than this.
    if steps.len() > limits::STEPS_MAX {
        return Err(ApiError::InvalidWorkflow(InvalidWorkflow::TooManySteps { count: steps.len() }));
    }
    steps.into_iter().enumerate().map(|(index, step)| parse_step(index, step, trace_id, issue)).collect()
}

/// One step: `key`, `depends_on`, `on_parent_failure`, and the rest an enqueue body.
fn parse_step(index: usize, step: Value, trace_id: &str, issue: Option<&str>) -> Result<NewStep, ApiError> {
    let bad = |key: Option<&str>, code: &'static str, message: String| {
        ApiError::InvalidWorkflow(InvalidWorkflow::Step { index, key: key.map(str::to_string), code, message })
    };
    let Value::Object(mut body) = step else {
        return Err(bad(None, "invalid_field", "a step must be a JSON object".into()));
    };
    let key = match body.remove("key") {
        Some(Value::String(k)) => {
            StepKey::parse(&k).map_err(|m| bad(Some(&k), "invalid_field", format!("key: {m}")))?
        }
        Some(_) => return Err(bad(None, "invalid_field", "key: must be a string".into())),
        None => return Err(bad(None, "invalid_field", "key: missing (every step needs one)".into())),
    };
    let bad_here = |message: String| bad(Some(key.as_str()), "invalid_field", message);
    let depends_on = match body.remove("depends_on") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => StepKey::parse(&s).map_err(|m| bad_here(format!("depends_on: {m}"))),
                _ => Err(bad_here("depends_on: must be an array of step keys".into())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad_here("depends_on: must be an array of step keys".into())),
    };
    let on_parent_failure = match body.remove("on_parent_failure") {
        None | Some(Value::Null) => OnParentFailure::default(),
        Some(Value::String(s)) => s.parse().map_err(bad_here)?,
        Some(_) => return Err(bad_here("on_parent_failure: must be \"cancel\" or \"run\"".into())),
    };
    if body.contains_key("idempotency_key") {
        // Stored tasks hold their keys table-wide; a workflow's repeat is caught by its own.
        return Err(bad_here("idempotency_key: a step takes none; give the workflow one".into()));
    }
    if !body.contains_key("cwom_issue_id") {
        if let Some(issue) = issue {
            body.insert("cwom_issue_id".into(), json!(issue));
        }
    }
    let task = task_from_value(Value::Object(body), trace_id.to_string())
        .map_err(|e| bad(Some(key.as_str()), e.code(), e.to_string()))?;
    Ok(NewStep { key, task, depends_on, on_parent_failure })
}

async fn create<S, B>(content_type: Option<String>, headers: HeaderMap, body: S, state: ApiState) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let result = async {
        let value = read_json_value(content_type.as_deref(), body, state.max_body_bytes).await?;
        let workflow = parse_workflow(value, new_trace_id(&headers)?)?;
        Ok::<_, ApiError>(state.intake.enqueue_workflow(workflow).await?)
    }
    .await;
    match result {
        Ok(created) => {
            let location = format!("/workflows/{}", created.workflow_id);
            let mut res = warp::reply::with_status(warp::reply::json(&created), StatusCode::CREATED).into_response();
            if let Ok(v) = warp::http::HeaderValue::from_str(&location) {
                res.headers_mut().insert(warp::http::header::LOCATION, v);
            }
            res
        }
        Err(e) => e.into_response(),
    }
}

fn parse_id(raw: &str) -> Result<WorkflowId, ApiError> {
    raw.parse().map_err(|_| ApiError::InvalidWorkflowId(raw.to_string()))
}

async fn view(state: &ApiState, id: WorkflowId) -> Result<WorkflowView, ApiError> {
    state.store.get_workflow(id).await?.ok_or(ApiError::WorkflowNotFound(id))
}

async fn get(raw_id: String, state: ApiState) -> Response {
    answer(
        async {
            let id = parse_id(&raw_id)?;
            Ok::<_, ApiError>((StatusCode::OK, view(&state, id).await?))
        }
        .await,
    )
}

/// Parses `status`, `name`, `before` (a workflow id: keyset paging), `limit`; anything
/// else is refused.
pub fn parse_filter(query: &[(String, String)]) -> Result<WorkflowFilter, ApiError> {
    let mut f = WorkflowFilter { limit: WorkflowFilter::DEFAULT_LIMIT, ..WorkflowFilter::default() };
    for (k, v) in query {
        match k.as_str() {
            "status" => f.status = Some(v.parse::<WorkflowStatus>().map_err(ApiError::InvalidFilter)?),
            "name" => f.name = Some(v.clone()),
            "before" => {
                f.before = Some(
                    v.parse()
                        .map_err(|_| ApiError::InvalidFilter(format!("before must be a workflow id (got {v:?})")))?,
                )
            }
            "limit" => {
                f.limit = v.parse().ok().filter(|n| (1..=WorkflowFilter::MAX_LIMIT).contains(n)).ok_or_else(|| {
                    ApiError::InvalidFilter(format!(
                        "limit must be from 1 to {} (got {v:?})",
                        WorkflowFilter::MAX_LIMIT
                    ))
                })?
            }
            other => {
                return Err(ApiError::InvalidFilter(format!("unknown filter {other:?} (status, name, before, limit)")))
            }
        }
    }
    if let Some(name) = &f.name {
        crate::storable::check_text("name", name)?;
    }
    Ok(f)
}

async fn list(query: Vec<(String, String)>, state: ApiState) -> Response {
    answer(
        async {
            let filter = parse_filter(&query)?;
            let found = state.store.list_workflows(&filter).await?;
            Ok::<_, ApiError>((StatusCode::OK, found))
        }
        .await,
    )
}

async fn cancel(raw_id: String, state: ApiState) -> Response {
    answer(
        async {
            let id = parse_id(&raw_id)?;
            let Some(cancelled) = state.control.cancel_workflow(id).await? else {
                return Err(ApiError::WorkflowNotFound(id));
            };
            Ok((StatusCode::OK, CancelledWorkflow { workflow: view(&state, id).await?, cancelled }))
        }
        .await,
    )
}

async fn retry(raw_id: String, state: ApiState) -> Response {
    answer(
        async {
            let id = parse_id(&raw_id)?;
            let Some(retried) = state.control.retry_workflow(id).await? else {
                return Err(ApiError::WorkflowNotFound(id));
            };
            let workflow = view(&state, id).await?;
            if retried.is_empty() {
                return Err(ApiError::WorkflowNotRetryable { id, status: workflow.summary.status });
            }
            Ok((StatusCode::OK, RetriedWorkflow { workflow, retried }))
        }
        .await,
    )
}
