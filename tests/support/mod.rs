//! Shared test support: throwaway databases, real daemon processes, waiting on state.
#![allow(dead_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devops_control_tower::store::{Backend, PgStore, SqliteStore, TaskStore};
use tempfile::TempDir;
use tokio_postgres::NoTls;

pub mod remote;

pub const BIN: &str = env!("CARGO_BIN_EXE_devops-control-tower");

/// The cluster `make test` started (tests/support/with-postgres.sh).
pub fn pg_base_url() -> String {
    std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()).expect(
        "TEST_DATABASE_URL is not set: run the tests with `make test`, which starts a throwaway \
         PostgreSQL (or set TEST_DATABASE_URL to a server you own)",
    )
}

fn with_db_name(url: &str, name: &str) -> String {
    let (base, rest) = url.rsplit_once('/').expect("TEST_DATABASE_URL has a /database part");
    let query = rest.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{base}/{name}{query}")
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

const TEMPLATE: &str = "jct_template";

/// A database of its own for one test, cloned from a migrated template; dropped on drop.
pub struct PgDb {
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDb {
    pub async fn new() -> PgDb {
        let admin_url = pg_base_url();
        let admin = admin_client(&admin_url).await;
        // One test binary at a time builds the template; the others wait for it.
        admin.execute("SELECT pg_advisory_lock(7411)", &[]).await.unwrap();
        let exists =
            admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&TEMPLATE]).await.unwrap().is_some();
        if !exists {
            admin.batch_execute(&format!("CREATE DATABASE {TEMPLATE}_build")).await.unwrap();
            devops_control_tower::store::postgres::migrate(&with_db_name(&admin_url, &format!("{TEMPLATE}_build")))
                .await
                .expect("migrating the template database");
            admin.batch_execute(&format!("ALTER DATABASE {TEMPLATE}_build RENAME TO {TEMPLATE}")).await.unwrap();
        }
        admin.execute("SELECT pg_advisory_unlock(7411)", &[]).await.unwrap();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut tries = 0;
        loop {
            match admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}")).await {
                Ok(()) => break,
                // Another test is cloning the template at this instant.
                Err(e) if tries < 50 && e.to_string().contains("being accessed") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 + tries * 5)).await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        PgDb { url: with_db_name(&admin_url, &name), name, admin_url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.url).await
    }

    pub async fn store(&self) -> Arc<dyn TaskStore> {
        self.backend().await.tasks()
    }

    pub async fn backend(&self) -> Backend {
        Backend::postgres(PgStore::connect(&self.url, 8).await.expect("PgStore::connect"))
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async context: a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url, NoTls).await {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            })
        })
        .join();
    }
}

/// A fresh SQLite file in its own temp dir.
pub struct SqliteDb {
    pub dir: TempDir,
    pub path: PathBuf,
}

impl SqliteDb {
    pub fn new() -> SqliteDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        SqliteDb { dir, path }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    pub async fn store(&self) -> Arc<dyn TaskStore> {
        self.backend().await.tasks()
    }

    pub async fn backend(&self) -> Backend {
        Backend::sqlite(SqliteStore::open(&self.path).await.expect("SqliteStore::open"))
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A real daemon process, killed on drop if still running.
pub struct DaemonProcess {
    child: Child,
    pub addr: SocketAddr,
    pub workdir: PathBuf,
    pub trace_dir: PathBuf,
    pub stderr_path: PathBuf,
    _tmp: Option<TempDir>,
}

pub struct Spawn<'a> {
    pub args: Vec<&'a str>,
    pub env: Vec<(&'a str, String)>,
    /// Run in this directory instead of a fresh temp dir.
    pub workdir: Option<PathBuf>,
    /// Wait for the API to listen (false for the `worker` role).
    pub wait_api: bool,
    /// Wait for this stderr text instead (start-up still in progress).
    pub wait_line: Option<&'a str>,
}

impl<'a> Spawn<'a> {
    pub fn new() -> Self {
        Spawn { args: Vec::new(), env: Vec::new(), workdir: None, wait_api: true, wait_line: None }
    }

    pub fn env(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.env.push((k, v.into()));
        self
    }

    pub fn arg(mut self, a: &'a str) -> Self {
        self.args.push(a);
        self
    }

    pub fn workdir(mut self, p: &Path) -> Self {
        self.workdir = Some(p.to_path_buf());
        self
    }

    pub fn no_api(mut self) -> Self {
        self.wait_api = false;
        self
    }

    /// Returns as soon as stderr shows `line` (the API may not listen yet).
    pub fn until_line(mut self, line: &'a str) -> Self {
        self.wait_line = Some(line);
        self
    }

    /// Starts the binary and waits until it logs that its API listens (or, without
    /// an API, that its worker started).
    pub fn start(self) -> DaemonProcess {
        let (tmp, workdir) = match self.workdir {
            Some(p) => (None, p),
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let stderr_path = workdir.join(format!("daemon-{}.stderr", uuid::Uuid::new_v4().simple()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .current_dir(&workdir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JCT_BIND", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let trace_dir = self
            .env
            .iter()
            .find(|(k, _)| *k == "JCT_TRACE_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| workdir.join("logs"));
        let child = cmd.spawn().expect("spawning the daemon binary");
        let mut d =
            DaemonProcess { child, addr: "127.0.0.1:0".parse().unwrap(), workdir, trace_dir, stderr_path, _tmp: tmp };
        let marker = match (self.wait_line, self.wait_api) {
            (Some(line), _) => line,
            (None, true) => "HTTP API listening",
            (None, false) => "worker started",
        };
        let start = Instant::now();
        loop {
            let log = d.stderr();
            if let Some(line) = log.lines().find(|l| l.contains(marker)) {
                if self.wait_api && self.wait_line.is_none() {
                    d.addr = listening_addr(line).unwrap_or_else(|| panic!("no address in: {line}"));
                }
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("daemon exited during start-up with {status}; stderr:\n{log}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "daemon did not start in 30 s; stderr:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The address in the daemon's "HTTP API listening" line, text or JSON.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) {
        return entry["addr"].as_str()?.parse().ok();
    }
    line.split("addr=").nth(1)?.split_whitespace().next()?.parse().ok()
}

impl DaemonProcess {
    /// Learns the API address once the daemon logs it (after [`Spawn::until_line`]).
    pub fn wait_listening(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Some(addr) =
                self.stderr().lines().find(|l| l.contains("HTTP API listening")).and_then(listening_addr)
            {
                self.addr = addr;
                return;
            }
            assert!(start.elapsed() < timeout, "the API did not listen within {timeout:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Sends a real signal (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("running kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < timeout, "daemon did not exit within {timeout:?}; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client for the tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Enqueues over HTTP and returns the new task's id.
pub async fn enqueue(base: &str, body: serde_json::Value) -> String {
    let res = http().post(format!("{base}/tasks/enqueue")).json(&body).send().await.unwrap();
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status, 201, "enqueue answered {status}: {body}");
    body["task_id"].as_str().unwrap().to_string()
}

/// Checks `value` against the JSON Schema (2020-12) `schema`, itself first checked against its
/// meta-schema: every error, with where in the value it is, or Ok.
pub fn schema_check(schema: &serde_json::Value, value: &serde_json::Value, at: &str) -> Result<(), String> {
    jsonschema::meta::validate(schema).map_err(|e| format!("{at}: not a valid schema: {e} ({schema})"))?;
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("{at}: schema refused: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{}: {e}", e.instance_path())).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{at}: {} (value {value})", errors.join("; ")))
    }
}

/// Fetches a task over HTTP.
pub async fn get_task(base: &str, id: &str) -> serde_json::Value {
    let res = http().get(format!("{base}/tasks/{id}")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Waits until the task reaches `status` over HTTP, and returns it.
pub async fn wait_status(base: &str, id: &str, status: &str, timeout: Duration) -> serde_json::Value {
    wait_for(&format!("task {id} to be {status}"), timeout, || async {
        let t = get_task(base, id).await;
        (t["status"] == status).then_some(t)
    })
    .await
}

/// A daemon running inside the test process (API + worker), on `store`.
pub struct InProcess {
    pub base: String,
    pub shutdown: devops_control_tower::shutdown::Shutdown,
    pub trace: TempDir,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.trigger_hard();
    }
}

/// Starts the daemon in-process on `backend`, bound to a free port, with `extra`
/// configuration and the given handlers.
pub async fn start_in_process(
    backend: &Backend,
    db_url: &str,
    extra: &[(&str, &str)],
    registry: devops_control_tower::handlers::Registry,
) -> InProcess {
    use devops_control_tower::{config::Config, daemon, shutdown::Shutdown};
    let trace = tempfile::tempdir().unwrap();
    let mut vars: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", db_url.to_string()),
        ("JCT_BIND", "127.0.0.1:0".into()),
        ("JCT_TRACE_DIR", trace.path().display().to_string()),
        ("JCT_LISTEN", "off".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let shutdown = Shutdown::new();
    let running =
        daemon::start_with(&config, daemon::Role::Serve, backend, Arc::new(registry), shutdown.clone()).await.unwrap();
    let base = format!("http://{}", running.local_addr().unwrap());
    InProcess { base, shutdown, trace }
}

/// The store under test, by name, with what keeps it alive.
pub enum TestDb {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl TestDb {
    pub async fn new(kind: &str) -> TestDb {
        match kind {
            "sqlite" => TestDb::Sqlite(SqliteDb::new()),
            "postgres" => TestDb::Postgres(PgDb::new().await),
            other => panic!("unknown store kind {other}"),
        }
    }

    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite(db) => db.url(),
            TestDb::Postgres(db) => db.url.clone(),
        }
    }

    pub async fn store(&self) -> Arc<dyn TaskStore> {
        self.backend().await.tasks()
    }

    pub async fn backend(&self) -> Backend {
        match self {
            TestDb::Sqlite(db) => db.backend().await,
            TestDb::Postgres(db) => db.backend().await,
        }
    }
}

/// Runs `pg_ctl <action>` on the test cluster (`restart`, `stop`, `start`).
pub fn pg_ctl(action: &str) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run through `make test`"));
    let (ctl, log, opts) = (var("TEST_PG_CTL"), var("TEST_PG_LOG"), var("TEST_PG_OPTS"));
    let mode = if action == "start" { "" } else { "-m fast" };
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{ctl} -w -t 60 -l '{log}' -o '{opts}' {action} {mode} >/dev/null"))
        .status()
        .expect("running pg_ctl");
    assert!(status.success(), "pg_ctl {action} failed");
}

/// Starts the server again on drop if a test left it stopped (also when it failed), so the
/// test binaries after this one still have their database.
pub struct EnsureRunning;

impl Drop for EnsureRunning {
    fn drop(&mut self) {
        let (Ok(ctl), Ok(log), Ok(opts)) =
            (std::env::var("TEST_PG_CTL"), std::env::var("TEST_PG_LOG"), std::env::var("TEST_PG_OPTS"))
        else {
            return;
        };
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("{ctl} status >/dev/null || {ctl} -w -t 60 -l '{log}' -o '{opts}' start >/dev/null"))
            .status();
    }
}
