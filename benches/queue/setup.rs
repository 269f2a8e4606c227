//! What every scenario needs: the binary, the PostgreSQL server, fresh directories, loads.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{self, Daemon, DaemonConfig};
use crate::pg::{PgDatabase, PgServer};
use crate::support::{bail, fresh_dir, progress, Context, Result};

/// How long file creation on this disk was measured to stay slow after a mass delete
/// (ext4 without a journal walks the recently freed inodes on every allocation).
const DELETION_AFTERMATH: Duration = Duration::from_secs(10 * 60);

/// The load of every scenario. Fixed, so that runs on different days compare.
#[derive(Clone, Copy, Debug)]
pub struct Loads {
    /// Tasks inserted one by one in the latency scenarios.
    pub latency_tasks: usize,
    /// How long the HTTP enqueue flood lasts.
    pub flood: Duration,
    /// Clients of the HTTP enqueue flood.
    pub flood_clients: usize,
    /// Tasks in the one enqueue_batch request.
    pub batch_tasks: usize,
    /// Tasks in the backlog of the drain scenarios.
    pub drain_tasks: usize,
}

impl Loads {
    pub const FULL: Loads = Loads {
        latency_tasks: 2_000,
        flood: Duration::from_secs(10),
        flood_clients: 32,
        batch_tasks: 100_000,
        drain_tasks: 100_000,
    };

    /// A tenth of each load, for trying the harness out (JCT_BENCH_QUICK=1).
    pub fn quick() -> Loads {
        let full = Loads::FULL;
        Loads {
            latency_tasks: full.latency_tasks / 10,
            flood: full.flood / 10,
            flood_clients: full.flood_clients,
            batch_tasks: full.batch_tasks / 10,
            drain_tasks: full.drain_tasks / 10,
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "latency_tasks": self.latency_tasks,
            "http_flood_seconds": self.flood.as_secs_f64(),
            "http_flood_clients": self.flood_clients,
            "batch_tasks": self.batch_tasks,
            "drain_tasks": self.drain_tasks,
        })
    }
}

/// The bench's environment, shared by all scenarios.
pub struct Bench {
    /// target/release/devops-control-tower, built by `make bench` before the bench runs, or
    /// the binary `JCT_BENCH_BIN` names (to measure two builds one right after the other).
    pub bin: PathBuf,
    pub pg: PgServer,
    /// target/bench/tmp/<run id>: every directory this run creates, removed at the end.
    tmp_root: PathBuf,
    /// target/bench: where results.json goes.
    pub out_dir: PathBuf,
    pub loads: Loads,
    pub repetitions: usize,
    pub quick: bool,
}

impl Bench {
    /// Checks that everything the scenarios need is there, and says what is missing.
    pub async fn from_env() -> Result<Bench> {
        let manifest_dir = PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .ok_or("CARGO_MANIFEST_DIR is not set: run the bench through cargo (make bench)")?,
        );
        let bin = match std::env::var_os("JCT_BENCH_BIN") {
            Some(bin) => PathBuf::from(bin),
            None => manifest_dir.join("target/release/devops-control-tower"),
        };
        if !bin.is_file() {
            bail!("{} is missing: build it first with `cargo build --release --bins` (make bench does)", bin.display());
        }
        let pg_url = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()).ok_or(
            "TEST_DATABASE_URL is not set: run `make bench`, which starts a throwaway PostgreSQL \
             (or tests/support/with-postgres.sh cargo bench --bench queue)",
        )?;
        let pg = PgServer::connect(&pg_url).await?;
        let out_dir = manifest_dir.join("target/bench");
        let tmp_root = out_dir.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&tmp_root).with_context(|| format!("creating {}", tmp_root.display()))?;
        let quick = std::env::var("JCT_BENCH_QUICK").is_ok_and(|v| v == "1");
        Ok(Bench {
            bin,
            pg,
            tmp_root,
            out_dir,
            loads: if quick { Loads::quick() } else { Loads::FULL },
            repetitions: if quick { 1 } else { 3 },
            quick,
        })
    }

    /// A directory nobody used before (see [`fresh_dir`] for why never reuse one).
    pub fn fresh_dir(&self) -> Result<PathBuf> {
        fresh_dir(&self.tmp_root)
    }

    /// Starts a daemon in a fresh directory, with a fresh trace directory.
    pub async fn start_daemon(&self, config: DaemonConfig) -> Result<Daemon> {
        let workdir = self.fresh_dir()?;
        let traces = workdir.join("traces");
        std::fs::create_dir(&traces).with_context(|| format!("creating {}", traces.display()))?;
        let config = config.env("JCT_TRACE_DIR", traces.display());
        Daemon::start(&self.bin, &workdir, &config).await
    }

    /// Creates the schema with `devops-control-tower migrate`, no daemon running.
    pub async fn migrate(&self, database_url: &str) -> Result<()> {
        daemon::migrate(&self.bin, &self.fresh_dir()?, database_url).await
    }

    /// Runs `body` with the URL of a new, empty database, and drops the database after,
    /// whatever `body` returned.
    pub async fn with_pg_database<T, F, Fut>(&self, body: F) -> Result<T>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let db: PgDatabase = self.pg.create_database().await?;
        let outcome = body(db.url.clone()).await;
        self.pg.drop_database(db).await;
        outcome
    }

    /// Says whether earlier runs left scratch behind: a deletion still running in the
    /// background makes file creation (trace folders) slow, and so the numbers low.
    pub fn warn_about_leftovers(&self) {
        let count = |dir: PathBuf| std::fs::read_dir(dir).map_or(0, |entries| entries.count());
        let trash = count(self.out_dir.join("trash"));
        if trash > 0 {
            progress!(
                "WARNING: {} holds {trash} scratch dir(s) of earlier runs, still being deleted in the \
                 background or left over; until they are gone, creating files on this disk is slow \
                 and the scenarios that write trace folders measure low",
                self.out_dir.join("trash").display()
            );
        } else if let Some(ago) = self.since_last_deletion().filter(|ago| *ago < DELETION_AFTERMATH) {
            progress!(
                "WARNING: an earlier run's scratch finished deleting {} s ago; on ext4, creating \
                 files stays slow for minutes after a mass delete (up to {} min measured), so the \
                 scenarios that write trace folders may measure low",
                ago.as_secs(),
                DELETION_AFTERMATH.as_secs() / 60
            );
        }
        let stale = count(self.out_dir.join("tmp")).saturating_sub(1);
        if stale > 0 {
            progress!(
                "note: {} holds {stale} scratch dir(s) of earlier, interrupted runs; remove them \
                 when no bench is running",
                self.out_dir.join("tmp").display()
            );
        }
    }

    /// How long ago the last scratch dir left the trash (the trash dir's modification time,
    /// which its last removal sets), if one ever did.
    fn since_last_deletion(&self) -> Option<Duration> {
        let modified = std::fs::metadata(self.out_dir.join("trash")).ok()?.modified().ok()?;
        modified.elapsed().ok()
    }

    /// Hands every directory this run created (trace folders included) to a background
    /// `rm -rf`, and returns at once. Only now, after the last measurement: this disk is
    /// mounted with `discard`, so deleting the million files of a full run takes far
    /// longer than the bench itself and slows file creation while it lasts.
    pub fn discard_scratch(&self) -> Result<String> {
        // Two runs one right after the other (a before/after comparison) keep the first's
        // scratch, so its deletion does not slow the second: delete target/bench/tmp later.
        if std::env::var("JCT_BENCH_KEEP_SCRATCH").is_ok_and(|v| v == "1") {
            return Ok(format!(
                "kept {} (JCT_BENCH_KEEP_SCRATCH=1); delete it when the disk may be busy",
                self.tmp_root.display()
            ));
        }
        let trash = self.out_dir.join("trash");
        std::fs::create_dir_all(&trash).with_context(|| format!("creating {}", trash.display()))?;
        let doomed = trash.join(self.tmp_root.file_name().ok_or("the scratch root has no name")?);
        std::fs::rename(&self.tmp_root, &doomed)
            .with_context(|| format!("moving {} to {}", self.tmp_root.display(), doomed.display()))?;
        // Its own session: a Ctrl-C in the terminal after the bench ended does not stop it.
        let rm = Command::new("setsid")
            .args(["-f", "nice", "-n", "19", "rm", "-rf"])
            .arg(&doomed)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("starting `rm -rf {}`; remove it by hand", doomed.display()))?;
        if !rm.success() {
            bail!("`setsid -f rm -rf {}` failed ({rm}); remove it by hand", doomed.display());
        }
        Ok(format!(
            "deleting {} in the background; file creation on this disk is slow until it is gone",
            doomed.display()
        ))
    }

    pub fn tmp_root(&self) -> &Path {
        &self.tmp_root
    }
}

/// Where the numbers come from: they mean little without the machine.
pub async fn machine_info(bench: &Bench) -> Value {
    let pg_version = match bench.pg.version().await {
        Ok(v) => v,
        Err(e) => format!("unknown ({e})"),
    };
    json!({
        "nproc": command_output("nproc", &[]),
        "uname": command_output("uname", &["-sr"]),
        "cpu": cpu_model(),
        "postgres": pg_version,
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

fn command_output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => "unknown".to_string(),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown".to_string())
}
