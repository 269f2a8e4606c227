//! A remote attempt's trace tells the same story as the store, with real daemon processes on
//! PostgreSQL and real HTTP (issue 24):
//! - a worker's heartbeats racing its `complete`s (with CPU load beside them) leave every
//!   trace folder with `output.json` saying completed and every CWOM Run `done`;
//! - a daemon killed (SIGKILL) or stopped (SIGTERM) and started again while three workers
//!   hold tasks: the lines, artifact and end posted to the new process land in the task's
//!   trace folder;
//! - a worker alternating between two `api` daemons on one database: each daemon's folder
//!   keeps what it accepted, says the attempt was claimed through another daemon, and the
//!   daemon that accepted the end writes `output.json`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{DaemonProcess, PgDb, Spawn};
use base64::Engine;
use serde_json::{json, Value};

/// One HTTP client per test: keeps its connections instead of opening one per request.
fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

async fn send(client: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = client.request(method, &url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> (u16, Value) {
    send(client, reqwest::Method::POST, format!("{base}{path}"), Some(body)).await
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    send(client, reqwest::Method::GET, format!("{base}{path}"), None).await
}

/// An `api`-role daemon (HTTP and the worker protocol, no in-process worker) on `db`,
/// writing its trace folders under `trace_dir`.
fn api_daemon(db: &PgDb, trace_dir: &Path) -> DaemonProcess {
    Spawn::new().arg("api").env("DATABASE_URL", &db.url).env("JCT_TRACE_DIR", trace_dir.display().to_string()).start()
}

async fn register(client: &reqwest::Client, base: &str, types: &[&str], max_slots: u32) -> String {
    let (status, body) =
        post(client, base, "/workers", json!({ "name": "trace-tester", "types": types, "max_slots": max_slots })).await;
    assert_eq!(status, 201, "register: {body}");
    body["worker_id"].as_str().unwrap().to_string()
}

async fn claim(client: &reqwest::Client, base: &str, worker: &str, max: u32, wait_ms: u64) -> Vec<Value> {
    let (status, body) =
        post(client, base, "/tasks/claim", json!({ "worker_id": worker, "max": max, "wait_ms": wait_ms })).await;
    assert_eq!(status, 200, "claim through {base}: {body}");
    body["tasks"].as_array().unwrap().clone()
}

/// `POST /tasks/{id}/{op}` for a claimed task, with its lease token.
async fn op(client: &reqwest::Client, base: &str, task: &Value, name: &str, mut body: Value) -> (u16, Value) {
    body["lease_token"] = task["lease_token"].clone();
    post(client, base, &format!("/tasks/{}/{name}", task["task_id"].as_str().unwrap()), body).await
}

fn id_of(task: &Value) -> String {
    task["task_id"].as_str().unwrap().to_string()
}

/// A Repo and an Issue through the /cwom routes; returns the Issue's id.
async fn cwom_issue(client: &reqwest::Client, base: &str) -> String {
    let slug = format!("jct-{}", uuid::Uuid::now_v7());
    let (status, repo) =
        post(client, base, "/cwom/repos", json!({ "name": "JCT", "slug": slug, "source": { "system": "github" } }))
            .await;
    assert_eq!(status, 201, "{repo}");
    let (status, issue) = post(
        client,
        base,
        "/cwom/issues",
        json!({ "repo": { "kind": "Repo", "id": repo["id"] }, "title": "Busy fleet", "type": "feature" }),
    )
    .await;
    assert_eq!(status, 201, "{issue}");
    issue["id"].as_str().unwrap().to_string()
}

/// Every Run of the Issue, paged through `GET /cwom/runs`, by the task they record
/// (`meta["jct.task_id"]`): the statuses of each task's Runs.
async fn run_statuses(client: &reqwest::Client, base: &str, issue: &str) -> HashMap<String, Vec<String>> {
    let mut by_task: HashMap<String, Vec<String>> = HashMap::new();
    for page in 0..20 {
        let (status, runs) =
            get(client, base, &format!("/cwom/runs?issue_id={issue}&limit=1000&offset={}", page * 1000)).await;
        assert_eq!(status, 200, "{runs}");
        let runs = runs.as_array().unwrap();
        if runs.is_empty() {
            break;
        }
        for run in runs {
            let task =
                run["meta"]["jct.task_id"].as_str().unwrap_or_else(|| panic!("a Run without jct.task_id: {run}"));
            by_task.entry(task.to_string()).or_default().push(run["status"].as_str().unwrap_or("?").to_string());
        }
    }
    by_task
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Why `<dir>/<id>/output.json` does not say completed, if it does not.
fn not_completed(dir: &Path, id: &str) -> Option<String> {
    match read_json(&dir.join(id).join("output.json")) {
        Ok(output) if output["status"] == "completed" => None,
        Ok(output) => Some(format!("{id}: output.json says {output}")),
        Err(e) => Some(e),
    }
}

/// CPU burners (`sh -c 'while :; do :; done'`), killed on drop, also when the test panics.
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize) -> Burners {
        Burners(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("starting a CPU burner")
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_racing_completes_keep_every_trace() {
    const TASKS: usize = 1_000;
    let db = PgDb::new().await;
    let traces = tempfile::tempdir().unwrap();
    let daemon = api_daemon(&db, traces.path());
    let base = daemon.url("");
    let http = client();
    let issue = cwom_issue(&http, &base).await;
    let batch: Vec<Value> =
        (0..TASKS).map(|i| json!({ "type": "echo", "payload": { "i": i }, "cwom_issue_id": issue })).collect();
    let (status, body) = post(&http, &base, "/tasks/enqueue_batch", json!(batch)).await;
    assert_eq!(status, 201, "{body}");
    let ids: Vec<String> = body["task_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    assert_eq!(ids.len(), TASKS);
    let worker = register(&http, &base, &["echo"], 50).await;

    let _burners = Burners::start(2);
    // The tasks the worker holds; a task leaves this set only once its `complete` answered,
    // so heartbeats keep naming it while the end is being written.
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let beats = Arc::new(AtomicUsize::new(0));
    let beater = {
        let (held, stop, beats, http, base, worker) =
            (held.clone(), stop.clone(), beats.clone(), http.clone(), base.clone(), worker.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let running: Vec<String> = held.lock().unwrap().iter().cloned().collect();
                if running.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                let (status, body) =
                    post(&http, &base, &format!("/workers/{worker}/heartbeat"), json!({ "running": running })).await;
                assert_eq!(status, 200, "worker heartbeat: {body}");
                beats.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut answers: HashMap<u16, usize> = HashMap::new();
    let mut refused = Vec::new();
    let mut completed = 0;
    // Bounded: 1,000 tasks in claims of up to 50 need 20 rounds; the rest is slack.
    for _ in 0..200 {
        if completed == TASKS {
            break;
        }
        let tasks = claim(&http, &base, &worker, 50, 2_000).await;
        if tasks.is_empty() {
            break;
        }
        held.lock().unwrap().extend(tasks.iter().map(id_of));
        for task in &tasks {
            let (status, body) = op(&http, &base, task, "complete", json!({ "result": task["payload"] })).await;
            *answers.entry(status).or_default() += 1;
            if status != 200 {
                refused.push(format!("{}: {status} {body}", id_of(task)));
            }
            completed += 1;
            held.lock().unwrap().remove(&id_of(task));
        }
    }
    stop.store(true, Ordering::Relaxed);
    beater.await.expect("the heartbeat loop");
    let beats = beats.load(Ordering::Relaxed);
    eprintln!("{completed} completes answered {answers:?}; {beats} worker heartbeats sent beside them");
    assert_eq!(completed, TASKS, "the worker claimed and completed every task");
    assert!(refused.is_empty(), "{} completes were not answered 200: {:?}", refused.len(), &refused);
    assert!(beats >= 20, "the heartbeats raced the completes: only {beats} were sent");

    let client_db = db.client().await;
    let not_done: i64 =
        client_db.query_one("SELECT count(*) FROM tasks WHERE status <> 'completed'", &[]).await.unwrap().get(0);
    assert_eq!(not_done, 0, "every task is completed in the store");

    let missing: Vec<String> = ids.iter().filter_map(|id| not_completed(traces.path(), id)).collect();
    let runs = run_statuses(&http, &base, &issue).await;
    let bad_runs: Vec<String> = ids
        .iter()
        .filter_map(|id| match runs.get(id) {
            Some(statuses) if !statuses.is_empty() && statuses.iter().all(|s| s == "done") => None,
            other => Some(format!("{id}: Runs {other:?}")),
        })
        .collect();
    assert!(
        missing.is_empty() && bad_runs.is_empty(),
        "{} of {TASKS} trace folders lack an output.json saying completed ({:?}); {} tasks' CWOM Runs are not all \
         done ({:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        bad_runs.len(),
        bad_runs.iter().take(5).collect::<Vec<_>>()
    );
}

/// Three workers hold a task each on a daemon that is stopped with `sig` and started again
/// on the same database and trace dir; each then posts lines, an artifact and its end to
/// the new process.
async fn a_restarted_daemon_keeps_remote_traces(sig: &str) {
    const WORKERS: usize = 3;
    let db = PgDb::new().await;
    let traces = tempfile::tempdir().unwrap();
    let mut first = api_daemon(&db, traces.path());
    let old = first.url("");
    let http = client();
    let mut held = Vec::new();
    for i in 0..WORKERS {
        let worker = register(&http, &old, &["echo"], 1).await;
        let (status, body) =
            post(&http, &old, "/tasks/enqueue", json!({ "type": "echo", "payload": { "i": i } })).await;
        assert_eq!(status, 201, "{body}");
        let mut tasks = claim(&http, &old, &worker, 1, 2_000).await;
        assert_eq!(tasks.len(), 1, "worker {i} claimed a task");
        let task = tasks.remove(0);
        let (status, body) =
            op(&http, &old, &task, "log", json!({ "seq": 1, "lines": [format!("before-restart-{i}")] })).await;
        assert_eq!(status, 200, "{body}");
        held.push((worker, task));
    }

    first.signal(sig);
    first.wait_exit(Duration::from_secs(40));
    let second = api_daemon(&db, traces.path());
    let new = second.url("");
    // Every answer is checked, and all that went wrong is reported at once.
    let mut problems = Vec::new();
    for (i, (_, task)) in held.iter().enumerate() {
        let lines = vec![format!("after-restart-{i}-a"), format!("after-restart-{i}-b")];
        let (status, body) = op(&http, &new, task, "log", json!({ "seq": 2, "lines": lines })).await;
        if (status, &body["appended"]) != (200, &json!(true)) {
            problems.push(format!("task {i}: log through the new process answered {status} {body}"));
        }
        let content = base64::engine::general_purpose::STANDARD.encode(format!("artifact of {i}"));
        let (status, body) = op(
            &http,
            &new,
            task,
            "artifacts",
            json!({ "name": "after-restart.txt", "type": "report", "content_base64": content }),
        )
        .await;
        if status != 201 {
            problems.push(format!("task {i}: artifact through the new process answered {status} {body}"));
        }
        let (status, body) = op(&http, &new, task, "complete", json!({ "result": { "i": i } })).await;
        if (status, body["status"].as_str()) != (200, Some("completed")) {
            problems.push(format!("task {i}: complete through the new process answered {status} {body}"));
        }
    }

    for (i, (_, task)) in held.iter().enumerate() {
        let id = id_of(task);
        let folder = traces.path().join(&id);
        let log = std::fs::read_to_string(folder.join("log.txt")).unwrap_or_default();
        for line in [format!("before-restart-{i}"), format!("after-restart-{i}-a"), format!("after-restart-{i}-b")] {
            if !log.contains(&line) {
                problems.push(format!("{id}: log.txt lacks {line:?}"));
            }
        }
        match std::fs::read(folder.join("artifacts/after-restart.txt")) {
            Ok(bytes) if bytes == format!("artifact of {i}").as_bytes() => {}
            Ok(bytes) => problems.push(format!("{id}: the artifact holds {:?}", String::from_utf8_lossy(&bytes))),
            Err(e) => problems.push(format!("{id}: artifacts/after-restart.txt: {e}")),
        }
        if let Some(why) = not_completed(traces.path(), &id) {
            problems.push(why);
        }
    }
    assert!(problems.is_empty(), "after a SIG{sig} restart: {problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_and_restarted_keeps_remote_traces() {
    a_restarted_daemon_keeps_remote_traces("KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_terminated_and_restarted_keeps_remote_traces() {
    a_restarted_daemon_keeps_remote_traces("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_alternating_between_two_daemons_keeps_its_trace() {
    const TASKS: usize = 4;
    const ELSEWHERE: &str = "claimed through another daemon";
    let db = PgDb::new().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (api_daemon(&db, dir_a.path()), api_daemon(&db, dir_b.path()));
    let daemons = [(a.url(""), dir_a.path()), (b.url(""), dir_b.path())];
    let name = ["A", "B"];
    let http = client();
    let worker = register(&http, &daemons[0].0, &["echo"], TASKS as u32).await;

    // Task i is claimed through daemon i % 2; tasks 0 and 1 end through the other daemon,
    // tasks 2 and 3 through the one that served the claim.
    let mut claimed = Vec::new();
    for i in 0..TASKS {
        let (base, _) = &daemons[i % 2];
        let (status, body) =
            post(&http, base, "/tasks/enqueue", json!({ "type": "echo", "payload": { "i": i } })).await;
        assert_eq!(status, 201, "{body}");
        let mut tasks = claim(&http, base, &worker, 1, 2_000).await;
        assert_eq!(tasks.len(), 1, "task {i} claimed through {}", name[i % 2]);
        claimed.push(tasks.remove(0));
    }
    // Every answer and file is checked, and all that went wrong is reported at once.
    let mut problems = Vec::new();
    // Lines alternately to A and B: seq 1 and 3 to A, 2 and 4 to B.
    let line = |i: usize, seq: usize| format!("task-{i}-seq-{seq}-to-{}", name[(seq - 1) % 2]);
    for seq in 1..=4 {
        for (i, task) in claimed.iter().enumerate() {
            let (base, _) = &daemons[(seq - 1) % 2];
            let (status, body) = op(&http, base, task, "log", json!({ "seq": seq, "lines": [line(i, seq)] })).await;
            if (status, &body["appended"]) != (200, &json!(true)) {
                problems
                    .push(format!("task {i}: log seq {seq} through {} answered {status} {body}", name[(seq - 1) % 2]));
            }
        }
    }
    let ender = |i: usize| if i < 2 { 1 - i % 2 } else { i % 2 };
    for (i, task) in claimed.iter().enumerate() {
        let (base, _) = &daemons[ender(i)];
        let (status, body) = op(&http, base, task, "complete", json!({ "result": { "i": i } })).await;
        if (status, body["status"].as_str()) != (200, Some("completed")) {
            problems.push(format!("task {i}: complete through {} answered {status} {body}", name[ender(i)]));
        }
    }
    for (i, task) in claimed.iter().enumerate() {
        let id = id_of(task);
        let (claimer, end) = (i % 2, ender(i));
        for (d, (_, dir)) in daemons.iter().enumerate() {
            let log = std::fs::read_to_string(dir.join(&id).join("log.txt")).unwrap_or_default();
            for seq in (1..=4).filter(|seq| (seq - 1) % 2 == d) {
                if !log.contains(&line(i, seq)) {
                    problems.push(format!("task {i} ({id}): {}'s log.txt lacks {:?}", name[d], line(i, seq)));
                }
            }
            if d != claimer && !log.lines().any(|l| l.contains(ELSEWHERE)) {
                problems.push(format!(
                    "task {i} ({id}): {}'s log.txt (claim served by {}) has no line saying {ELSEWHERE:?}:\n{log}",
                    name[d], name[claimer]
                ));
            }
        }
        if let Some(why) = not_completed(daemons[end].1, &id) {
            problems.push(format!("task {i}: completed through {}: {why}", name[end]));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The store agrees.
    for task in &claimed {
        let (_, stored) = get(&http, &daemons[0].0, &format!("/tasks/{}", id_of(task))).await;
        assert_eq!(stored["status"], "completed", "{stored}");
    }
}
