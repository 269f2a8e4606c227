//! The scenarios: each one starts from an empty store and a fresh daemon, applies a fixed
//! load, reads its number from the store's own clock where it can, and stops the daemon.

use std::path::PathBuf;
use std::time::Duration;

use crate::daemon::{Daemon, DaemonConfig};
use crate::http;
use crate::pg;
use crate::setup::Bench;
use crate::sqlite;
use crate::support::{blocking, percentile, poll_until, progress, Context, Result, TaskCounts};

/// Pause between single inserts/requests in the latency scenarios, so that each task is
/// dispatched alone instead of in a batch with the next one.
const LATENCY_PAUSE: Duration = Duration::from_millis(1);
/// Time for the LISTEN connection to settle after the daemon reports it connected.
const LISTENER_SETTLE: Duration = Duration::from_millis(300);
/// Latency scenarios wait this long for completion: longer than the 60 s poll of the
/// notify scenario, so that missed notifications show up as latency, not as a timeout.
const LATENCY_TIMEOUT: Duration = Duration::from_secs(90);
/// A drain that takes longer fails the scenario rather than hanging the bench.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the bench looks for unfinished tasks while it waits (a cheap look: see
/// [`pg::any_unfinished`]).
const COUNT_POLL: Duration = Duration::from_millis(200);
/// Enough for the 100,000-task batch body (about 3.5 MB) with a wide margin.
const BULK_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    NotifyLatency,
    PollLatency,
    HttpEnqueue,
    BulkEnqueue,
    Drain,
    DrainNoTrace,
    DrainKeyLimited,
    DrainQueueLimited,
    IdleSchedulesCost,
    SqliteDrain,
    SqliteHttpLatency,
    RemoteLatency,
    RemoteDrain,
    UiTasksPage,
    UiOverview,
    CommandStart,
    CommandStartNoSandbox,
    ScheduleFireLag,
    WorkflowStepLatency,
    WorkflowFanout,
}

/// What a scenario is held to.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Reported for comparison only.
    None,
    /// A rate of at least this many per second.
    AtLeast(f64),
    /// Latency percentiles of at most these milliseconds.
    AtMost { p50: f64, p99: Option<f64> },
    /// A cost of at most this many percent.
    AtMostPercent(f64),
    /// A rate of at least this share of `drain_no_trace_per_s` in the same run.
    AtLeastShareOfDrain(f64),
}

/// One repetition's number.
#[derive(Clone, Copy, Debug)]
pub enum Sample {
    /// Tasks per second.
    Rate(f64),
    /// Milliseconds from `created_at` to `started_at`.
    Latency { p50: f64, p99: f64 },
    /// A cost in percent of a baseline measured beside it.
    Percent(f64),
}

/// One repetition: its number, plus what went wrong without invalidating it.
#[derive(Debug)]
pub struct Measured {
    pub sample: Sample,
    /// Requests that did not get their 201.
    pub errors: u64,
    /// Daemon warnings, failed requests, unclean exits: for the report.
    pub problems: Vec<String>,
}

impl Scenario {
    pub const ALL: [Scenario; 20] = [
        Scenario::NotifyLatency,
        Scenario::PollLatency,
        Scenario::HttpEnqueue,
        Scenario::BulkEnqueue,
        Scenario::Drain,
        Scenario::DrainNoTrace,
        Scenario::DrainKeyLimited,
        Scenario::DrainQueueLimited,
        Scenario::IdleSchedulesCost,
        Scenario::SqliteDrain,
        Scenario::SqliteHttpLatency,
        Scenario::RemoteLatency,
        Scenario::RemoteDrain,
        Scenario::UiTasksPage,
        Scenario::UiOverview,
        Scenario::CommandStart,
        Scenario::CommandStartNoSandbox,
        Scenario::ScheduleFireLag,
        Scenario::WorkflowStepLatency,
        Scenario::WorkflowFanout,
    ];

    /// The scenario's key in results.json.
    pub fn key(self) -> &'static str {
        match self {
            Scenario::NotifyLatency => "notify_latency_ms",
            Scenario::PollLatency => "poll_latency_ms",
            Scenario::HttpEnqueue => "http_enqueue_per_s",
            Scenario::BulkEnqueue => "bulk_enqueue_per_s",
            Scenario::Drain => "drain_per_s",
            Scenario::DrainNoTrace => "drain_no_trace_per_s",
            Scenario::DrainKeyLimited => "drain_key_limited_per_s",
            Scenario::DrainQueueLimited => "drain_queue_limited_per_s",
            Scenario::IdleSchedulesCost => "idle_schedules_cost_pct",
            Scenario::SqliteDrain => "sqlite_drain_per_s",
            Scenario::SqliteHttpLatency => "sqlite_http_latency_ms",
            Scenario::RemoteLatency => "remote_latency_ms",
            Scenario::RemoteDrain => "remote_drain_per_s",
            Scenario::UiTasksPage => "ui_tasks_page_ms",
            Scenario::UiOverview => "ui_overview_ms",
            Scenario::CommandStart => "command_start_ms",
            Scenario::CommandStartNoSandbox => "command_start_no_sandbox_ms",
            Scenario::ScheduleFireLag => "schedule_fire_lag_ms",
            Scenario::WorkflowStepLatency => "workflow_step_latency_ms",
            Scenario::WorkflowFanout => "workflow_fanout_per_s",
        }
    }

    pub fn target(self) -> Target {
        match self {
            Scenario::NotifyLatency => Target::AtMost { p50: 0.8, p99: Some(1.3) },
            Scenario::PollLatency => Target::None,
            Scenario::HttpEnqueue => Target::AtLeast(10_000.0),
            Scenario::BulkEnqueue => Target::AtLeast(100_000.0),
            Scenario::Drain => Target::AtLeast(12_000.0),
            Scenario::DrainNoTrace => Target::AtLeast(45_000.0),
            Scenario::DrainKeyLimited | Scenario::DrainQueueLimited => Target::AtLeastShareOfDrain(0.8),
            Scenario::IdleSchedulesCost => Target::AtMostPercent(5.0),
            Scenario::SqliteDrain => Target::AtLeast(10_000.0),
            Scenario::SqliteHttpLatency => Target::AtMost { p50: 1.0, p99: None },
            Scenario::RemoteLatency => Target::AtMost { p50: 1.5, p99: Some(3.0) },
            Scenario::RemoteDrain => Target::AtLeast(10_000.0),
            Scenario::UiTasksPage | Scenario::UiOverview => Target::AtMost { p50: 100.0, p99: Some(100.0) },
            Scenario::CommandStart | Scenario::CommandStartNoSandbox => Target::None,
            Scenario::ScheduleFireLag => Target::AtMost { p50: 50.0, p99: Some(250.0) },
            Scenario::WorkflowStepLatency => Target::AtMost { p50: 3.0, p99: Some(10.0) },
            Scenario::WorkflowFanout => Target::AtLeastShareOfDrain(0.5),
        }
    }

    pub async fn run(self, bench: &Bench) -> Result<Measured> {
        match self {
            Scenario::NotifyLatency => pg_insert_latency(bench, Dispatch::Notify).await,
            Scenario::PollLatency => pg_insert_latency(bench, Dispatch::Poll).await,
            Scenario::HttpEnqueue => http_enqueue(bench).await,
            Scenario::BulkEnqueue => bulk_enqueue(bench).await,
            Scenario::Drain => pg_drain(bench, Traces::On, None).await,
            Scenario::DrainNoTrace => pg_drain(bench, Traces::Off, None).await,
            Scenario::DrainKeyLimited => pg_drain(bench, Traces::Off, Some(Limit::Key)).await,
            Scenario::DrainQueueLimited => pg_drain(bench, Traces::Off, Some(Limit::Queue)).await,
            Scenario::IdleSchedulesCost => idle_schedules_cost(bench).await,
            Scenario::SqliteDrain => sqlite_drain(bench).await,
            Scenario::SqliteHttpLatency => sqlite_http_latency(bench).await,
            Scenario::RemoteLatency => remote_latency(bench).await,
            Scenario::RemoteDrain => remote_drain(bench).await,
            Scenario::UiTasksPage => ui_page(bench, UiPage::Tasks).await,
            Scenario::UiOverview => ui_page(bench, UiPage::Overview).await,
            Scenario::CommandStart => command_start(bench, "bwrap").await,
            Scenario::CommandStartNoSandbox => command_start(bench, "none").await,
            Scenario::ScheduleFireLag => schedule_fire_lag(bench).await,
            Scenario::WorkflowStepLatency => workflow_step_latency(bench).await,
            Scenario::WorkflowFanout => workflow_fanout(bench).await,
        }
    }
}

/// How the daemon learns of a task inserted by another service.
#[derive(Clone, Copy)]
enum Dispatch {
    /// LISTEN/NOTIFY, with the poll pushed out of the way (60 s).
    Notify,
    /// The 1 s poll alone, LISTEN off.
    Poll,
}

#[derive(Clone, Copy)]
enum Traces {
    On,
    Off,
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

impl Measured {
    fn rate(tasks: usize, seconds: f64, problems: Vec<String>) -> Result<Measured> {
        if seconds <= 0.0 {
            return Err(format!("a non-positive time span ({seconds} s) for {tasks} tasks").into());
        }
        Ok(Measured { sample: Sample::Rate(tasks as f64 / seconds), errors: 0, problems })
    }

    fn latency(latencies_ms: &[f64], problems: Vec<String>) -> Result<Measured> {
        let (Some(p50), Some(p99)) = (percentile(latencies_ms, 0.50), percentile(latencies_ms, 0.99)) else {
            return Err("no task was started".into());
        };
        Ok(Measured { sample: Sample::Latency { p50, p99 }, errors: 0, problems })
    }
}

/// Waits until no task is queued or running (`unfinished` looks), failing early when the
/// daemon dies, then checks with `counts` that all `expected` tasks completed: none failed
/// and none went missing.
async fn wait_all_completed<U, UFut, C, CFut>(
    daemon: &mut Daemon,
    expected: usize,
    timeout: Duration,
    mut unfinished: U,
    counts: C,
) -> Result<()>
where
    U: FnMut() -> UFut,
    UFut: std::future::Future<Output = Result<bool>>,
    C: FnOnce() -> CFut,
    CFut: std::future::Future<Output = Result<TaskCounts>>,
{
    let what = format!("{expected} tasks to complete");
    poll_until(&what, COUNT_POLL, timeout, || {
        let alive = daemon.check_alive();
        let unfinished = unfinished();
        async move {
            alive?;
            Ok((!unfinished.await?).then_some(()))
        }
    })
    .await?;
    let counts = counts().await?;
    if !counts.all_completed(expected)? {
        return Err(
            format!("no task is queued or running, but only {} of {expected} completed", counts.completed).into()
        );
    }
    Ok(())
}

/// `notify_latency_ms` / `poll_latency_ms`: tasks inserted one by one by raw SQL, as
/// another service would; latency is `started_at - created_at` on the database clock.
async fn pg_insert_latency(bench: &Bench, dispatch: Dispatch) -> Result<Measured> {
    let n = bench.loads.latency_tasks;
    let (listen, poll_ms) = match dispatch {
        Dispatch::Notify => (true, 60_000),
        Dispatch::Poll => (false, 1_000),
    };
    bench
        .with_pg_database(|url| async move {
            let config =
                DaemonConfig::serve(&url).env("JCT_POLL_INTERVAL_MS", poll_ms).env("JCT_LISTEN", on_off(listen));
            let mut daemon = bench.start_daemon(config).await?;
            let mut problems = Vec::new();
            let client = http::client(1)?;
            http::wait_healthy(&client, &daemon.base_url()).await?;
            if listen {
                if let Err(e) = http::wait_listener(&client, &daemon.base_url()).await {
                    problems.push(e.to_string());
                }
            }
            tokio::time::sleep(LISTENER_SETTLE).await;

            let db = pg::connect(&url).await?;
            progress!("  inserting {n} tasks one by one");
            pg::insert_one_by_one(&db, n, LATENCY_PAUSE).await?;
            wait_all_completed(&mut daemon, n, LATENCY_TIMEOUT, || pg::any_unfinished(&db), || pg::task_counts(&db))
                .await?;
            let latencies = pg::start_latencies_ms(&db).await?;
            problems.extend(daemon.stop().await);
            Measured::latency(&latencies, problems)
        })
        .await
}

/// `http_enqueue_per_s`: many keep-alive clients enqueueing single tasks as fast as the
/// daemon answers. Like `bulk_enqueue_per_s` it runs the `api` role, so it measures the
/// intake (and the load generator shares the two cores with it), not a drain at once.
async fn http_enqueue(bench: &Bench) -> Result<Measured> {
    let loads = bench.loads;
    bench
        .with_pg_database(|url| async move {
            let daemon = bench.start_daemon(DaemonConfig::serve(&url).subcommand("api")).await?;
            let client = http::client(loads.flood_clients * 2)?;
            http::wait_healthy(&client, &daemon.base_url()).await?;
            progress!("  {} clients enqueueing for {} s", loads.flood_clients, loads.flood.as_secs_f64());
            let (tally, elapsed) =
                http::enqueue_flood(&client, &daemon.base_url(), loads.flood_clients, loads.flood).await?;
            let mut problems = daemon.stop().await;
            problems.extend(tally.describe_errors());
            let mut measured = Measured::rate(tally.created as usize, elapsed.as_secs_f64(), problems)?;
            measured.errors = tally.errors();
            Ok(measured)
        })
        .await
}

/// `bulk_enqueue_per_s`: one enqueue_batch request on an API-only daemon, so that no
/// worker competes with the insert. The body is built before the clock starts.
async fn bulk_enqueue(bench: &Bench) -> Result<Measured> {
    let n = bench.loads.batch_tasks;
    bench
        .with_pg_database(|url| async move {
            let body = http::batch_body(n)?;
            let config = DaemonConfig::serve(&url).subcommand("api").env("JCT_MAX_BODY_BYTES", BULK_MAX_BODY_BYTES);
            let daemon = bench.start_daemon(config).await?;
            let client = http::client(1)?;
            http::wait_healthy(&client, &daemon.base_url()).await?;
            progress!("  posting one batch of {n} tasks ({} bytes)", body.len());
            let elapsed = http::enqueue_batch(&client, &daemon.base_url(), body, n).await?;
            let problems = daemon.stop().await;
            let stored = pg::task_counts(&pg::connect(&url).await?).await?.total;
            if stored != n as i64 {
                return Err(format!("the batch answered 201 for {n} tasks, but {stored} are stored").into());
            }
            Measured::rate(n, elapsed.as_secs_f64(), problems)
        })
        .await
}

/// `drain_per_s` / `drain_no_trace_per_s` (no limit), `drain_key_limited_per_s` /
/// `drain_queue_limited_per_s` (every task in one limited queue, the limit set as a
/// `PUT /queues` would before the daemon starts): a backlog inserted before the daemon
/// starts; the rate is from the first claim to the last completion, on the database clock.
async fn pg_drain(bench: &Bench, traces: Traces, limit: Option<Limit>) -> Result<Measured> {
    let n = bench.loads.drain_tasks;
    bench
        .with_pg_database(|url| async move {
            bench.migrate(&url).await?;
            let db = pg::connect(&url).await?;
            match limit {
                None => pg::insert_backlog(&db, n).await?,
                Some(Limit::Key) => pg::insert_keyed_backlog(&db, n, LIMITED_KEYS, "key_concurrency = 1").await?,
                Some(Limit::Queue) => {
                    pg::insert_keyed_backlog(&db, n, 0, &format!("concurrency = {LIMITED_CONCURRENCY}")).await?
                }
            }
            let config = DaemonConfig::serve(&url)
                .env("JCT_POLL_INTERVAL_MS", 1_000)
                .env("JCT_TRACE", on_off(matches!(traces, Traces::On)));
            let mut daemon = bench.start_daemon(config).await?;
            progress!("  draining {n} tasks");
            wait_all_completed(&mut daemon, n, DRAIN_TIMEOUT, || pg::any_unfinished(&db), || pg::task_counts(&db))
                .await?;
            let problems = daemon.stop().await;
            Measured::rate(n, pg::drain_seconds(&db).await?, problems)
        })
        .await
}

/// Which limit a limited drain runs under.
#[derive(Clone, Copy)]
enum Limit {
    /// `key_concurrency` 1 over [`LIMITED_KEYS`] keys.
    Key,
    /// A queue `concurrency` of [`LIMITED_CONCURRENCY`].
    Queue,
}

const LIMITED_KEYS: usize = 1_000;
const LIMITED_CONCURRENCY: usize = 64;

/// Schedules `idle_schedules_cost_pct` stores beside the drain.
const IDLE_SCHEDULES: usize = 10_000;
/// How long the daemon runs before the backlog arrives: its ticker has read the schedules
/// by then, so the drain sees what idle schedules cost while the daemon runs.
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// The traceless drain of a backlog inserted (in one statement) while the daemon runs, with
/// `idle_schedules` schedules stored beside it that do not tick during the drain.
async fn pg_drain_beside_schedules(bench: &Bench, idle_schedules: usize) -> Result<f64> {
    let n = bench.loads.drain_tasks;
    bench
        .with_pg_database(|url| async move {
            bench.migrate(&url).await?;
            let db = pg::connect(&url).await?;
            pg::insert_idle_schedules(&db, idle_schedules).await?;
            let config = DaemonConfig::serve(&url).env("JCT_POLL_INTERVAL_MS", 1_000).env("JCT_TRACE", "off");
            let mut daemon = bench.start_daemon(config).await?;
            http::wait_healthy(&http::client(1)?, &daemon.base_url()).await?;
            tokio::time::sleep(IDLE_SETTLE).await;
            pg::insert_backlog(&db, n).await?;
            wait_all_completed(&mut daemon, n, DRAIN_TIMEOUT, || pg::any_unfinished(&db), || pg::task_counts(&db))
                .await?;
            let problems = daemon.stop().await;
            if !problems.is_empty() {
                return Err(format!("the daemon reported problems: {}", problems.join("; ")).into());
            }
            let rate = n as f64 / pg::drain_seconds(&db).await?;
            progress!("  {rate:.0} tasks/s beside {idle_schedules} idle schedules");
            Ok(rate)
        })
        .await
}

/// `idle_schedules_cost_pct`: how much slower the traceless drain is with 10,000 idle
/// schedules stored. The machine's drift between runs is larger than the cost sought, so
/// each repetition measures both drains in the order without, with, with, without, and the
/// cost is one minus the ratio of the sums.
async fn idle_schedules_cost(bench: &Bench) -> Result<Measured> {
    let mut rates = [0.0_f64; 4];
    for (i, schedules) in [0, IDLE_SCHEDULES, IDLE_SCHEDULES, 0].into_iter().enumerate() {
        rates[i] = pg_drain_beside_schedules(bench, schedules).await?;
    }
    let (without, with) = (rates[0] + rates[3], rates[1] + rates[2]);
    Ok(Measured { sample: Sample::Percent((1.0 - with / without) * 100.0), errors: 0, problems: Vec::new() })
}

/// A new SQLite database file in a fresh directory.
fn fresh_sqlite_file(bench: &Bench) -> Result<PathBuf> {
    Ok(bench.fresh_dir()?.join("tasks.db"))
}

/// Whether a SQLite file holds queued or running tasks, read off the async threads.
async fn sqlite_unfinished(path: PathBuf) -> Result<bool> {
    blocking(move || sqlite::any_unfinished(&path)).await
}

/// Reads the task counts of a SQLite file off the async threads.
async fn sqlite_counts(path: PathBuf) -> Result<TaskCounts> {
    blocking(move || sqlite::task_counts(&path)).await
}

/// `sqlite_drain_per_s`: the drain scenario on the embedded store, traces on.
async fn sqlite_drain(bench: &Bench) -> Result<Measured> {
    let n = bench.loads.drain_tasks;
    let path = fresh_sqlite_file(bench)?;
    let url = sqlite::url(&path);
    bench.migrate(&url).await?;
    let backlog_path = path.clone();
    blocking(move || sqlite::insert_backlog(&backlog_path, n)).await?;
    let mut daemon = bench.start_daemon(DaemonConfig::serve(&url)).await?;
    progress!("  draining {n} tasks");
    wait_all_completed(
        &mut daemon,
        n,
        DRAIN_TIMEOUT,
        || sqlite_unfinished(path.clone()),
        || sqlite_counts(path.clone()),
    )
    .await?;
    let problems = daemon.stop().await;
    let seconds = blocking(move || sqlite::drain_seconds(&path)).await?;
    Measured::rate(n, seconds, problems)
}

/// `sqlite_http_latency_ms`: single tasks over HTTP, one at a time, to one `serve`
/// process; the API wakes the worker in the same process.
async fn sqlite_http_latency(bench: &Bench) -> Result<Measured> {
    let n = bench.loads.latency_tasks;
    let path = fresh_sqlite_file(bench)?;
    let mut daemon = bench.start_daemon(DaemonConfig::serve(&sqlite::url(&path))).await?;
    let client = http::client(1)?;
    http::wait_healthy(&client, &daemon.base_url()).await?;
    progress!("  posting {n} tasks one by one");
    let tally = http::enqueue_sequentially(&client, &daemon.base_url(), n, LATENCY_PAUSE).await;
    let created = tally.created as usize;
    wait_all_completed(
        &mut daemon,
        created,
        LATENCY_TIMEOUT,
        || sqlite_unfinished(path.clone()),
        || sqlite_counts(path.clone()),
    )
    .await?;
    let mut problems = daemon.stop().await;
    problems.extend(tally.describe_errors());
    let latencies = blocking(move || sqlite::start_latencies_ms(&path)).await?;
    let mut measured = Measured::latency(&latencies, problems)?;
    measured.errors = tally.errors();
    Ok(measured)
}

/// Commands started by `command_start_ms` (and its sandbox-less twin), one at a time: each
/// costs a process start or two, not a row, so fewer than the latency scenarios' tasks.
const COMMAND_STARTS: usize = 200;

/// `command_start_ms` (`sandbox` = `bwrap`) and `command_start_no_sandbox_ms` (`none`): a
/// `serve` daemon on SQLite runs `sh -c 'echo started'`, one task at a time; latency is from
/// sending the enqueue to the program's line showing in the task's `log.txt`, on the bench's
/// clock (the file is looked at every 0.2 ms).
async fn command_start(bench: &Bench, sandbox: &str) -> Result<Measured> {
    let n = if bench.quick { COMMAND_STARTS / 10 } else { COMMAND_STARTS };
    let workdir = bench.fresh_dir()?;
    let traces = workdir.join("traces");
    std::fs::create_dir(&traces).with_context(|| format!("creating {}", traces.display()))?;
    let config = DaemonConfig::serve(&sqlite::url(&workdir.join("tasks.db")))
        .env("JCT_TRACE_DIR", traces.display())
        .env("JCT_WORKSPACE_DIR", workdir.join("ws").display())
        .env("JCT_COMMAND_ALLOW", "sh")
        .env("JCT_SANDBOX", sandbox);
    let daemon = Daemon::start(&bench.bin, &workdir, &config).await?;
    let client = http::client(1)?;
    let base = daemon.base_url();
    http::wait_healthy(&client, &base).await?;
    progress!("  {n} commands one by one (JCT_SANDBOX={sandbox})");
    let body = serde_json::json!({"type": "command", "payload": {"argv": ["sh", "-c", "echo started"]}});
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = std::time::Instant::now();
        let answer: serde_json::Value =
            client.post(format!("{base}/tasks/enqueue")).json(&body).send().await?.error_for_status()?.json().await?;
        let id = answer["task_id"].as_str().ok_or("the enqueue answer has no task_id")?.to_string();
        let log = traces.join(&id).join("log.txt");
        poll_until("the program's line in log.txt", Duration::from_micros(200), LATENCY_TIMEOUT, || {
            let log = log.clone();
            async move { Ok(std::fs::read_to_string(&log).ok().filter(|t| t.contains("stdout: started")).map(|_| ())) }
        })
        .await?;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        // The next one starts alone: wait for this one's end.
        poll_until("the command to end", Duration::from_millis(1), LATENCY_TIMEOUT, || {
            let path = traces.join(&id).join("output.json");
            async move { Ok(path.exists().then_some(())) }
        })
        .await?;
    }
    let problems = daemon.stop().await;
    Measured::latency(&latencies, problems)
}

/// `remote_latency_ms`: an HTTP worker waits in a long-poll claim; another service inserts
/// a task with a plain INSERT; latency is from sending the INSERT to the claim's answer,
/// on the bench's clock. The daemon runs the `api` role, so only NOTIFY can wake the claim.
async fn remote_latency(bench: &Bench) -> Result<Measured> {
    let n = bench.loads.latency_tasks;
    bench
        .with_pg_database(|url| async move {
            let config = DaemonConfig::serve(&url).subcommand("api").env("JCT_TRACE", "off");
            let daemon = bench.start_daemon(config).await?;
            let client = http::client(2)?;
            let base = daemon.base_url();
            http::wait_healthy(&client, &base).await?;
            let mut problems = Vec::new();
            if let Err(e) = http::wait_listener(&client, &base).await {
                problems.push(e.to_string());
            }
            tokio::time::sleep(LISTENER_SETTLE).await;
            let worker = http::register_worker(&client, &base, "echo", 1).await?;
            let db = pg::connect(&url).await?;
            let insert = db.prepare("INSERT INTO tasks (type, payload) VALUES ('echo', '{}')").await?;
            progress!("  {n} inserts, each answered to a waiting HTTP claim");
            let mut latencies = Vec::with_capacity(n);
            for _ in 0..n {
                let claim = {
                    let (client, base, worker) = (client.clone(), base.clone(), worker.clone());
                    tokio::spawn(async move { http::claim(&client, &base, &worker, 1, 30_000).await })
                };
                // Let the claim reach the server and start waiting.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let sent = std::time::Instant::now();
                db.execute(&insert, &[]).await?;
                let tasks = claim.await.map_err(|e| e.to_string())??;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                if tasks.len() != 1 {
                    return Err(format!("a claim answered {} tasks for one insert", tasks.len()).into());
                }
                http::complete(&client, &base, &tasks[0]).await?;
            }
            problems.extend(daemon.stop().await);
            Measured::latency(&latencies, problems)
        })
        .await
}

/// `remote_drain_per_s`: a backlog of no-op tasks drained by four HTTP workers claiming up
/// to 100 at a time and completing each with its own request (a claim's tasks concurrently,
/// as a worker with 100 slots would); traces off; the daemon runs
/// the `api` role, so no in-process worker competes. The rate is from the first claim to
/// the last completion, on the database clock.
async fn remote_drain(bench: &Bench) -> Result<Measured> {
    const WORKERS: usize = 4;
    let n = bench.loads.drain_tasks;
    bench
        .with_pg_database(|url| async move {
            bench.migrate(&url).await?;
            let db = pg::connect(&url).await?;
            pg::insert_backlog(&db, n).await?;
            let config = DaemonConfig::serve(&url).subcommand("api").env("JCT_TRACE", "off");
            let mut daemon = bench.start_daemon(config).await?;
            // Room for every request in flight: four claims of 100 completed at once.
            let client = http::client(WORKERS * 100)?;
            let base = daemon.base_url();
            http::wait_healthy(&client, &base).await?;
            progress!("  draining {n} tasks with {WORKERS} HTTP workers");
            let mut runs = Vec::new();
            for _ in 0..WORKERS {
                let worker = http::register_worker(&client, &base, "echo", 100).await?;
                let (client, base) = (client.clone(), base.clone());
                runs.push(tokio::spawn(async move { http::work_until_idle(&client, &base, &worker).await }));
            }
            let mut done = 0;
            for run in runs {
                done += run.await.map_err(|e| e.to_string())??;
            }
            if done != n {
                return Err(format!("the workers completed {done} tasks of {n}").into());
            }
            wait_all_completed(&mut daemon, n, DRAIN_TIMEOUT, || pg::any_unfinished(&db), || pg::task_counts(&db))
                .await?;
            let problems = daemon.stop().await;
            Measured::rate(n, pg::drain_seconds(&db).await?, problems)
        })
        .await
}

/// Rows in the table the dashboard scenarios read.
const UI_HISTORY_ROWS: usize = 1_000_000;
/// Requests timed per repetition of a dashboard scenario (after a few untimed ones).
const UI_REQUESTS: usize = 100;
const UI_WARMUP: usize = 5;

#[derive(Clone, Copy)]
enum UiPage {
    Tasks,
    Overview,
}

/// `ui_tasks_page_ms` / `ui_overview_ms`: a dashboard page on a table of a million tasks
/// (`pg::insert_history`: a day of history, mostly completed), time from request to the
/// last byte of the page, one request at a time. The tasks page rotates through the
/// unfiltered first page, a rare status, the next page of it (keyset), and a queue; the
/// overview is one page. An API-only daemon, so no worker touches the rows.
async fn ui_page(bench: &Bench, page: UiPage) -> Result<Measured> {
    let rows = if bench.quick { UI_HISTORY_ROWS / 10 } else { UI_HISTORY_ROWS };
    bench
        .with_pg_database(|url| async move {
            bench.migrate(&url).await?;
            let db = pg::connect(&url).await?;
            progress!("  loading {rows} tasks of history");
            let middle_failed = pg::insert_history(&db, rows).await?;
            let daemon = bench.start_daemon(DaemonConfig::serve(&url).subcommand("api")).await?;
            let client = http::client(1)?;
            let base = daemon.base_url();
            http::wait_healthy(&client, &base).await?;
            let paths: Vec<String> = match page {
                UiPage::Overview => vec!["/ui".into()],
                UiPage::Tasks => vec![
                    "/ui/tasks".into(),
                    "/ui/tasks?status=failed".into(),
                    format!("/ui/tasks?status=failed&before={middle_failed}"),
                    "/ui/tasks?queue=q3".into(),
                ],
            };
            let mut times = Vec::with_capacity(UI_REQUESTS);
            for i in 0..UI_WARMUP + UI_REQUESTS {
                let path = &paths[i % paths.len()];
                let started = std::time::Instant::now();
                let res = client.get(format!("{base}{path}")).send().await.context("requesting a dashboard page")?;
                let status = res.status();
                let body = res.text().await.context("reading a dashboard page")?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if !status.is_success() || !body.contains("</html>") {
                    return Err(format!("GET {path} answered {status}").into());
                }
                if i >= UI_WARMUP {
                    times.push(ms);
                }
            }
            let problems = daemon.stop().await;
            Measured::latency(&times, problems)
        })
        .await
}

/// How long `schedule_fire_lag_ms` lets its every-second schedule fire.
const SCHEDULE_RUN: Duration = Duration::from_secs(20);

/// `schedule_fire_lag_ms`: a 6-field schedule firing every second on PostgreSQL; the lag of
/// each tick is `started_at - scheduled_for` (the tick's instant to the task's start), both
/// from the database's row (the tick is the daemon's clock, the start the database's: one
/// machine, one clock).
async fn schedule_fire_lag(bench: &Bench) -> Result<Measured> {
    bench
        .with_pg_database(|url| async move {
            let daemon = bench.start_daemon(DaemonConfig::serve(&url)).await?;
            let mut problems = Vec::new();
            let client = http::client(1)?;
            http::wait_healthy(&client, &daemon.base_url()).await?;
            if let Err(e) = http::wait_listener(&client, &daemon.base_url()).await {
                problems.push(e.to_string());
            }
            let body = serde_json::json!({ "name": "lag", "cron": "* * * * * *", "task": { "type": "echo" } });
            let res = client
                .post(format!("{}/schedules", daemon.base_url()))
                .json(&body)
                .send()
                .await
                .context("creating the schedule")?;
            if res.status() != reqwest::StatusCode::CREATED {
                return Err(format!("POST /schedules answered {}", res.status()).into());
            }
            progress!("  letting an every-second schedule fire for {SCHEDULE_RUN:?}");
            tokio::time::sleep(SCHEDULE_RUN).await;
            let res = client
                .post(format!("{}/schedules/lag/pause", daemon.base_url()))
                .send()
                .await
                .context("pausing the schedule")?;
            if !res.status().is_success() {
                problems.push(format!("pausing the schedule answered {}", res.status()));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let db = pg::connect(&url).await?;
            let rows = db
                .query(
                    "SELECT (extract(epoch FROM started_at - scheduled_for) * 1000)::float8 FROM tasks \
                     WHERE schedule_name = 'lag' AND started_at IS NOT NULL",
                    &[],
                )
                .await
                .context("reading the fire lags")?;
            let lags: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
            if (lags.len() as u64) < SCHEDULE_RUN.as_secs() - 2 {
                problems.push(format!("only {} ticks started in {SCHEDULE_RUN:?}", lags.len()));
            }
            problems.extend(daemon.stop().await);
            Measured::latency(&lags, problems)
        })
        .await
}

/// `workflow_step_latency_ms`: two-step workflows (`parent`, then `child`) run by an HTTP
/// worker on an API-only daemon: the worker claims the parent, starts a long-poll claim
/// for the child (nothing is claimable yet), and completes the parent; the latency is from
/// sending that complete to the child's claim answer, on the bench's clock. It is the
/// release (the trigger in the parent's end), the wake-up and the claim.
async fn workflow_step_latency(bench: &Bench) -> Result<Measured> {
    let n = bench.loads.latency_tasks / 2;
    bench
        .with_pg_database(|url| async move {
            let config = DaemonConfig::serve(&url).subcommand("api").env("JCT_TRACE", "off");
            let daemon = bench.start_daemon(config).await?;
            let client = http::client(4)?;
            let base = daemon.base_url();
            http::wait_healthy(&client, &base).await?;
            let mut problems = Vec::new();
            if let Err(e) = http::wait_listener(&client, &base).await {
                problems.push(e.to_string());
            }
            tokio::time::sleep(LISTENER_SETTLE).await;
            // Two slots: the child's claim waits while the parent is still held.
            let worker = http::register_worker(&client, &base, "echo", 2).await?;
            let body = serde_json::json!({ "name": "latency", "steps": [
                { "key": "parent", "type": "echo" },
                { "key": "child", "type": "echo", "depends_on": ["parent"] }
            ] });
            progress!("  {n} workflows of two steps, each child claimed by a waiting HTTP worker");
            let mut latencies = Vec::with_capacity(n);
            for _ in 0..n {
                let res =
                    client.post(format!("{base}/workflows")).json(&body).send().await.context("POST /workflows")?;
                if res.status() != reqwest::StatusCode::CREATED {
                    return Err(format!("POST /workflows answered {}", res.status()).into());
                }
                let parent = http::claim(&client, &base, &worker, 1, 5_000).await?;
                if parent.len() != 1 || parent[0]["step_key"] != "parent" {
                    return Err(format!("the first claim answered {parent:?}").into());
                }
                let claim = {
                    let (client, base, worker) = (client.clone(), base.clone(), worker.clone());
                    tokio::spawn(async move { http::claim(&client, &base, &worker, 1, 30_000).await })
                };
                // Let the claim reach the server and start waiting.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let sent = std::time::Instant::now();
                http::complete(&client, &base, &parent[0]).await?;
                let child = claim.await.map_err(|e| e.to_string())??;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                if child.len() != 1 || child[0]["step_key"] != "child" {
                    return Err(format!("the child's claim answered {child:?}").into());
                }
                http::complete(&client, &base, &child[0]).await?;
            }
            problems.extend(daemon.stop().await);
            Measured::latency(&latencies, problems)
        })
        .await
}

/// Steps `workflow_fanout_per_s`'s first step spawns.
const FANOUT_STEPS: usize = 10_000;

/// `workflow_fanout_per_s`: a 1 → 10,000 → 1 workflow of no-op steps on PostgreSQL,
/// traces off. The bench, as an HTTP worker, claims the first step (`split`) and completes
/// it with a `spawn` of 10,000 `echo` steps in the same call; the daemon's own workers run
/// them, then `join`, which waits for all of them. The rate is the 10,001 steps after the
/// split over the time from the split's end to the join's, on the database clock.
async fn workflow_fanout(bench: &Bench) -> Result<Measured> {
    let n = if bench.quick { FANOUT_STEPS / 10 } else { FANOUT_STEPS };
    bench
        .with_pg_database(|url| async move {
            let config = DaemonConfig::serve(&url).env("JCT_TRACE", "off").env("JCT_MAX_BODY_BYTES", 16 << 20);
            let mut daemon = bench.start_daemon(config).await?;
            let client = http::client(2)?;
            let base = daemon.base_url();
            http::wait_healthy(&client, &base).await?;
            let worker = http::register_worker(&client, &base, "split", 1).await?;
            let body = serde_json::json!({ "name": "fanout", "steps": [
                { "key": "split", "type": "split" },
                { "key": "join", "type": "echo", "depends_on": ["split"] }
            ] });
            let res = client.post(format!("{base}/workflows")).json(&body).send().await.context("POST /workflows")?;
            if res.status() != reqwest::StatusCode::CREATED {
                return Err(format!("POST /workflows answered {}", res.status()).into());
            }
            let split = http::claim(&client, &base, &worker, 1, 5_000).await?;
            let Some(split) = split.first() else { return Err("the split step was not claimed".into()) };
            let steps: Vec<serde_json::Value> =
                (0..n).map(|i| serde_json::json!({ "key": format!("s{i}"), "type": "echo" })).collect();
            progress!("  1 → {n} → 1: the split completes spawning {n} steps");
            let id = split["task_id"].as_str().ok_or("a claimed task without task_id")?;
            let res = client
                .post(format!("{base}/tasks/{id}/complete"))
                .json(&serde_json::json!({ "lease_token": split["lease_token"], "spawn": steps }))
                .send()
                .await
                .context("POST complete with spawn")?;
            if res.status() != reqwest::StatusCode::OK {
                let status = res.status();
                return Err(
                    format!("complete with spawn answered {status}: {}", res.text().await.unwrap_or_default()).into()
                );
            }
            let db = pg::connect(&url).await?;
            wait_all_completed(&mut daemon, n + 2, DRAIN_TIMEOUT, || pg::any_unfinished(&db), || pg::task_counts(&db))
                .await?;
            let row = db
                .query_one(
                    "SELECT extract(epoch FROM (SELECT finished_at FROM tasks WHERE step_key = 'join') \
                                            - (SELECT finished_at FROM tasks WHERE step_key = 'split'))::float8",
                    &[],
                )
                .await
                .context("reading the fan-out's span")?;
            let problems = daemon.stop().await;
            Measured::rate(n + 1, row.get(0), problems)
        })
        .await
}
