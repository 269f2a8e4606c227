//! API errors and their one mapping to HTTP: status, `error` code, `message`.
//!
//! Every domain error (each store operation's, CWOM's, validation's) becomes an
//! [`ApiError`] here and nowhere else, through a `From` impl per type. Every error body is
//! `{"error": "<snake_case_code>", "message": "<one sentence>"}`, plus `task_id` where the
//! client needs it. 5xx bodies say nothing internal; the full cause chain goes to the log.

use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::cwom::types::{ObjectKind, Status};
use crate::cwom::CwomError;
use crate::intake::IntakeError;
use crate::queues::QueueError;
use crate::remote::RemoteError;
use crate::scheduling::SchedulingError;
use crate::storable::Unstorable;
use crate::store::error::{chain, CancelError, EnqueueError, RetryError, StoreError};
use crate::task::WorkerId;
use crate::task::{InvalidField, TaskId, TaskStatus};
use crate::workflow::{InvalidWorkflow, WorkflowId, WorkflowStatus};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The task's executor will not take this payload (a program off the allowlist, a
    /// repository outside the allowed prefixes); the code says which rule.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("{0}")]
    InvalidField(String),
    #[error("unknown task type {given:?}; known types: {known}")]
    UnknownType { given: String, known: String },
    #[error("{0}")]
    InvalidFilter(String),
    /// One task of a batch is invalid; the whole batch is refused.
    #[error("task [{index}] of the batch: {message}")]
    InvalidBatchItem { index: usize, code: &'static str, message: String },
    /// One idempotency key twice in one batch; names both tasks by index.
    #[error("tasks [{first}] and [{second}] of the batch use the same idempotency_key")]
    DuplicateKeyInBatch { first: usize, second: usize },
    #[error("{0}")]
    BadQuery(String),
    /// A request header that is not text (warp could not read it).
    #[error("the {0} header is not valid text")]
    BadHeader(String),
    /// The database refused a row that validation let through (a constraint or trigger
    /// an operator added, a data rule of the database): this request's own failure, with
    /// the database's message.
    #[error("the task store refused the row: {0}")]
    RejectedByStore(String),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("{0:?} is not a task id (expected a UUID)")]
    InvalidId(String),
    #[error("no task with id {0}")]
    TaskNotFound(TaskId),
    #[error("no such route (see the README for the API)")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("task {id} is already {status}; only waiting, queued or running tasks can be cancelled")]
    NotCancellable { id: TaskId, status: TaskStatus },
    #[error("idempotency key already used by task {existing}")]
    DuplicateIdempotencyKey { existing: TaskId },
    /// A CWOM Ref names no object of its kind, or the wrong kind; says which Ref.
    #[error("{0}")]
    InvalidRef(String),
    #[error("no {kind} with id {id:?}")]
    CwomNotFound { kind: ObjectKind, id: String },
    /// PUT or PATCH on a kind that never changes once created.
    #[error("a {0} is immutable once created; create a new one instead")]
    ImmutableObject(ObjectKind),
    /// A CWOM unique key is taken (repo slug; doctrine namespace, name and version).
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{kind} {id} is {status}, a final status; it cannot become {to}")]
    FinalStatus { kind: ObjectKind, id: String, status: Status, to: Status },
    #[error("task {id} is not awaiting a decision: {why}")]
    NotAwaitingDecision { id: TaskId, status: TaskStatus, why: crate::store::NotAwaiting },
    #[error("task {id} is {status}; only failed or cancelled tasks can be retried")]
    NotRetryable { id: TaskId, status: TaskStatus },
    #[error("no worker with id {0}; register again")]
    WorkerNotFound(WorkerId),
    #[error("the lease of task {0} is lost: it was rescued, cancelled, ended or claimed again")]
    LeaseLost(TaskId),
    /// A spawn from a task that belongs to no workflow.
    #[error("task {0} is no workflow step; only a step of a workflow can spawn steps into it")]
    NotAWorkflowStep(TaskId),
    #[error("task {id} already has an artifact named {name:?}")]
    ArtifactExists { id: TaskId, name: String },
    #[error("no such trace file {0:?} (input.json, log.txt, output.json or artifacts/<name>)")]
    TraceFileNotFound(String),
    #[error("missing or wrong API key (send Authorization: Bearer <key>)")]
    Unauthorized,
    #[error("the read-only API key may only read (GET); this request changes something")]
    ReadOnlyKey,
    #[error("missing or wrong X-CSRF-Token header for this dashboard session; reload the page")]
    CsrfRejected,
    #[error(
        "the request's Origin is another site than this server; cross-site requests that change something are refused"
    )]
    CrossOrigin,
    /// A bulk request that names neither ids nor a filter, or both.
    #[error("{0}")]
    InvalidBulk(String),
    /// A schedule body breaks a rule; names the field.
    #[error("{field}: {reason}")]
    InvalidSchedule { field: String, reason: String },
    #[error("a schedule named {0:?} already exists")]
    ScheduleExists(String),
    #[error("no schedule named {0:?}")]
    ScheduleNotFound(String),
    /// A queue name or settings change breaks a rule; names the field.
    #[error("{field}: {reason}")]
    InvalidQueue { field: String, reason: String },
    /// A workflow body breaks a rule; names the step(s).
    #[error("{0}")]
    InvalidWorkflow(InvalidWorkflow),
    #[error("idempotency key already used by workflow {existing}")]
    DuplicateWorkflowKey { existing: WorkflowId },
    #[error("{0:?} is not a workflow id (expected a UUID)")]
    InvalidWorkflowId(String),
    #[error("no workflow with id {0}")]
    WorkflowNotFound(WorkflowId),
    /// A workflow retry with no failed or cancelled step.
    #[error("workflow {id} is {status}: no step failed or was cancelled, so there is nothing to retry")]
    WorkflowNotRetryable { id: WorkflowId, status: WorkflowStatus },
    #[error("the task store is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

/// A route's answer: its status and JSON body, or the error's.
pub fn answer<T: serde::Serialize>(result: Result<(StatusCode, T), ApiError>) -> Response {
    match result {
        Ok((status, body)) => warp::reply::with_status(warp::reply::json(&body), status).into_response(),
        Err(e) => e.into_response(),
    }
}

impl From<crate::handlers::Refusal> for ApiError {
    fn from(r: crate::handlers::Refusal) -> Self {
        ApiError::Refused { code: r.code, message: r.message }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            MalformedJson(_) | InvalidId(_) | InvalidWorkflowId(_) | BadQuery(_) | BadHeader(_) => {
                StatusCode::BAD_REQUEST
            }
            InvalidField(_)
            | UnknownType { .. }
            | InvalidFilter(_)
            | InvalidBatchItem { .. }
            | DuplicateKeyInBatch { .. }
            | InvalidRef(_)
            | Refused { .. }
            | RejectedByStore(_)
            | InvalidSchedule { .. }
            | InvalidQueue { .. }
            | InvalidWorkflow(_)
            | InvalidBulk(_) => StatusCode::UNPROCESSABLE_ENTITY,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            TaskNotFound(_)
            | RouteNotFound
            | CwomNotFound { .. }
            | WorkerNotFound(_)
            | TraceFileNotFound(_)
            | ScheduleNotFound(_)
            | WorkflowNotFound(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed | ImmutableObject(_) => StatusCode::METHOD_NOT_ALLOWED,
            NotCancellable { .. }
            | DuplicateIdempotencyKey { .. }
            | DuplicateWorkflowKey { .. }
            | AlreadyExists(_)
            | ScheduleExists(_)
            | FinalStatus { .. }
            | NotRetryable { .. }
            | NotAwaitingDecision { .. }
            | WorkflowNotRetryable { .. }
            | LeaseLost(_)
            | NotAWorkflowStep(_)
            | ArtifactExists { .. } => StatusCode::CONFLICT,
            Unauthorized => StatusCode::UNAUTHORIZED,
            ReadOnlyKey | CsrfRejected | CrossOrigin => StatusCode::FORBIDDEN,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            MalformedJson(_) => "malformed_json",
            InvalidField(_) => "invalid_field",
            UnknownType { .. } => "unknown_type",
            InvalidFilter(_) => "invalid_filter",
            InvalidBatchItem { code, .. } | Refused { code, .. } => code,
            DuplicateKeyInBatch { .. } => "duplicate_key_in_batch",
            BadQuery(_) => "bad_query",
            BadHeader(_) => "invalid_header",
            RejectedByStore(_) => "rejected_by_store",
            UnsupportedMediaType => "unsupported_media_type",
            PayloadTooLarge { .. } => "payload_too_large",
            InvalidId(_) => "invalid_id",
            TaskNotFound(_) => "task_not_found",
            RouteNotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            NotCancellable { .. } => "not_cancellable",
            DuplicateIdempotencyKey { .. } => "duplicate_idempotency_key",
            InvalidRef(_) => "invalid_ref",
            CwomNotFound { .. } => "object_not_found",
            ImmutableObject(_) => "immutable_object",
            AlreadyExists(_) => "already_exists",
            FinalStatus { .. } => "final_status",
            NotRetryable { .. } | WorkflowNotRetryable { .. } => "not_retryable",
            NotAwaitingDecision { .. } => "not_awaiting_decision",
            WorkerNotFound(_) => "worker_not_found",
            LeaseLost(_) => "lease_lost",
            NotAWorkflowStep(_) => "not_a_workflow_step",
            ArtifactExists { .. } => "artifact_exists",
            TraceFileNotFound(_) => "trace_file_not_found",
            Unauthorized => "unauthorized",
            ReadOnlyKey => "read_only_key",
            CsrfRejected => "csrf_rejected",
            CrossOrigin => "cross_origin",
            InvalidBulk(_) => "invalid_bulk",
            InvalidSchedule { .. } => "invalid_schedule",
            ScheduleExists(_) => "schedule_exists",
            ScheduleNotFound(_) => "schedule_not_found",
            InvalidQueue { .. } => "invalid_queue",
            InvalidWorkflow(_) => "invalid_workflow",
            DuplicateWorkflowKey { .. } => "duplicate_idempotency_key",
            InvalidWorkflowId(_) => "invalid_id",
            WorkflowNotFound(_) => "workflow_not_found",
            Unavailable => "store_unavailable",
            Internal => "internal_error",
        }
    }

    pub fn body(&self) -> Value {
        serde_json::to_value(self.answer()).expect("an error body is plain JSON")
    }

    /// The body this error answers with: its code, its sentence, and what it concerns.
    pub fn answer(&self) -> ErrorBody {
        let mut body = ErrorBody { error: self.code(), message: self.to_string(), ..ErrorBody::default() };
        match self {
            ApiError::DuplicateIdempotencyKey { existing } => body.task_id = Some(*existing),
            ApiError::InvalidBatchItem { index, .. } => body.index = Some(*index),
            ApiError::DuplicateKeyInBatch { first, second } => {
                body.index = Some(*second);
                body.indexes = Some(vec![*first, *second]);
            }
            ApiError::NotCancellable { id, status }
            | ApiError::NotRetryable { id, status }
            | ApiError::NotAwaitingDecision { id, status, .. } => {
                body.task_id = Some(*id);
                body.status = Some(status.to_string());
            }
            ApiError::LeaseLost(id) | ApiError::NotAWorkflowStep(id) | ApiError::ArtifactExists { id, .. } => {
                body.task_id = Some(*id)
            }
            ApiError::WorkerNotFound(id) => body.worker_id = Some(id.0.clone()),
            ApiError::InvalidSchedule { field, .. } | ApiError::InvalidQueue { field, .. } => {
                body.field = Some(field.clone())
            }
            ApiError::ScheduleExists(name) | ApiError::ScheduleNotFound(name) => body.name = Some(name.clone()),
            ApiError::CwomNotFound { kind, id } => {
                body.kind = Some(*kind);
                body.id = Some(id.clone());
            }
            ApiError::DuplicateWorkflowKey { existing } | ApiError::WorkflowNotFound(existing) => {
                body.workflow_id = Some(*existing)
            }
            ApiError::WorkflowNotRetryable { id, status } => {
                body.workflow_id = Some(*id);
                body.status = Some(status.to_string());
            }
            ApiError::InvalidWorkflow(invalid) => {
                use crate::workflow::InvalidWorkflow as W;
                match invalid {
                    W::Field { field, .. } => body.field = Some(field.clone()),
                    W::NoSteps => body.field = Some("steps".into()),
                    W::TooManySteps { count } => {
                        body.field = Some("steps".into());
                        body.count = Some(*count);
                    }
                    W::RepeatedKey { key, indexes } => {
                        body.key = Some(key.clone());
                        body.keys = Some(vec![key.clone()]);
                        body.indexes = Some(indexes.to_vec());
                    }
                    W::UnknownDependency { index, key, dependency } => {
                        body.index = Some(*index);
                        body.key = Some(key.clone());
                        body.keys = Some(vec![key.clone()]);
                        body.dependency = Some(dependency.clone());
                    }
                    W::Cycle { keys } => body.keys = Some(keys.clone()),
                    W::KeyTaken { index, key } => {
                        body.index = Some(*index);
                        body.key = Some(key.clone());
                        body.keys = Some(vec![key.clone()]);
                    }
                    W::DependsOnDependant { index, key, dependency } => {
                        body.index = Some(*index);
                        body.key = Some(key.clone());
                        body.keys = Some(vec![key.clone()]);
                        body.dependency = Some(dependency.clone());
                    }
                    W::ParentEnded { index, key, dependency, status } => {
                        body.index = Some(*index);
                        body.key = Some(key.clone());
                        body.keys = Some(vec![key.clone()]);
                        body.dependency = Some(dependency.clone());
                        body.status = Some(status.to_string());
                    }
                    W::TooManyInWorkflow { count } => {
                        body.field = Some("steps".into());
                        body.count = Some(*count);
                    }
                    W::Step { index, key, code, .. } => {
                        body.index = Some(*index);
                        body.key = key.clone();
                        body.keys = key.clone().map(|k| vec![k]);
                        body.cause = Some(*code);
                    }
                }
            }
            ApiError::FinalStatus { kind, id, status, .. } => {
                body.kind = Some(*kind);
                body.id = Some(id.clone());
                body.status = Some(status.to_string());
            }
            _ => {}
        }
        body
    }
}

/// Every error's JSON body: a code and a sentence, plus what the error concerns where it
/// concerns something.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// The snake_case code.
    pub error: &'static str,
    /// One human sentence.
    pub message: String,
    /// The task concerned: the existing one for a used idempotency key, the one whose lease was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// The refused task of a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// `duplicate_key_in_batch`: the two tasks of the batch that use one idempotency key;
    /// `invalid_workflow`: the steps that repeat one key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexes: Option<Vec<usize>>,
    /// The status that refused the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The field of the body that was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The schedule concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The CWOM object concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ObjectKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The workflow concerned: the existing one for a used idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<WorkflowId>,
    /// `invalid_workflow`: the step's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `invalid_workflow`: the keys of the steps at fault (those on a cycle, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// `invalid_workflow`: the dependency no step has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// `invalid_workflow`: the code an invalid step's enqueue would answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// `invalid_workflow`: how many steps were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let cause = chain(&e);
        if e.is_unavailable() {
            tracing::warn!(%cause, "store unavailable");
            ApiError::Unavailable
        } else if e.is_refused() {
            tracing::info!(%cause, code = e.code().unwrap_or(""), "the store refused a row");
            ApiError::RejectedByStore(e.message().to_string())
        } else {
            tracing::error!(%cause, code = e.code().unwrap_or(""), "store error");
            ApiError::Internal
        }
    }
}

impl From<EnqueueError> for ApiError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::Duplicate { existing } => ApiError::DuplicateIdempotencyKey { existing },
            EnqueueError::Store(e) => e.into(),
        }
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::UnknownType { given, known } => ApiError::UnknownType { given, known },
            e @ IntakeError::StepOnlyType(_) => ApiError::InvalidField(e.to_string()),
            IntakeError::NotAdmitted(refusal) => refusal.into(),
            e @ IntakeError::MissingIssue(_) => ApiError::InvalidRef(e.to_string()),
            IntakeError::InBatch { index, source } => {
                let e = ApiError::from(*source);
                ApiError::InvalidBatchItem { index, code: e.code(), message: e.to_string() }
            }
            IntakeError::DuplicateKeyInBatch { first, second } => ApiError::DuplicateKeyInBatch { first, second },
            IntakeError::Duplicate { existing } => ApiError::DuplicateIdempotencyKey { existing },
            IntakeError::NoSchedule(name) => ApiError::ScheduleNotFound(name),
            IntakeError::InStep { index, key, source } => {
                let e = ApiError::from(*source);
                ApiError::InvalidWorkflow(InvalidWorkflow::Step {
                    index,
                    key: Some(key),
                    code: e.code(),
                    message: e.to_string(),
                })
            }
            IntakeError::DuplicateWorkflow { existing } => ApiError::DuplicateWorkflowKey { existing },
            IntakeError::Store(e) => e.into(),
        }
    }
}

impl From<SchedulingError> for ApiError {
    fn from(e: SchedulingError) -> Self {
        match e {
            SchedulingError::Invalid(f) => ApiError::InvalidSchedule { field: f.field, reason: f.reason },
            SchedulingError::Exists(name) => ApiError::ScheduleExists(name),
            SchedulingError::NotFound(name) => ApiError::ScheduleNotFound(name),
            SchedulingError::Intake(e) => e.into(),
            SchedulingError::Store(e) => e.into(),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Invalid(f) => ApiError::InvalidQueue { field: f.field, reason: f.reason },
            QueueError::Store(e) => e.into(),
        }
    }
}

impl From<crate::store::DecideError> for ApiError {
    fn from(e: crate::store::DecideError) -> Self {
        use crate::store::DecideError;
        match e {
            DecideError::NotFound(id) => ApiError::TaskNotFound(id),
            DecideError::NotAwaiting { id, status, why } => ApiError::NotAwaitingDecision { id, status, why },
            DecideError::Store(e) => e.into(),
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::NotFound(id) => ApiError::TaskNotFound(id),
            CancelError::NotCancellable { id, status } => ApiError::NotCancellable { id, status },
            CancelError::Store(e) => e.into(),
        }
    }
}

impl From<RetryError> for ApiError {
    fn from(e: RetryError) -> Self {
        match e {
            RetryError::NotFound(id) => ApiError::TaskNotFound(id),
            RetryError::NotRetryable { id, status } => ApiError::NotRetryable { id, status },
            RetryError::Store(e) => e.into(),
        }
    }
}

impl From<RemoteError> for ApiError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::Invalid(m) => ApiError::InvalidField(m),
            RemoteError::WorkerNotFound(id) => ApiError::WorkerNotFound(id),
            RemoteError::TaskNotFound(id) => ApiError::TaskNotFound(id),
            RemoteError::LeaseLost(id) => ApiError::LeaseLost(id),
            RemoteError::NotAWorkflowStep(id) => ApiError::NotAWorkflowStep(id),
            RemoteError::InvalidSteps(invalid) => ApiError::InvalidWorkflow(invalid),
            RemoteError::ArtifactExists { id, name } => ApiError::ArtifactExists { id, name },
            RemoteError::Store(e) => e.into(),
        }
    }
}

impl From<CwomError> for ApiError {
    fn from(e: CwomError) -> Self {
        match e {
            CwomError::Invalid(m) => ApiError::InvalidField(m),
            CwomError::InvalidRef(m) => ApiError::InvalidRef(m),
            CwomError::InvalidFilter(m) => ApiError::InvalidFilter(m),
            CwomError::NotFound { kind, id } => ApiError::CwomNotFound { kind, id },
            CwomError::AlreadyExists(m) => ApiError::AlreadyExists(m),
            CwomError::FinalStatus { kind, id, status, to } => ApiError::FinalStatus { kind, id, status, to },
            CwomError::Store(e) => e.into(),
        }
    }
}

impl From<InvalidField> for ApiError {
    fn from(e: InvalidField) -> Self {
        ApiError::InvalidField(e.to_string())
    }
}

impl From<Unstorable> for ApiError {
    fn from(e: Unstorable) -> Self {
        ApiError::InvalidField(e.to_string())
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut res = warp::reply::with_status(warp::reply::json(&self.body()), status).into_response();
        if matches!(self, ApiError::Unauthorized) {
            res.headers_mut()
                .insert(warp::http::header::WWW_AUTHENTICATE, warp::http::HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl warp::reject::Reject for ApiError {}

/// Turns every rejection warp produces (no route, wrong method, our own) into the JSON
/// error shape.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    // A header that is not text fails the filter of the route the request was for, while
    // the other routes reject it as "wrong method": the header is the answer to give.
    let err = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if let Some(h) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::BadHeader(h.name().to_string())
    } else if rejection.is_not_found() {
        ApiError::RouteNotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::BadQuery("the query string could not be decoded".into())
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::Internal
    };
    Ok(err.into_response())
}
