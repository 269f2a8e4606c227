//! The real release daemon as a child process: configured only through its environment,
//! found through the address it logs, stopped with SIGTERM like in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bail, Context, Result};

/// How long the daemon may take to log that its API listens (it migrates first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd daemon may take to exit; its shutdown grace is 30 s by default.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// `migrate` on an empty database takes well under a second; a hang means an unreachable store.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Period of the checks on a child: its stderr (start-up) and whether it exited.
const CHILD_POLL: Duration = Duration::from_millis(20);
/// The log line that carries the bound address, e.g. `... INFO HTTP API listening addr=127.0.0.1:40213`.
const LISTENING: &str = "HTTP API listening";
/// Daemon problems worth reporting are listed up to this many lines.
const MAX_REPORTED_LOG_LINES: usize = 5;

/// The environment one daemon process runs with. Everything not set here is the
/// daemon's default, so that the bench measures the configuration users get.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    subcommand: &'static str,
    env: Vec<(&'static str, String)>,
}

impl DaemonConfig {
    /// `serve` (API and worker in one process) against `database_url`.
    pub fn serve(database_url: &str) -> Self {
        DaemonConfig {
            subcommand: "serve",
            env: vec![
                ("DATABASE_URL", database_url.to_string()),
                ("JCT_BIND", "127.0.0.1:0".to_string()),
                // `info` for the daemon's own start-up lines (the listening address), `warn`
                // for the libraries, so that logging costs nothing per task.
                ("RUST_LOG", "warn,devops_control_tower=info,warp::server=off".to_string()),
                ("JCT_LOG_FORMAT", "text".to_string()),
            ],
        }
    }

    /// Runs `subcommand` (`serve`, `api`, `worker`, `migrate`) instead of `serve`.
    pub fn subcommand(mut self, subcommand: &'static str) -> Self {
        self.subcommand = subcommand;
        self
    }

    /// Sets one environment variable (a later value for the same key wins).
    pub fn env(mut self, key: &'static str, value: impl ToString) -> Self {
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.to_string()));
        self
    }

    /// The started daemon, with a clean environment: nothing from the bench's own
    /// environment (RUST_LOG, DATABASE_URL, proxies…) leaks into the measurement.
    fn command(&self, bin: &Path, workdir: &Path, stderr: std::fs::File) -> Command {
        let mut command = Command::new(bin);
        command
            .arg(self.subcommand)
            .current_dir(workdir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        command
    }
}

/// A child process that is killed if dropped while it still runs, so that an error
/// anywhere in a scenario never leaves a daemon behind to disturb the next one.
struct Process {
    child: Child,
    stderr_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Process {
    fn spawn(bin: &Path, workdir: &Path, config: &DaemonConfig) -> Result<Process> {
        let stderr_path = workdir.join(format!("{}.stderr", config.subcommand));
        let stderr =
            std::fs::File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = config
            .command(bin, workdir, stderr)
            .spawn()
            .with_context(|| format!("starting {} {}", bin.display(), config.subcommand))?;
        Ok(Process { child, stderr_path, exit: None })
    }

    /// The exit status once the process has ended (it is reaped at most once).
    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("waiting for the daemon")?;
        }
        Ok(self.exit)
    }

    /// Waits up to `timeout` for the process to end by itself.
    async fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.exited()? {
                return Ok(Some(status));
            }
            tokio::time::sleep(CHILD_POLL).await;
        }
        Ok(None)
    }

    fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The last lines of stderr, to explain a failed start or exit.
    fn stderr_tail(&self) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        format!("its stderr ends with:\n    {tail}")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running daemon whose HTTP API answers on [`Daemon::addr`].
pub struct Daemon {
    process: Process,
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts the binary in `workdir` (its stderr goes to a file there) and waits until
    /// it logs the address it listens on.
    pub async fn start(bin: &Path, workdir: &Path, config: &DaemonConfig) -> Result<Daemon> {
        let mut process = Process::spawn(bin, workdir, config)?;
        let start = Instant::now();
        loop {
            if let Some(addr) = listening_addr(&process.stderr()) {
                return Ok(Daemon { process, addr });
            }
            if let Some(status) = process.exited()? {
                bail!("the daemon exited at start-up ({status}): {}", process.stderr_tail());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "the daemon did not log {LISTENING:?} within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    process.stderr_tail()
                );
            }
            tokio::time::sleep(CHILD_POLL).await;
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails when the daemon died: a scenario waiting on it should stop waiting.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.process.exited()? {
            None => Ok(()),
            Some(status) => bail!("the daemon died ({status}): {}", self.process.stderr_tail()),
        }
    }

    /// Sends SIGTERM, waits for the exit and returns the problems seen: a non-zero exit,
    /// a shutdown that needed SIGKILL, WARN/ERROR lines in its log. Problems are reported,
    /// not fatal: the measurement they come with is still valid.
    pub async fn stop(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let pid = self.process.child.id().to_string();
        match Command::new("kill").args(["-TERM", &pid]).status() {
            Ok(status) if status.success() => {}
            other => problems.push(format!("`kill -TERM {pid}` failed: {other:?}")),
        }
        match self.process.wait_exit(STOP_TIMEOUT).await {
            Ok(Some(status)) if status.success() => {}
            Ok(Some(status)) => {
                problems.push(format!("the daemon exited with {status} after SIGTERM: {}", self.process.stderr_tail()))
            }
            Ok(None) => problems.push(format!(
                "the daemon did not exit within {} s of SIGTERM (killed): {}",
                STOP_TIMEOUT.as_secs(),
                self.process.stderr_tail()
            )),
            Err(e) => problems.push(e.to_string()),
        }
        self.process.kill();
        problems.extend(log_problems(&self.process.stderr()));
        problems
    }
}

/// Runs `devops-control-tower migrate` to completion: the schema without a running daemon.
pub async fn migrate(bin: &Path, workdir: &Path, database_url: &str) -> Result<()> {
    let config = DaemonConfig::serve(database_url).subcommand("migrate");
    let mut process = Process::spawn(bin, workdir, &config)?;
    match process.wait_exit(MIGRATE_TIMEOUT).await? {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("`migrate` failed ({status}): {}", process.stderr_tail()),
        None => bail!("`migrate` did not finish within {} s: {}", MIGRATE_TIMEOUT.as_secs(), process.stderr_tail()),
    }
}

/// The address in the `HTTP API listening addr=…` line, once it has been written whole.
fn listening_addr(stderr: &str) -> Option<SocketAddr> {
    stderr
        .lines()
        .filter(|line| line.contains(LISTENING))
        .find_map(|line| line.split_once("addr=")?.1.split_whitespace().next()?.parse().ok())
}

/// WARN/ERROR lines and panics in the daemon's log: a summary, then the first few lines.
fn log_problems(stderr: &str) -> Option<String> {
    let is_problem = |line: &&str| {
        let level = line.split_whitespace().nth(1).unwrap_or("");
        level == "WARN" || level == "ERROR" || line.contains("panicked")
    };
    let lines: Vec<&str> = stderr.lines().filter(is_problem).collect();
    if lines.is_empty() {
        return None;
    }
    let first: Vec<&str> = lines.iter().take(MAX_REPORTED_LOG_LINES).copied().collect();
    Some(format!("the daemon logged {} WARN/ERROR line(s), first:\n    {}", lines.len(), first.join("\n    ")))
}
