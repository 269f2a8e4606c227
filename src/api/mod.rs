//! The HTTP API: warp filters ([`routes`]), their handlers ([`handlers`]) and the one
//! error-to-HTTP mapping ([`error`]).
//!
//! Handlers never return a rejection for a request they understood: they answer with a
//! task or an [`error::ApiError`]. Only routing misses travel as rejections, and
//! [`error::recover`] turns those into the same JSON error shape.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use warp::Filter;

use crate::cwom::Cwom;
use crate::handlers::Registry;
use crate::metrics::Metrics;
use crate::notifier::ListenerStatus;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::worker::InFlight;

pub mod error;
pub mod handlers;
pub mod openapi;

pub use error::ApiError;

/// What request handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// Known task types: the API refuses others.
    pub registry: Arc<Registry>,
    /// Wakes a worker in this same process after an enqueue (no poll wait).
    pub wake: Option<Arc<Notify>>,
    /// Tasks the worker in this same process runs, so a cancel can stop one at once.
    pub in_flight: Option<Arc<InFlight>>,
    /// The LISTEN connection's state, when there is one (PostgreSQL).
    pub listener: Option<Arc<ListenerStatus>>,
    pub metrics: Arc<Metrics>,
    /// The work object model's service (routes under `/cwom`).
    pub cwom: Cwom,
    pub max_body_bytes: u64,
    pub api_key: Option<Arc<str>>,
}

/// Every route, with errors recovered into JSON.
pub fn routes(
    state: ApiState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = handlers::authorized(state.api_key.clone());

    let health = warp::path!("health").and(warp::get()).then(handlers::health).boxed();
    let ready = warp::path!("ready").and(warp::get()).and(with_state.clone()).then(handlers::ready).boxed();
    let metrics = warp::path!("metrics").and(warp::get()).and(with_state.clone()).then(handlers::metrics).boxed();
    let openapi = warp::path!("openapi.json").and(warp::get()).map(handlers::openapi).boxed();
    // What both enqueue routes read: content type, trace id, the body as a stream.
    let intake = warp::post()
        .and(auth.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("x-trace-id"))
        .and(warp::body::stream());
    let enqueue =
        warp::path!("tasks" / "enqueue").and(intake.clone()).and(with_state.clone()).then(handlers::enqueue).boxed();
    let enqueue_batch = warp::path!("tasks" / "enqueue_batch")
        .and(intake)
        .and(with_state.clone())
        .then(handlers::enqueue_batch)
        .boxed();
    let get = warp::path!("tasks" / String)
        .and(warp::get())
        .and(auth.clone())
        .and(with_state.clone())
        .then(handlers::get)
        .boxed();
    let list = warp::path!("tasks")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .and(with_state.clone())
        .then(handlers::list)
        .boxed();
    let cwom = crate::cwom::api::routes(state.cwom.clone(), auth.clone(), state.max_body_bytes);
    let cancel = warp::path!("tasks" / String / "cancel")
        .and(warp::post())
        .and(auth)
        .and(with_state)
        .then(handlers::cancel)
        .boxed();

    health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .or(enqueue)
        .unify()
        .or(enqueue_batch)
        .unify()
        .or(get)
        .unify()
        .or(list)
        .unify()
        .or(cancel)
        .unify()
        .or(cwom)
        .unify()
        .recover(error::recover)
        .unify()
}

/// Serves the API on `listener` until shutdown, then lets requests in flight finish.
pub async fn serve(listener: TcpListener, state: ApiState, shutdown: Shutdown) {
    warp::serve(routes(state)).incoming(listener).graceful(async move { shutdown.stopping().await }).run().await;
}
