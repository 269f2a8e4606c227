//! Configuration: the one place that reads the environment.
//!
//! Every knob in DESIGN.md's table is parsed here into a typed [`Config`]. Anything
//! unparseable is a [`ConfigError`] naming the variable, so start-up fails with one
//! clear line instead of a surprise deep inside the daemon.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::agent_profiles::{self, AgentProfile};
use crate::tunables;

/// Where tasks are stored, parsed from `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…`, passed to tokio-postgres as is.
    Postgres(String),
    /// `sqlite://PATH` (also `sqlite:///./PATH`): an embedded database file.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    pub const DEFAULT: &'static str = "sqlite://./devops_control_tower.db";

    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            raw.parse::<tokio_postgres::Config>().map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
            return Ok(DatabaseUrl::Postgres(raw.to_string()));
        }
        if let Some(rest) = raw.strip_prefix("sqlite://") {
            // `sqlite:///./x.db` is the SQLAlchemy spelling of a relative path.
            let path = match rest.strip_prefix('/') {
                Some(rel) if rel.starts_with("./") || rel.starts_with("../") => rel,
                _ => rest,
            };
            if path.is_empty() {
                return Err("sqlite URL has no file path (expected sqlite://PATH)".into());
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        Err("unknown scheme (expected postgres://, postgresql:// or sqlite://)".into())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, DatabaseUrl::Postgres(_))
    }

    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            DatabaseUrl::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(s), Some(at)) if at > s => {
                    let creds = &url[s + 3..at];
                    match creds.find(':') {
                        Some(colon) => format!("{}{}:***{}", &url[..s + 3], &creds[..colon], &url[at..]),
                        None => url.clone(),
                    }
                }
                _ => url.clone(),
            },
        }
    }
}

/// Log output format for the daemon's own log on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `JCT_SANDBOX`: how programs (`command`, `agent`) are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Bubblewrap when `bwrap` works here, else none, with one warning line at start-up.
    #[default]
    Auto,
    /// Bubblewrap or no start: a deployment that counts on isolation must not silently lose it.
    Bwrap,
    /// No sandbox: the program sees what the daemon's user sees.
    None,
}

/// The most one program may use (`JCT_TASK_MEMORY_MB`, `JCT_TASK_PIDS`, `JCT_TASK_FILE_MB`);
/// a payload may ask for less, never more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLimits {
    pub memory_mb: u64,
    pub pids: u64,
    /// The largest file the program may write.
    pub file_mb: u64,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            memory_mb: tunables::DEFAULT_TASK_MEMORY_MB,
            pids: tunables::DEFAULT_TASK_PIDS,
            file_mb: tunables::DEFAULT_TASK_FILE_MB,
        }
    }
}

/// Everything the daemon can be told from outside.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseUrl,
    pub bind: SocketAddr,
    pub trace_dir: PathBuf,
    pub workers: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub shutdown_grace: Duration,
    pub api_key: Option<String>,
    /// The JCT server the programs without a database talk to (`JCT_SERVER_URL`): the MCP
    /// server, and the remote worker.
    pub server_url: String,
    /// `JCT_READONLY_API_KEY`: a second key that may only read (GET) the API and the
    /// dashboard; any other method with it is 403.
    pub readonly_api_key: Option<String>,
    pub max_body_bytes: u64,
    /// First retry delay (`JCT_RETRY_BASE_MS`); doubles per attempt up to `retry_cap`.
    pub retry_base: Duration,
    /// Longest retry delay (`JCT_RETRY_MAX_SECONDS`).
    pub retry_cap: Duration,
    /// Task types accepted ahead of any handler or worker serving them (`JCT_TASK_TYPES`).
    pub task_types: Vec<String>,
    /// Durable PostgreSQL connections (`JCT_DB_POOL_SIZE`); the worker's bookkeeping and
    /// claims have small pools of their own beside it.
    pub db_pool_size: usize,
    pub listen: bool,
    pub trace: bool,
    pub log_format: LogFormat,
    /// The `RUST_LOG` filter directive.
    pub log_filter: String,
    /// The executors that run programs: `command` and `agent`.
    pub executors: ExecutorConfig,
    /// `JCT_SCHEDULES_FILE`: schedules applied at start-up, already validated.
    pub schedules_file: Option<SchedulesFile>,
}

/// The schedules file: its path and what it names.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulesFile {
    pub path: PathBuf,
    pub schedules: Vec<crate::schedule::ScheduleSpec>,
}

/// The settings of the executors that run programs (`command`, `agent`).
#[derive(Debug, Clone, Default)]
pub struct ExecutorConfig {
    /// `JCT_COMMAND_ALLOW`: the programs a task may run (names or paths, exactly as given
    /// in `argv[0]` or a profile); `None` disables `command`.
    pub command_allow: Option<Vec<String>>,
    /// The environment every program starts with: `PATH`, `HOME`, `LANG` and the names in
    /// `JCT_COMMAND_ENV_ALLOW`, with this process's values. Never the daemon's secrets.
    pub base_env: Vec<(String, String)>,
    /// `JCT_KILL_GRACE_SECONDS`: between SIGTERM and SIGKILL to a program's group.
    pub kill_grace: Duration,
    /// `JCT_WORKSPACE_DIR`: command workspaces, repository caches, agent worktrees.
    pub workspace_dir: PathBuf,
    /// `JCT_ALLOWED_REPO_PREFIXES`: repositories an agent may work on; `None` disables `agent`.
    pub repo_prefixes: Option<Vec<String>>,
    /// The agent profiles: built in, and from `JCT_AGENT_PROFILES`.
    pub agent_profiles: BTreeMap<String, AgentProfile>,
    /// `JCT_SANDBOX`.
    pub sandbox: SandboxMode,
    /// `JCT_SANDBOX_NETWORK=on`: every sandboxed program may use the network, not only the
    /// agents whose profile says `network = true`.
    pub sandbox_network: bool,
    /// The limits' maxima, which are also each program's defaults.
    pub task_limits: TaskLimits,
    /// `JCT_TASK_CGROUPS=off`: no cgroup per program even where this process may create
    /// them (another manager owns the tree); rlimits alone then.
    pub task_cgroups: bool,
}

/// A variable that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a configuration from any variable source (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        let bad = |name: &'static str, value: &str, reason: String| ConfigError {
            var: name,
            value: value.to_string(),
            reason,
        };
        let bad_owned = bad;

        let db_raw = var("DATABASE_URL").unwrap_or_else(|| DatabaseUrl::DEFAULT.to_string());
        let database = DatabaseUrl::parse(&db_raw).map_err(|r| bad("DATABASE_URL", &db_raw, r))?;

        let bind_raw = var("JCT_BIND").unwrap_or_else(|| "0.0.0.0:8000".into());
        let bind = bind_raw
            .trim()
            .parse::<SocketAddr>()
            .map_err(|e| bad("JCT_BIND", &bind_raw, format!("expected HOST:PORT ({e})")))?;

        let number = |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(raw) => match raw.trim().parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    Ok(_) => Err(bad(name, &raw, format!("expected a number from {min} to {max}"))),
                    Err(_) => Err(bad(name, &raw, "expected a whole number".into())),
                },
            }
        };
        let switch = |name: &'static str| -> Result<bool, ConfigError> {
            match var(name) {
                None => Ok(true),
                Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                    "on" | "true" | "1" | "yes" => Ok(true),
                    "off" | "false" | "0" | "no" => Ok(false),
                    _ => Err(bad(name, &raw, "expected on or off".into())),
                },
            }
        };

        let default_poll = if database.is_postgres() { 1000 } else { 200 };
        let log_format = match var("JCT_LOG_FORMAT") {
            None => LogFormat::Text,
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(bad("JCT_LOG_FORMAT", &raw, "expected text or json".into())),
            },
        };

        let workers = number("JCT_WORKERS", 4, 1, 4096)? as usize;
        let retry_base = Duration::from_millis(number(
            "JCT_RETRY_BASE_MS",
            tunables::DEFAULT_RETRY_BASE.as_millis() as u64,
            1,
            86_400_000,
        )?);
        let retry_cap =
            Duration::from_secs(number("JCT_RETRY_MAX_SECONDS", tunables::DEFAULT_RETRY_CAP.as_secs(), 1, 604_800)?);
        if retry_cap < retry_base {
            let raw = var("JCT_RETRY_MAX_SECONDS").unwrap_or_default();
            return Err(bad("JCT_RETRY_MAX_SECONDS", &raw, "must not be shorter than JCT_RETRY_BASE_MS".into()));
        }
        let server_url = match var("JCT_SERVER_URL") {
            None => tunables::DEFAULT_SERVER_URL.to_string(),
            Some(raw) => {
                let url = raw.trim().trim_end_matches('/').to_string();
                let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(|host| host.is_empty()) {
                    return Err(bad("JCT_SERVER_URL", &raw, "expected http://HOST[:PORT] or https://…".into()));
                }
                url
            }
        };
        if let (Some(full), Some(read)) = (var("JCT_API_KEY"), var("JCT_READONLY_API_KEY")) {
            if full == read {
                return Err(bad("JCT_READONLY_API_KEY", "***", "must differ from JCT_API_KEY".into()));
            }
        }
        let default_pool = (workers.max(8) + tunables::DB_POOL_SPARE) as u64;

        let list = |name: &'static str| -> Option<Vec<String>> {
            var(name).map(|raw| raw.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect())
        };
        let lookup = |name: &str| get(name);
        let mut base_env: Vec<(String, String)> =
            ["PATH", "HOME", "LANG"].iter().filter_map(|n| get(n).map(|v| (n.to_string(), v))).collect();
        for name in list("JCT_COMMAND_ENV_ALLOW").unwrap_or_default() {
            if agent_profiles::SECRETS.contains(&name.as_str()) {
                let raw = var("JCT_COMMAND_ENV_ALLOW").unwrap_or_default();
                return Err(bad_owned("JCT_COMMAND_ENV_ALLOW", &raw, format!("{name} is a secret of the daemon")));
            }
            if let Some(value) = get(&name) {
                base_env.retain(|(n, _)| n != &name);
                base_env.push((name, value));
            }
        }
        let agent_profiles = match var("JCT_AGENT_PROFILES") {
            None => agent_profiles::builtin(&lookup),
            Some(path) => {
                let text = std::fs::read_to_string(path.trim())
                    .map_err(|e| bad_owned("JCT_AGENT_PROFILES", &path, format!("cannot read the file: {e}")))?;
                agent_profiles::load(&text, &lookup).map_err(|e| bad_owned("JCT_AGENT_PROFILES", &path, e))?
            }
        };
        let sandbox = match var("JCT_SANDBOX") {
            None => SandboxMode::Auto,
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "auto" => SandboxMode::Auto,
                "bwrap" => SandboxMode::Bwrap,
                "none" => SandboxMode::None,
                _ => return Err(bad("JCT_SANDBOX", &raw, "expected auto, bwrap or none".into())),
            },
        };
        let sandbox_network = match var("JCT_SANDBOX_NETWORK") {
            None => false,
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" | "yes" => true,
                "off" | "false" | "0" | "no" => false,
                _ => return Err(bad("JCT_SANDBOX_NETWORK", &raw, "expected on or off".into())),
            },
        };
        // Each at least a few units: below them not even a shell starts, and a limit that
        // cannot run anything is a configuration mistake better caught at start-up.
        let task_limits = TaskLimits {
            memory_mb: number("JCT_TASK_MEMORY_MB", tunables::DEFAULT_TASK_MEMORY_MB, 16, 1 << 30)?,
            pids: number("JCT_TASK_PIDS", tunables::DEFAULT_TASK_PIDS, 8, 1 << 22)?,
            file_mb: number("JCT_TASK_FILE_MB", tunables::DEFAULT_TASK_FILE_MB, 1, 1 << 30)?,
        };
        let schedules_file = match var("JCT_SCHEDULES_FILE") {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path.trim())
                    .map_err(|e| bad_owned("JCT_SCHEDULES_FILE", &path, format!("cannot read the file: {e}")))?;
                let schedules =
                    crate::schedule::parse_file(&text).map_err(|e| bad_owned("JCT_SCHEDULES_FILE", &path, e))?;
                Some(SchedulesFile { path: PathBuf::from(path.trim()), schedules })
            }
        };
        let executors = ExecutorConfig {
            command_allow: list("JCT_COMMAND_ALLOW").filter(|l| !l.is_empty()),
            base_env,
            kill_grace: Duration::from_secs(number("JCT_KILL_GRACE_SECONDS", 10, 0, 3600)?),
            workspace_dir: PathBuf::from(var("JCT_WORKSPACE_DIR").unwrap_or_else(|| "./workspaces".into())),
            repo_prefixes: list("JCT_ALLOWED_REPO_PREFIXES").filter(|l| !l.is_empty()),
            agent_profiles,
            sandbox,
            sandbox_network,
            task_limits,
            task_cgroups: switch("JCT_TASK_CGROUPS")?,
        };

        Ok(Config {
            bind,
            trace_dir: PathBuf::from(var("JCT_TRACE_DIR").unwrap_or_else(|| "./logs".into())),
            workers,
            poll_interval: Duration::from_millis(number("JCT_POLL_INTERVAL_MS", default_poll, 1, 3_600_000)?),
            lease: Duration::from_secs(number("JCT_LEASE_SECONDS", 30, 1, 86_400)?),
            shutdown_grace: Duration::from_secs(number("JCT_SHUTDOWN_GRACE_SECONDS", 30, 0, 86_400)?),
            api_key: var("JCT_API_KEY"),
            server_url,
            readonly_api_key: var("JCT_READONLY_API_KEY"),
            max_body_bytes: number("JCT_MAX_BODY_BYTES", 1_048_576, 1, 1 << 34)?,
            retry_base,
            retry_cap,
            task_types: match var("JCT_TASK_TYPES") {
                None => Vec::new(),
                Some(raw) => {
                    let types: Vec<String> =
                        raw.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
                    if let Some(bad) = types.iter().find(|t| t.chars().count() > crate::task::limits::TYPE_MAX) {
                        return Err(bad_owned(
                            "JCT_TASK_TYPES",
                            &raw,
                            format!("{bad:?} is longer than 128 characters"),
                        ));
                    }
                    types
                }
            },
            db_pool_size: number("JCT_DB_POOL_SIZE", default_pool, tunables::DB_POOL_MIN as u64, 1000)? as usize,
            listen: switch("JCT_LISTEN")?,
            trace: switch("JCT_TRACE")?,
            log_format,
            log_filter: {
                // warp logs a client's idle keep-alive connection closed by a graceful
                // shutdown as an ERROR; that is the normal way to stop, not an error.
                let raw = var("RUST_LOG").unwrap_or_else(|| "info,warp::server=off".into());
                tracing_subscriber::EnvFilter::try_new(&raw)
                    .map_err(|e| bad("RUST_LOG", &raw, format!("not a log filter: {e}")))?;
                raw
            },
            schedules_file,
            database,
            executors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = from(&[]).unwrap();
        assert_eq!(c.database, DatabaseUrl::Sqlite("./devops_control_tower.db".into()));
        assert_eq!(c.bind.to_string(), "0.0.0.0:8000");
        assert_eq!(c.trace_dir, PathBuf::from("./logs"));
        assert_eq!(c.workers, 4);
        assert_eq!(c.poll_interval, Duration::from_millis(200));
        assert_eq!(c.lease, Duration::from_secs(30));
        assert!(c.listen && c.trace);
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!((c.retry_base, c.retry_cap), (Duration::from_secs(1), Duration::from_secs(600)));
        assert_eq!(c.db_pool_size, 12);
        assert!(c.task_types.is_empty());
        assert_eq!(c.server_url, "http://127.0.0.1:8000");
        assert_eq!(
            from(&[("JCT_SERVER_URL", "https://jct.example:8443/")]).unwrap().server_url,
            "https://jct.example:8443"
        );
        assert_eq!((c.api_key, c.readonly_api_key), (None, None));
        let c = from(&[("JCT_TASK_TYPES", "build, deploy,,lint")]).unwrap();
        assert_eq!(c.task_types, ["build", "deploy", "lint"]);
    }

    #[test]
    fn sandbox_and_limit_settings() {
        let e = from(&[]).unwrap().executors;
        assert_eq!((e.sandbox, e.sandbox_network, e.task_cgroups), (SandboxMode::Auto, false, true));
        assert_eq!(e.task_limits, TaskLimits { memory_mb: 4096, pids: 1024, file_mb: 1024 });
        let e = from(&[
            ("JCT_SANDBOX", "BWRAP"),
            ("JCT_SANDBOX_NETWORK", "on"),
            ("JCT_TASK_MEMORY_MB", "512"),
            ("JCT_TASK_PIDS", "64"),
            ("JCT_TASK_FILE_MB", "8"),
            ("JCT_TASK_CGROUPS", "off"),
        ])
        .unwrap()
        .executors;
        assert_eq!((e.sandbox, e.sandbox_network, e.task_cgroups), (SandboxMode::Bwrap, true, false));
        assert_eq!(e.task_limits, TaskLimits { memory_mb: 512, pids: 64, file_mb: 8 });
        assert_eq!(from(&[("JCT_SANDBOX", "none")]).unwrap().executors.sandbox, SandboxMode::None);
        assert_eq!(from(&[("JCT_SANDBOX", "docker")]).unwrap_err().var, "JCT_SANDBOX");
        assert_eq!(from(&[("JCT_SANDBOX_NETWORK", "maybe")]).unwrap_err().var, "JCT_SANDBOX_NETWORK");
        assert_eq!(from(&[("JCT_TASK_PIDS", "2")]).unwrap_err().var, "JCT_TASK_PIDS");
        assert_eq!(from(&[("JCT_TASK_FILE_MB", "0")]).unwrap_err().var, "JCT_TASK_FILE_MB");
    }

    #[test]
    fn retry_and_pool_settings() {
        let c =
            from(&[("JCT_RETRY_BASE_MS", "50"), ("JCT_RETRY_MAX_SECONDS", "2"), ("JCT_DB_POOL_SIZE", "3")]).unwrap();
        assert_eq!((c.retry_base, c.retry_cap, c.db_pool_size), (Duration::from_millis(50), Duration::from_secs(2), 3));
        assert_eq!(from(&[("JCT_WORKERS", "16")]).unwrap().db_pool_size, 20);
        let e = from(&[("JCT_RETRY_BASE_MS", "5000"), ("JCT_RETRY_MAX_SECONDS", "2")]).unwrap_err();
        assert_eq!(e.var, "JCT_RETRY_MAX_SECONDS");
        assert_eq!(from(&[("JCT_DB_POOL_SIZE", "1")]).unwrap_err().var, "JCT_DB_POOL_SIZE");
    }

    #[test]
    fn postgres_polls_every_second_by_default() {
        let c = from(&[("DATABASE_URL", "postgres://u:p@localhost/db")]).unwrap();
        assert!(c.database.is_postgres());
        assert_eq!(c.poll_interval, Duration::from_millis(1000));
        assert_eq!(c.database.redacted(), "postgres://u:***@localhost/db");
    }

    #[test]
    fn sqlite_url_spellings() {
        assert_eq!(DatabaseUrl::parse("sqlite:///./x.db").unwrap(), DatabaseUrl::Sqlite("./x.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(), DatabaseUrl::Sqlite("/tmp/x.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite://rel.db").unwrap(), DatabaseUrl::Sqlite("rel.db".into()));
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(from(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var, "DATABASE_URL");
        assert_eq!(from(&[("JCT_WORKERS", "four")]).unwrap_err().var, "JCT_WORKERS");
        assert_eq!(from(&[("JCT_WORKERS", "0")]).unwrap_err().var, "JCT_WORKERS");
        assert_eq!(from(&[("JCT_BIND", "nowhere")]).unwrap_err().var, "JCT_BIND");
        assert_eq!(from(&[("JCT_LISTEN", "maybe")]).unwrap_err().var, "JCT_LISTEN");
        assert_eq!(from(&[("JCT_LOG_FORMAT", "xml")]).unwrap_err().var, "JCT_LOG_FORMAT");
        assert_eq!(from(&[("JCT_SERVER_URL", "127.0.0.1:8000")]).unwrap_err().var, "JCT_SERVER_URL");
        assert_eq!(from(&[("JCT_SERVER_URL", "http://")]).unwrap_err().var, "JCT_SERVER_URL");
        let same = from(&[("JCT_API_KEY", "k"), ("JCT_READONLY_API_KEY", "k")]).unwrap_err();
        assert_eq!(same.var, "JCT_READONLY_API_KEY");
        assert_eq!(same.value, "***", "the error does not print the key");
    }
}
