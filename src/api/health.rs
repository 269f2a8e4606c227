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

/// `GET /health`'s answer.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct Health {
    /// Always `ok`: the process answers.
    status: &'static str,
}

/// `GET /ready`'s answer while the store answers.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct Ready {
    /// `ready`.
    status: &'static str,
    /// `ok`.
    store: &'static str,
    /// Whether the LISTEN connection is up; null without one (SQLite).
    listener_connected: Option<bool>,
}

/// The four routes in the OpenAPI document.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    doc.get("/health", "Liveness: the process answers").answers::<Health>(200, "Alive");
    doc.get("/ready", "Readiness: the store answers")
        .answers::<Ready>(200, "Ready")
        .error(503, "Store unavailable (`store_unavailable`), with `store` and `listener_connected`");
    doc.get("/metrics", "Prometheus/OpenMetrics text: task counts, latencies, per-queue running, limit and paused")
        .answers_as(200, "Metrics", Some("application/openmetrics-text"));
    doc.get("/openapi.json", "This document")
        .answers::<serde_json::Map<String, serde_json::Value>>(200, "The OpenAPI document");
}

async fn health() -> Response {
    warp::reply::json(&Health { status: "ok" }).into_response()
}

async fn ready(state: ApiState) -> Response {
    let listener = state.listener.as_ref().map(|l| l.is_connected());
    match state.store.ping().await {
        Ok(()) => {
            warp::reply::json(&Ready { status: "ready", store: "ok", listener_connected: listener }).into_response()
        }
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
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| super::openapi_document().to_string());
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
