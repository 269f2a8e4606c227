//! Routes under `/queues`: list, get, change limits (`PUT`), pause, resume. Each parses
//! the request, calls [`crate::queues::Queues`], and answers the queue's view; errors map
//! in `error.rs` (422 `invalid_queue` with `field`). A queue nobody configured answers its
//! defaults: a queue needs no row to be used.

use futures_util::Stream;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Buf, Filter};

use super::access::authorized;
use super::body::read_json_value;
use super::error::answer;
use super::{ApiError, ApiState};
use crate::queue::{QueueAnswer, Rate, SettingsChange, LIMIT_MAX};

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
fn view(q: crate::queue::QueueView) -> (StatusCode, QueueAnswer) {
    (StatusCode::OK, q.answer())
}

/// `GET /queues`' answer.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct QueueList {
    queues: Vec<QueueAnswer>,
}

/// The body of `PUT /queues/{name}`. [`SettingsChange::from_body`] reads it by hand, as it
/// must tell a field left out (kept) from a `null` (removed); this type is its schema.
#[derive(schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct QueueChange {
    /// Most running tasks of the queue, across every daemon and remote worker; null removes it.
    #[schemars(range(min = 1, max = LIMIT_MAX))]
    concurrency: Option<i64>,
    /// Most running tasks per `concurrency_key` in the queue (tasks without a key are held
    /// only to `concurrency`); null removes it.
    #[schemars(range(min = 1, max = LIMIT_MAX))]
    key_concurrency: Option<i64>,
    /// Null removes it.
    rate: Option<Rate>,
}

/// The `/queues` routes in the OpenAPI document.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    let name = "Queue name (1 to 128 characters, no NUL)";
    let bad_name = "`invalid_queue`: a bad queue name (`field` is `name`)";
    doc.get(
        "/queues",
        "Every queue with a setting or a live task, by name: pause, limits, and its queued, running and waiting tasks",
    )
    .answers::<QueueList>(200, "The queues")
    .keyed()
    .unavailable();
    doc.get("/queues/{name}", "One queue (the defaults and zero counts for a queue nobody has used)")
        .path_param("name", name)
        .answers::<QueueAnswer>(200, "The queue, as it is now")
        .keyed()
        .error(422, bad_name)
        .unavailable();
    doc.put("/queues/{name}", "Change the queue's limits, enforced in every claim across the fleet from the next one on; a field left out is kept, null removes it")
        .path_param("name", name)
        .body::<QueueChange>(serde_json::json!({ "concurrency": 4, "key_concurrency": 1, "rate": { "limit": 10, "per_s": 60 } }))
        .answers::<QueueAnswer>(200, "The queue, as it is now")
        .changes()
        .body_errors()
        .error(422, "`invalid_queue` naming the `field`: a limit outside 1..1000000, a rate without limit (1..100000) or per_s (above 0, at most 86400), an unknown field, or a bad queue name")
        .unavailable();
    for (action, summary) in [
        ("pause", "Pause: no daemon or worker claims from the queue until it is resumed; its running tasks go on"),
        ("resume", "Resume: the queue's tasks are claimed again at once"),
    ] {
        doc.post(&format!("/queues/{{name}}/{action}"), summary)
            .path_param("name", name)
            .answers::<QueueAnswer>(200, "The queue, as it is now")
            .changes()
            .error(422, bad_name)
            .unavailable();
    }
}

async fn list(state: ApiState) -> Response {
    answer(
        async {
            let queues = state.queues.list().await?.iter().map(|q| q.answer()).collect();
            Ok::<_, ApiError>((StatusCode::OK, QueueList { queues }))
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
