//! Routes under `/schedules`: create, list, get, replace, delete, pause, resume, trigger.
//! Each parses the request, calls [`crate::scheduling::Schedules`], and shapes the answer
//! (a schedule's view: its body, `next_fire_at`, `upcoming`, the last fire); errors map in
//! `error.rs` (422 `invalid_schedule` with `field`, 409 `schedule_exists`, 404
//! `schedule_not_found`).

use chrono::Utc;
use futures_util::Stream;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Buf, Filter};

use super::access::authorized;
use super::body::read_json_value;
use super::error::answer;
use super::{ApiError, ApiState};
use crate::schedule::{check_name, FireOutcome, ScheduleSpec, ScheduleView, Started};
use crate::task::TaskId;
use crate::workflow::WorkflowId;

/// Every `/schedules` route, behind the API key (the read-only key may only GET).
pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let auth = authorized(state.access.clone());
    let with_state = warp::any().map(move || state.clone());
    let body = warp::header::optional::<String>("content-type").and(warp::body::stream());
    let create =
        warp::path!("schedules").and(warp::post()).and(auth.clone()).and(body).and(with_state.clone()).then(create);
    let list = warp::path!("schedules").and(warp::get()).and(auth.clone()).and(with_state.clone()).then(list);
    let get = warp::path!("schedules" / String).and(warp::get()).and(auth.clone()).and(with_state.clone()).then(get);
    let replace = warp::path!("schedules" / String)
        .and(warp::put())
        .and(auth.clone())
        .and(body)
        .and(with_state.clone())
        .then(replace);
    let delete =
        warp::path!("schedules" / String).and(warp::delete()).and(auth.clone()).and(with_state.clone()).then(delete);
    let action = warp::path!("schedules" / String / String).and(warp::post()).and(auth).and(with_state).then(action);
    create.or(list).unify().or(get).unify().or(replace).unify().or(delete).unify().or(action).unify().boxed()
}

/// `GET /schedules`' answer.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct ScheduleList {
    schedules: Vec<ScheduleView>,
}

/// `DELETE /schedules/{name}`'s answer.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct Deleted {
    name: String,
    deleted: bool,
}

/// `POST /schedules/{name}/trigger`'s answer.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct Fired {
    name: String,
    /// The task the trigger enqueued (a task schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: Option<TaskId>,
    /// The workflow the trigger started (a workflow schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_id: Option<WorkflowId>,
    fired: bool,
}

/// What an action answers: the schedule (pause, resume) or the fire (trigger).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Answer {
    Schedule(Box<ScheduleView>),
    Fired(Fired),
}

/// The `/schedules` routes in the OpenAPI document.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    let example = serde_json::json!({
        "name": "nightly-deps", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
        "task": { "type": "echo", "payload": { "job": "bump dependencies" } },
        "catch_up": "latest", "catch_up_window_s": 3600, "overlap": "skip"
    });
    let invalid = "`invalid_schedule` naming the `field` (bad cron, unknown time zone, task and workflow both or neither, an invalid task or workflow)";
    let name = "Schedule name ([A-Za-z0-9_.-]{1,128})";
    let missing = "No such schedule (`schedule_not_found`)";
    doc.post("/schedules", "Create a schedule: a cron pattern (5 fields, 6 with seconds, @hourly/@daily/@weekly/@monthly) in an IANA time zone, the task each tick enqueues or the workflow it starts, catch-up and overlap policies")
        .body::<crate::schedule::Body>(example.clone())
        .answers::<ScheduleView>(201, "The schedule, with next_fire_at and upcoming (the next 5 fire times)")
        .changes()
        .body_errors()
        .error(409, "A schedule of that name exists (`schedule_exists`)")
        .error(422, invalid)
        .unavailable();
    doc.get("/schedules", "Every schedule, by name")
        .answers::<ScheduleList>(200, "The schedules")
        .keyed()
        .unavailable();
    doc.get(
        "/schedules/{name}",
        "One schedule, with last_fired_at and last_task_id (last_workflow_id for a workflow schedule)",
    )
    .path_param("name", name)
    .answers::<ScheduleView>(200, "The schedule")
    .keyed()
    .error(404, missing)
    .unavailable();
    doc.put("/schedules/{name}", "Replace a schedule (same body as POST; the name may be left out)")
        .path_param("name", name)
        .body::<crate::schedule::Body>(example)
        .answers::<ScheduleView>(200, "The schedule as replaced; its new pattern takes effect from its next tick")
        .changes()
        .body_errors()
        .error(404, missing)
        .error(422, invalid)
        .unavailable();
    doc.delete("/schedules/{name}", "Delete a schedule; the tasks it fired stay")
        .path_param("name", name)
        .answers::<Deleted>(200, "Deleted")
        .changes()
        .error(404, missing)
        .unavailable();
    for (action, summary) in [
        ("pause", "Pause: ticks do not fire until resumed"),
        ("resume", "Resume: fires from the next tick on (ticks of the pause are not caught up)"),
    ] {
        doc.post(&format!("/schedules/{{name}}/{action}"), summary)
            .path_param("name", name)
            .answers::<ScheduleView>(200, "The schedule")
            .changes()
            .error(404, missing)
            .unavailable();
    }
    doc.post(
        "/schedules/{name}/trigger",
        "Fire once now, with a key of its own (no tick is used up; the overlap policy does not apply)",
    )
    .path_param("name", name)
    .answers::<Fired>(201, "The task enqueued or the workflow started")
    .changes()
    .error(404, missing)
    .error(422, "`invalid_schedule`: the trigger did not fire")
    .unavailable();
}

fn invalid(e: crate::task::InvalidField) -> ApiError {
    ApiError::InvalidSchedule { field: e.field, reason: e.reason }
}

/// A name from the path, checked before any lookup (a name no schedule can have is
/// simply not found).
fn path_name(raw: &str) -> Result<String, ApiError> {
    check_name(raw).map_err(|_| ApiError::ScheduleNotFound(raw.to_string()))?;
    Ok(raw.to_string())
}

async fn create<S, B>(content_type: Option<String>, body: S, state: ApiState) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    answer(
        async {
            let value = read_json_value(content_type.as_deref(), body, state.max_body_bytes).await?;
            let spec = ScheduleSpec::from_body(value, None).map_err(invalid)?;
            let s = state.schedules.create(&spec).await?;
            Ok::<_, ApiError>((StatusCode::CREATED, s.view(Utc::now())))
        }
        .await,
    )
}

async fn list(state: ApiState) -> Response {
    answer(
        async {
            let now = Utc::now();
            let all = state.schedules.list().await?;
            let schedules = all.iter().map(|s| s.view(now)).collect();
            Ok::<_, ApiError>((StatusCode::OK, ScheduleList { schedules }))
        }
        .await,
    )
}

async fn get(name: String, state: ApiState) -> Response {
    answer(
        async {
            let name = path_name(&name)?;
            Ok::<_, ApiError>((StatusCode::OK, state.schedules.get(&name).await?.view(Utc::now())))
        }
        .await,
    )
}

async fn replace<S, B>(name: String, content_type: Option<String>, body: S, state: ApiState) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    answer(
        async {
            let name = path_name(&name)?;
            let value = read_json_value(content_type.as_deref(), body, state.max_body_bytes).await?;
            let spec = ScheduleSpec::from_body(value, Some(&name)).map_err(invalid)?;
            let s = state.schedules.replace(&spec).await?;
            Ok::<_, ApiError>((StatusCode::OK, s.view(Utc::now())))
        }
        .await,
    )
}

async fn delete(name: String, state: ApiState) -> Response {
    answer(
        async {
            let name = path_name(&name)?;
            state.schedules.delete(&name).await?;
            Ok::<_, ApiError>((StatusCode::OK, Deleted { name, deleted: true }))
        }
        .await,
    )
}

/// `pause`, `resume` or `trigger`.
async fn action(name: String, action: String, state: ApiState) -> Response {
    answer(
        async {
            let name = path_name(&name)?;
            match action.as_str() {
                "pause" | "resume" => {
                    let s = state.schedules.set_paused(&name, action == "pause").await?;
                    Ok::<_, ApiError>((StatusCode::OK, Answer::Schedule(Box::new(s.view(Utc::now())))))
                }
                "trigger" => match state.schedules.trigger(&name).await? {
                    FireOutcome::Fired { started, .. } => {
                        let (task_id, workflow_id) = match started {
                            Started::Task(t) => (Some(t), None),
                            Started::Workflow(w) => (None, Some(w)),
                        };
                        Ok((StatusCode::CREATED, Answer::Fired(Fired { name, task_id, workflow_id, fired: true })))
                    }
                    other => Err(ApiError::InvalidSchedule {
                        field: "name".into(),
                        reason: format!("the trigger did not fire ({other:?})"),
                    }),
                },
                _ => Err(ApiError::RouteNotFound),
            }
        }
        .await,
    )
}
