//! `GET /health`, `/ready`, `/metrics` and `/openapi.json`: the routes operators and
//! orchestrators poll.

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::ApiState;

/// The four routes (none needs the API key).
pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    let health = warp::path!("health").and(warp::get()).then(health);
    let ready = warp::path!("ready").and(warp::get()).and(with_state.clone()).then(ready);
    let metrics = warp::path!("metrics").and(warp::get()).and(with_state).then(metrics);
    let openapi = warp::path!("openapi.json").and(warp::get()).map(openapi);
    health.or(ready).unify().or(metrics).unify().or(openapi).unify().boxed()
}

async fn health() -> Response {
    warp::reply::json(&json!({ "status": "ok" })).into_response()
}

async fn ready(state: ApiState) -> Response {
    let listener = state.listener.as_ref().map(|l| l.is_connected());
    match state.store.ping().await {
        Ok(()) => warp::reply::json(&json!({ "status": "ready", "store": "ok", "listener_connected": listener }))
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let body = json!({
                "error": "store_unavailable",
                "message": "the task store does not answer",
                "store": "unavailable",
                "listener_connected": listener,
            });
            warp::reply::with_status(warp::reply::json(&body), StatusCode::SERVICE_UNAVAILABLE).into_response()
        }
    }
}

/// `GET /openapi.json`: built once, served from memory.
fn openapi() -> Response {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| super::openapi::document().to_string());
    let mut res = DOCUMENT.as_str().into_response();
    res.headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/json"));
    res
}

/// `GET /metrics`: refreshes the store-derived gauges (at most every few seconds) and
/// renders everything.
async fn metrics(state: ApiState) -> Response {
    if state.metrics.status_counts_due() {
        match state.store.count_by_status().await {
            Ok(counts) => state.metrics.set_status_counts(&counts),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count tasks by status"),
        }
        match state.store.queued_by_type().await {
            Ok(counts) => state.metrics.set_queued_by_type(&counts),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count queued tasks by type"),
        }
        // One query for every queue (the queues table and the live tasks grouped by queue).
        match state.queues.list().await {
            Ok(queues) => state.metrics.set_queues(&queues),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the queues"),
        }
    }
    state.metrics.set_listener_connected(state.listener.as_ref().is_some_and(|l| l.is_connected()));
    let mut res = state.metrics.render().into_response();
    res.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}
