//! Routes under `/schedules`: create, list, get, replace, delete, pause, resume, trigger.
//! Each parses the request, calls [`crate::scheduling::Schedules`], and shapes the answer
//! (a schedule's view: its body, `next_fire_at`, `upcoming`, the last fire); errors map in
//! `error.rs` (422 `invalid_schedule` with `field`, 409 `schedule_exists`, 404
//! `schedule_not_found`).

use chrono::Utc;
use futures_util::Stream;
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Buf, Filter};

use super::access::authorized;
use super::body::read_json_value;
use super::error::answer;
use super::{ApiError, ApiState};
use crate::schedule::{check_name, FireOutcome, ScheduleSpec};

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
            let views: Vec<Value> = all.iter().map(|s| s.view(now)).collect();
            Ok::<_, ApiError>((StatusCode::OK, json!({ "schedules": views })))
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
            Ok::<_, ApiError>((StatusCode::OK, json!({ "name": name, "deleted": true })))
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
                    Ok::<_, ApiError>((StatusCode::OK, s.view(Utc::now())))
                }
                "trigger" => match state.schedules.trigger(&name).await? {
                    FireOutcome::Fired { task_id, .. } => {
                        Ok((StatusCode::CREATED, json!({ "name": name, "task_id": task_id, "fired": true })))
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
