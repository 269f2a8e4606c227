//! The HTTP API: all of the daemon's warp code, one file per resource.
//!
//! | file | owns |
//! |---|---|
//! | `health.rs` | `GET /health`, `/ready`, `/metrics` (with the per-queue gauges), `/openapi.json` |
//! | `tasks.rs` | `/tasks`: enqueue, batch, get, list, cancel, retry, log (and its live follow), trace files |
//! | `workflows.rs` | `/workflows[/{id}]`: create (through the intake), list, get, cancel, retry |
//! | `approvals.rs` | `POST /tasks/{id}/decision`: approve or reject an approval step awaiting its decision |
//! | `schedules.rs` | `/schedules[/{name}]`: create, list, get, replace, delete, pause, resume, trigger |
//! | `queues.rs` | `/queues[/{name}]`: list, get, change limits, pause, resume |
//! | `cwom.rs` | `/cwom/<kind>[/<id>]`: create, get, list, patch |
//! | `workers.rs` | the worker protocol: `/workers…`, `POST /tasks/claim`, and a worker's writes on its tasks |
//! | `mcp.rs` | `/mcp`: the MCP tools over rmcp's streamable HTTP transport (their calls come back to this API over HTTP) |
//! | `access.rs` | the API keys (full and read-only), the dashboard's session cookie, the CSRF and `Origin` guards |
//! | `body.rs` | the JSON body reader every route with a body uses |
//! | `ui/` | the dashboard under `/ui`: server-rendered pages (overview, tasks, workers, schedules, queues, issues), login, and the assets built into the binary |
//! | `error.rs` | [`ApiError`], the one mapping from every domain error to status and body |
//! | `openapi.rs` | the OpenAPI document's builder: each file above states its operations in its `describe`, with the types it reads and answers, whose schemas are derived; [`openapi_document`] joins them |
//!
//! Handlers never return a rejection for a request they understood: they answer with a
//! value or an [`ApiError`]. Only routing misses travel as rejections, and
//! [`error::recover`] turns those into the same JSON error shape.

use std::sync::Arc;

use tokio::net::TcpListener;
use warp::Filter;

use crate::control::Control;
use crate::cwom_service::Cwom;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::remote::Remote;
use crate::shutdown::Shutdown;
use crate::store::{ListenerStatus, TaskStore};
use crate::trace::TraceWriter;

pub mod access;
pub mod approvals;
pub mod body;
pub mod cwom;
pub mod error;
pub mod health;
pub mod mcp;
pub mod openapi;
pub mod queues;
pub mod schedules;
pub mod tasks;
pub mod ui;
pub mod workers;
pub mod workflows;

pub use error::ApiError;

/// What request handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Reads (get, list, counts); every change goes through a service.
    pub store: Arc<dyn TaskStore>,
    /// Where every enqueue goes.
    pub intake: Arc<Intake>,
    /// Schedules: create, change, pause, resume, trigger, delete.
    pub schedules: Arc<crate::scheduling::Schedules>,
    /// Queue controls: limits, pause, resume.
    pub queues: Arc<crate::queues::Queues>,
    /// Cancel and retry, one task or many.
    pub control: Arc<Control>,
    /// The worker protocol's service.
    pub remote: Arc<Remote>,
    /// Where this daemon's trace folders are (for the routes that read them).
    pub trace: TraceWriter,
    /// The LISTEN connection's state, when there is one (PostgreSQL).
    pub listener: Option<Arc<ListenerStatus>>,
    pub metrics: Arc<Metrics>,
    /// The work object model's service (routes under `/cwom`).
    pub cwom: Cwom,
    pub max_body_bytes: u64,
    /// The API keys and dashboard sessions: who may read and who may change.
    pub access: Arc<access::Access>,
}

/// Every route, with errors recovered into JSON.
pub fn routes(
    state: ApiState,
    mcp: Option<&mcp::Endpoint>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let mcp = match mcp {
        Some(endpoint) => endpoint.routes(&state),
        None => warp::path!("mcp").and_then(|| async { Err(warp::reject::not_found()) }).boxed(),
    };
    mcp.or(health::routes(state.clone()))
        .unify()
        .or(workers::routes(state.clone()))
        .unify()
        .or(tasks::routes(state.clone()))
        .unify()
        .or(workflows::routes(state.clone()))
        .unify()
        .or(approvals::routes(state.clone()))
        .unify()
        .or(schedules::routes(state.clone()))
        .unify()
        .or(queues::routes(state.clone()))
        .unify()
        .or(ui::routes(state.clone()))
        .unify()
        .or(cwom::routes(state))
        .unify()
        .recover(error::recover)
        .unify()
}

/// The OpenAPI document: every resource module describes its own operations (a parent
/// wiring its children, as [`routes`] does, so `openapi` itself depends on none of them).
pub fn openapi_document() -> serde_json::Value {
    let mut doc = openapi::Doc::default();
    health::describe(&mut doc);
    tasks::describe(&mut doc);
    workers::describe(&mut doc);
    cwom::describe(&mut doc);
    schedules::describe(&mut doc);
    queues::describe(&mut doc);
    workflows::describe(&mut doc);
    approvals::describe(&mut doc);
    mcp::describe(&mut doc);
    doc.finish()
}

/// Serves the API on `listener` until shutdown, then lets requests in flight finish. The
/// `/mcp` endpoint's workers are deregistered first, while the API still answers them.
pub async fn serve(listener: TcpListener, state: ApiState, shutdown: Shutdown) {
    let endpoint = match listener
        .local_addr()
        .map_err(|e| e.to_string())
        .and_then(|addr| mcp::Endpoint::new(&state, addr).map_err(|e| e.to_string()))
    {
        Ok(endpoint) => Some(endpoint),
        Err(e) => {
            tracing::error!(error = %e, "cannot set up /mcp; serving the API without it");
            None
        }
    };
    let beats = endpoint.clone().map(|e| tokio::spawn(e.keep_alive()));
    let routes = routes(state, endpoint.as_ref());
    let stop = async move {
        shutdown.stopping().await;
        if let Some(endpoint) = endpoint {
            endpoint.stop().await;
        }
    };
    warp::serve(routes).incoming(listener).graceful(stop).run().await;
    if let Some(beats) = beats {
        beats.abort();
    }
}
