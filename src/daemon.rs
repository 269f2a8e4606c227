//! The daemon: builds the parts from a [`Config`] and wires them together.
//!
//! It does none of their work. [`start`] opens the store (waiting for a PostgreSQL that
//! is still starting), checks the trace directory, binds the HTTP listener, and spawns
//! the API, the notifier and the worker for the chosen [`Role`]. [`Running::wait`] returns
//! once a shutdown has drained them all.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::config::{Config, DatabaseUrl};
use crate::cwom::Cwom;
use crate::handlers::Registry;
use crate::metrics::Metrics;
use crate::notifier::{self, ListenerStatus};
use crate::shutdown::Shutdown;
use crate::store::{Backend, StoreError};
use crate::task::WorkerId;
use crate::trace::TraceWriter;
use crate::worker::{InFlight, Worker, WorkerSettings, MAX_UNFINISHED};

/// Which parts this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and worker in one process (the default).
    Serve,
    /// HTTP only.
    Api,
    /// Worker only: no HTTP listener.
    Worker,
}

impl Role {
    fn runs_api(self) -> bool {
        matches!(self, Role::Serve | Role::Api)
    }
    fn runs_worker(self) -> bool {
        matches!(self, Role::Serve | Role::Worker)
    }
}

/// Why the daemon could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL={url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("JCT_TRACE_DIR={path}: cannot write trace folders there: {source}")]
    TraceDir { path: String, source: std::io::Error },
    #[error("JCT_BIND={addr}: cannot listen: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("stopped before the store became reachable")]
    Interrupted,
}

/// A started daemon.
pub struct Running {
    addr: Option<SocketAddr>,
    parts: Vec<JoinHandle<()>>,
}

impl Running {
    /// The address the API listens on (useful with `JCT_BIND=…:0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Waits until every part has stopped.
    pub async fn wait(self) {
        for part in self.parts {
            if let Err(e) = part.await {
                tracing::error!(error = %e, "a daemon part ended abnormally");
            }
        }
    }
}

/// Opens the store, retrying while the database is unreachable (a container that starts
/// before its database must not crash-loop). Other errors stop start-up at once.
pub async fn open_store(config: &Config, shutdown: &Shutdown) -> Result<Backend, StartError> {
    let pool_size = config.workers.max(8) + 4;
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match Backend::open(&config.database, pool_size).await {
            Ok(s) => return Ok(s),
            Err(StoreError::Unavailable(cause)) if config.database.is_postgres() => {
                tracing::warn!(
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    %cause,
                    "database not reachable yet"
                );
            }
            Err(source) => return Err(StartError::Store { url: config.database.redacted(), source }),
        }
        tokio::select! {
            _ = shutdown.stopping() => return Err(StartError::Interrupted),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

/// Starts the parts `role` asks for.
pub async fn start(config: &Config, role: Role, shutdown: Shutdown) -> Result<Running, StartError> {
    let backend = open_store(config, &shutdown).await?;
    start_with(config, role, &backend, Arc::new(Registry::builtin()), shutdown).await
}

/// Starts the parts `role` asks for on an already open database and a given registry.
pub async fn start_with(
    config: &Config,
    role: Role,
    backend: &Backend,
    registry: Arc<Registry>,
    shutdown: Shutdown,
) -> Result<Running, StartError> {
    let store = backend.tasks();
    let wake = Arc::new(Notify::new());
    let in_flight = Arc::new(InFlight::default());
    let metrics = Arc::new(Metrics::new());
    let mut parts = Vec::new();

    let trace = if !role.runs_worker() || !config.trace {
        TraceWriter::disabled()
    } else {
        TraceWriter::new(&config.trace_dir)
            .map_err(|source| StartError::TraceDir { path: config.trace_dir.display().to_string(), source })?
    };

    let listener_status = match (&config.database, role.runs_worker() && config.listen) {
        (DatabaseUrl::Postgres(url), true) => {
            let status = Arc::new(ListenerStatus::default());
            parts.push(tokio::spawn(notifier::run(
                url.clone(),
                wake.clone(),
                in_flight.clone(),
                status.clone(),
                shutdown.clone(),
            )));
            Some(status)
        }
        _ => None,
    };

    let mut addr = None;
    if role.runs_api() {
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| StartError::Bind { addr: config.bind, source })?;
        addr = listener.local_addr().ok();
        let state = ApiState {
            store: store.clone(),
            registry: registry.clone(),
            wake: role.runs_worker().then(|| wake.clone()),
            in_flight: role.runs_worker().then(|| in_flight.clone()),
            listener: listener_status,
            cwom: Cwom::new(backend),
            metrics: metrics.clone(),
            max_body_bytes: config.max_body_bytes,
            api_key: config.api_key.as_deref().map(Arc::from),
        };
        tracing::info!(addr = %addr.unwrap_or(config.bind), "HTTP API listening");
        parts.push(tokio::spawn(api::serve(listener, state, shutdown.clone())));
    }

    if role.runs_worker() {
        let worker = Arc::new(Worker {
            store,
            registry,
            trace,
            settings: WorkerSettings {
                id: WorkerId::generate(),
                slots: config.workers,
                poll_interval: config.poll_interval,
                lease: config.lease,
                shutdown_grace: config.shutdown_grace,
            },
            wake,
            in_flight,
            unfinished: Arc::new(Semaphore::new(MAX_UNFINISHED)),
            run_time_ewma_us: AtomicU64::new(u64::MAX),
            metrics,
            cwom: Cwom::new(backend),
        });
        tracing::info!(
            worker_id = %worker.settings.id,
            slots = config.workers,
            store = %config.database.redacted(),
            traces = %if config.trace { config.trace_dir.display().to_string() } else { "off".into() },
            "worker started"
        );
        parts.push(tokio::spawn(worker.run(shutdown)));
    }
    Ok(Running { addr, parts })
}
