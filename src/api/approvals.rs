//! `POST /tasks/{id}/decision`: a person's decision on an approval step awaiting it. Parses
//! the body ([`DecisionRequest`], errors naming the field), stamps it, and asks control
//! ([`crate::control::Control::decide`]) to end the step; 409 `not_awaiting_decision` for
//! a task that is no approval, whose parents are not done, or that ended already. The
//! read-only key and a dashboard session without its CSRF token are refused (403) by
//! [`authorized`], as for every change.

use futures_util::Stream;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Buf, Filter};

use super::access::authorized;
use super::error::answer;
use super::{ApiError, ApiState};
use crate::approval::DecisionRequest;
use crate::task::TaskId;

pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let auth = authorized(state.access.clone());
    let with_state = warp::any().map(move || state.clone());
    warp::path!("tasks" / String / "decision")
        .and(warp::post())
        .and(auth)
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .and(with_state)
        .then(decide)
        .boxed()
}

/// The route in the OpenAPI document.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    doc.post(
        "/tasks/{id}/decision",
        "Decide an approval step (a workflow step of type `approval`, payload {prompt, expires_after_s?}) awaiting its decision, once its parents are done: approve completes it with result {decision, comment, by, at} (its dependants run); reject fails it (`last_error` approval_rejected, the same record as its result). One not decided within expires_after_s fails with `last_error` approval_expired",
    )
    .path_param("id", "Task id (a UUID) of the approval step")
    .body::<DecisionRequest>(json!({ "decision": "approve", "comment": "tests are green", "by": "ana" }))
    .answers::<crate::task::Task>(200, "The step, now completed (approved) or failed (rejected)")
    .error(400, "Not a UUID (`invalid_id`)")
    .changes()
    .body_errors()
    .error(404, "No such task (`task_not_found`)")
    .error(409, "`not_awaiting_decision`: not an approval step, its parents are not done, or it already ended (decided, expired, cancelled); `status` is the task's")
    .error(422, "A bad body (`invalid_field`, naming the field)")
    .unavailable();
}

async fn decide<S, B>(raw_id: String, content_type: Option<String>, body: S, state: ApiState) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    answer(
        async {
            let id: TaskId = raw_id.parse().map_err(|_| ApiError::InvalidId(raw_id.clone()))?;
            // Read as a tree first: straight from bytes, serde_json calls a mistyped enum
            // (`"decision": true`) a syntax error, and the body is valid JSON.
            let value = super::body::read_json_value(content_type.as_deref(), body, state.max_body_bytes).await?;
            if !value.is_object() {
                // serde would read an array as the struct's fields in order.
                return Err(ApiError::InvalidField("body: must be a JSON object with \"decision\"".into()));
            }
            let request: DecisionRequest = crate::fields::from_value(value).map_err(|e| match e {
                crate::fields::FieldError::Data { field: Some(f), reason } => {
                    ApiError::InvalidField(format!("{f}: {reason}"))
                }
                other => ApiError::InvalidField(format!("body: {other}")),
            })?;
            let record = request.checked(chrono::Utc::now())?;
            Ok::<_, ApiError>((StatusCode::OK, state.control.decide(id, &record).await?))
        }
        .await,
    )
}
