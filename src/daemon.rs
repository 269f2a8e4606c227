//! The daemon: builds the parts from a [`Config`] and wires them together.
//!
//! It does none of their work. [`start`] opens the database (waiting for a PostgreSQL that
//! is still starting), checks the trace directory, binds the HTTP listener, and spawns
//! the parts of the chosen [`Role`]: the database's listener feeding the wake-up fan-out
//! and the maintenance services in every role, the API (with the intake, control and
//! worker-protocol services) in `serve` and `api`, the in-process worker in `serve` and
//! `worker`.
//! [`Running::wait`] returns once a shutdown has drained them all.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::attempt::{Lifecycle, RetryPolicy};
use crate::config::Config;
use crate::control::Control;
use crate::cwom_service::Cwom;
use crate::handlers::Registry;
use crate::intake::{Intake, TaskTypes};
use crate::maintenance::{Expirer, Maintenance, Rescuer, Ticker};
use crate::metrics::Metrics;
use crate::remote::{Remote, RemoteSettings};
use crate::scheduling::Schedules;
use crate::shutdown::Shutdown;
use crate::store::{Backend, ListenerStatus, StoreError, TaskStore};
use crate::task::WorkerId;
use crate::trace::TraceWriter;
use crate::tunables::{STARTUP_RETRY_CAP, STARTUP_RETRY_FIRST};
use crate::wakeups::Fanout;
use crate::worker::heartbeat::heartbeat_interval;
use crate::worker::{Worker, WorkerSettings};

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
    #[error(transparent)]
    Executors(#[from] crate::handlers::SetupError),
    #[error("JCT_SCHEDULES_FILE={path}: {reason}")]
    SchedulesFile { path: String, reason: String },
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
    let mut delay = STARTUP_RETRY_FIRST;
    let mut attempt = 1;
    loop {
        match Backend::open(&config.database, config.db_pool_size).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_unavailable() && config.database.is_postgres() => {
                let cause = crate::store::error::chain(&e);
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
        delay = (delay * 2).min(STARTUP_RETRY_CAP);
        attempt += 1;
    }
}

/// Why `worker --server` stopped other than by a shutdown.
#[derive(Debug, thiserror::Error)]
pub enum HttpWorkerError {
    #[error(transparent)]
    Executors(#[from] crate::handlers::SetupError),
    #[error("--server {0}")]
    Run(#[from] crate::http_worker::RunError),
}

/// Runs `worker --server URL`: this binary's handlers for a JCT server, over HTTP only.
pub async fn run_http_worker(config: &Config, server: &str, shutdown: Shutdown) -> Result<(), HttpWorkerError> {
    let registry = Arc::new(Registry::from_config(&config.executors)?);
    let settings = crate::http_worker::Settings {
        server: server.to_string(),
        api_key: config.api_key.clone(),
        name: format!("{}-{}", crate::task::host_name(), std::process::id()),
        slots: config.workers,
        shutdown_grace: config.shutdown_grace,
        stop_grace: crate::worker::stop_grace(config.executors.kill_grace),
    };
    crate::http_worker::run(settings, registry, shutdown).await?;
    Ok(())
}

/// Starts the parts `role` asks for.
pub async fn start(config: &Config, role: Role, shutdown: Shutdown) -> Result<Running, StartError> {
    let registry = Arc::new(Registry::from_config(&config.executors)?);
    let backend = open_store(config, &shutdown).await?;
    start_with(config, role, &backend, registry, shutdown).await
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
    let cwom = Cwom::new(backend.cwom());
    let metrics = Arc::new(Metrics::new());
    let wake = Fanout::new();
    // A store without a listener (SQLite) announces freed slots of limited queues here.
    backend.wake_locally(wake.sink());
    let mut parts = Vec::new();

    // Trace folders are written by whoever runs attempts: the in-process worker, and the
    // API for remote workers' attempts.
    let trace = if config.trace {
        TraceWriter::new(&config.trace_dir)
            .map_err(|source| StartError::TraceDir { path: config.trace_dir.display().to_string(), source })?
    } else {
        TraceWriter::disabled()
    };
    let retry = RetryPolicy { base: config.retry_base, cap: config.retry_cap };
    let lifecycle = Arc::new(Lifecycle::new(trace.clone(), cwom.clone(), retry, metrics.clone()));
    let daemon_id = WorkerId::generate();

    // The database's notifications feed the fan-out.
    let listener_status = match backend.listener() {
        Some(listener) if config.listen => {
            let status = Arc::new(ListenerStatus::default());
            let (sink, status2, stop) = (wake.sink(), status.clone(), shutdown.clone());
            parts.push(tokio::spawn(async move { listener.run(sink, status2, stop).await }));
            Some(status)
        }
        _ => None,
    };

    // Known task types: the handlers compiled in, those declared, and registered workers'.
    let fixed = registry.types().into_iter().map(String::from).chain(config.task_types.iter().cloned());
    let types = Arc::new(TaskTypes::new(fixed, backend.workers()));
    // Every role has the intake: the schedule ticker fires through it.
    let intake = Arc::new(Intake::new(
        store.clone(),
        backend.schedules(),
        types.clone(),
        registry.clone(),
        cwom.clone(),
        wake.clone(),
        metrics.clone(),
    ));
    let schedules = Arc::new(Schedules::new(backend.schedules(), intake.clone()));
    if let Some(file) = &config.schedules_file {
        let report = schedules
            .apply_file(&file.schedules)
            .await
            .map_err(|e| StartError::SchedulesFile { path: file.path.display().to_string(), reason: e.to_string() })?;
        tracing::info!(
            path = %file.path.display(),
            created = report.created.len(),
            updated = report.updated.len(),
            removed = report.removed.len(),
            left_to_the_api = ?report.skipped,
            "schedules file applied"
        );
    }

    // Every role keeps the table honest; the leadership makes one daemon of the fleet do it.
    // Every daemon ticks the schedules (exactly once comes from the data).
    let maintenance = Maintenance::new(store.clone(), daemon_id.0.clone())
        .with(Arc::new(Rescuer::new(store.clone(), lifecycle.clone(), wake.clone(), config.lease)))
        .with(Arc::new(Expirer::new(store.clone(), lifecycle.clone(), wake.clone())))
        .with_ticker(Ticker::new(schedules.clone()));
    parts.push(tokio::spawn(maintenance.run(shutdown.clone())));

    if role.runs_api() {
        let remote_settings =
            RemoteSettings { lease: config.lease, heartbeat_interval: heartbeat_interval(config.lease) };
        let remote = Arc::new(Remote::new(
            store.clone(),
            backend.workers(),
            lifecycle.clone(),
            types,
            remote_settings,
            wake.clone(),
            shutdown.clone(),
        ));
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| StartError::Bind { addr: config.bind, source })?;
        let addr = listener.local_addr().ok();
        let state = ApiState {
            store: store.clone(),
            intake,
            schedules,
            queues: Arc::new(crate::queues::Queues::new(backend.queues(), wake.clone())),
            control: Arc::new(Control::new(store.clone(), wake.clone(), lifecycle.clone())),
            remote,
            trace,
            listener: listener_status,
            cwom,
            metrics: metrics.clone(),
            max_body_bytes: config.max_body_bytes,
            access: Arc::new(api::access::Access::new(config.api_key.as_deref(), config.readonly_api_key.as_deref())),
        };
        tracing::info!(addr = %addr.unwrap_or(config.bind), "HTTP API listening");
        parts.push(tokio::spawn(api::serve(listener, state, shutdown.clone())));
        if role.runs_worker() {
            start_worker(config, store, registry, lifecycle, daemon_id, metrics, wake, &shutdown, &mut parts);
        }
        return Ok(Running { addr, parts });
    }
    if role.runs_worker() {
        start_worker(config, store, registry, lifecycle, daemon_id, metrics, wake, &shutdown, &mut parts);
    }
    Ok(Running { addr: None, parts })
}

/// The in-process worker: claims the types this binary has handlers for.
#[allow(clippy::too_many_arguments)]
fn start_worker(
    config: &Config,
    store: Arc<dyn TaskStore>,
    registry: Arc<Registry>,
    lifecycle: Arc<Lifecycle>,
    id: WorkerId,
    metrics: Arc<Metrics>,
    wake: Arc<Fanout>,
    shutdown: &Shutdown,
    parts: &mut Vec<JoinHandle<()>>,
) {
    let settings = WorkerSettings {
        id,
        slots: config.workers,
        poll_interval: config.poll_interval,
        lease: config.lease,
        shutdown_grace: config.shutdown_grace,
        stop_grace: crate::worker::stop_grace(config.executors.kill_grace),
    };
    let worker = Arc::new(Worker::new(store, registry, lifecycle, settings, metrics, wake));
    tracing::info!(
        worker_id = %worker.settings.id,
        slots = config.workers,
        store = %config.database.redacted(),
        traces = %if config.trace { config.trace_dir.display().to_string() } else { "off".into() },
        "worker started"
    );
    parts.push(tokio::spawn(worker.run(shutdown.clone())));
}
