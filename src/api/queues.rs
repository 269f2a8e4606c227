//! Routes under `/queues`: list, get, change limits (`PUT`), pause, resume. Each parses
//! the request, calls [`crate::queues::Queues`], and answers the queue's view; errors map
//! in `error.rs` (422 `invalid_queue` with `field`). A queue nobody configured answers its
//! defaults: a queue needs no row to be used.

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
use crate::queue::SettingsChange;

/// Every `/queues` route, behind the API key (the read-only key may only GET).
pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let auth = authorized(state.access.clone());
    let with_state = warp::any().map(move || state.clone());
    let body = warp::header::optional::<String>("content-type").and(warp::body::stream());
    let list = warp::path!("queues").and(warp::get()).and(auth.clone()).and(with_state.clone()).then(list);
    let get = warp::path!("queues" / String).and(warp::get()).and(auth.clone()).and(with_state.clone()).then(get);
    let change = warp::path!("queues" / String)
        .and(warp::put())
        .and(auth.clone())
        .and(body)
        .and(with_state.clone())
        .then(change);
    let action = warp::path!("queues" / String / String).and(warp::post()).and(auth).and(with_state).then(action);
    list.or(get).unify().or(change).unify().or(action).unify().boxed()
}

/// A queue's view, the answer of every route but the list.
fn view(q: crate::queue::QueueView) -> (StatusCode, Value) {
    (StatusCode::OK, q.to_json())
}

async fn list(state: ApiState) -> Response {
    answer(
        async {
            let queues: Vec<Value> = state.queues.list().await?.iter().map(|q| q.to_json()).collect();
            Ok::<_, ApiError>((StatusCode::OK, json!({ "queues": queues })))
        }
        .await,
    )
}

async fn get(name: String, state: ApiState) -> Response {
    answer(async { Ok::<_, ApiError>(view(state.queues.get(&crate::url::decode(&name)).await?)) }.await)
}

async fn change<S, B>(name: String, content_type: Option<String>, body: S, state: ApiState) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    answer(
        async {
            let name = crate::url::decode(&name);
            let value = read_json_value(content_type.as_deref(), body, state.max_body_bytes).await?;
            let change = SettingsChange::from_body(&value)
                .map_err(|f| ApiError::InvalidQueue { field: f.field, reason: f.reason })?;
            Ok::<_, ApiError>(view(state.queues.change(&name, &change).await?))
        }
        .await,
    )
}

async fn action(name: String, action: String, state: ApiState) -> Response {
    answer(
        async {
            let name = crate::url::decode(&name);
            let paused = match action.as_str() {
                "pause" => true,
                "resume" => false,
                _ => return Err(ApiError::RouteNotFound),
            };
            Ok::<_, ApiError>(view(state.queues.set_paused(&name, paused).await?))
        }
        .await,
    )
}
