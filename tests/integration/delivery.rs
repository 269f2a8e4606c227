//! Delivery guarantees with real processes and real signals, on both stores: crash
//! rescue, zombies, retries, timeouts, panics, graceful shutdown, idempotency under
//! concurrency, scheduling and cancellation of running tasks.

use crate::support;

use std::time::Duration;

use crate::support::{enqueue, get_task, wait_for, wait_status, Spawn, TestDb};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use devops_control_tower::handlers::{Handler, HandlerError, Registry, TaskContext};
use serde_json::{json, Value};

const STORES: [&str; 2] = ["sqlite", "postgres"];

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().with_timezone(&Utc)
}

fn read_json(path: std::path::PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Waits until the handler of task `id` has logged its first line.
async fn handler_started(traces: &std::path::Path, id: &str) {
    let log = traces.join(id).join("log.txt");
    wait_for("the handler to start", Duration::from_secs(5), || async {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("sleeping")).map(|_| ())
    })
    .await;
}

/// A daemon process on `db`, sharing `traces`, with a short lease.
fn daemon<'a>(db: &TestDb, traces: &std::path::Path, extra: &[(&'a str, &'a str)]) -> support::DaemonProcess {
    let mut s = Spawn::new()
        .env("DATABASE_URL", db.url())
        .env("JCT_TRACE_DIR", traces.display().to_string())
        .env("JCT_LEASE_SECONDS", "2")
        .env("JCT_POLL_INTERVAL_MS", "100");
    for (k, v) in extra {
        s = s.env(k, *v);
    }
    s.start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemons_task_is_finished_by_another_after_the_lease() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        let a = daemon(&db, traces.path(), &[]);
        let id = enqueue(&a.url(""), json!({"type": "sleep", "payload": {"ms": 1500}})).await;
        wait_status(&a.url(""), &id, "running", Duration::from_secs(5)).await;
        handler_started(traces.path(), &id).await;
        a.signal("KILL");
        let b = daemon(&db, traces.path(), &[]);
        let done = wait_status(&b.url(""), &id, "completed", Duration::from_secs(20)).await;
        assert_eq!(done["attempts"], 2, "{kind}: the second attempt finished it");
        assert!(done["last_error"].as_str().unwrap().contains("expired while running (attempt 1)"), "{kind}: {done}");
        let log = std::fs::read_to_string(traces.path().join(&id).join("log.txt")).unwrap();
        assert_eq!(log.lines().filter(|l| l.starts_with("=== attempt")).count(), 2, "{kind}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_daemons_late_result_is_refused() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        let zombie = daemon(&db, traces.path(), &[]);
        let id = enqueue(&zombie.url(""), json!({"type": "sleep", "payload": {"ms": 1500}})).await;
        wait_status(&zombie.url(""), &id, "running", Duration::from_secs(5)).await;
        handler_started(traces.path(), &id).await;
        zombie.signal("STOP");
        let b = daemon(&db, traces.path(), &[]);
        let done = wait_status(&b.url(""), &id, "completed", Duration::from_secs(20)).await;
        assert_eq!(done["attempts"], 2);
        zombie.signal("CONT");
        wait_for("the zombie to notice", Duration::from_secs(10), || async {
            let log = zombie.stderr();
            (log.contains("result discarded") || log.contains("no longer running under our lease")).then_some(())
        })
        .await;
        let after = get_task(&b.url(""), &id).await;
        assert_eq!(after["status"], "completed", "{kind}");
        assert_eq!(after["attempts"], 2, "{kind}");
        assert_eq!(after["finished_at"], done["finished_at"], "{kind}: the zombie changed nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_growing_gaps_then_fail() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        let d = daemon(&db, traces.path(), &[("JCT_POLL_INTERVAL_MS", "60000")]);
        let id =
            enqueue(&d.url(""), json!({"type": "fail", "payload": {"message": "no luck"}, "max_attempts": 3})).await;
        let failed = wait_status(&d.url(""), &id, "failed", Duration::from_secs(20)).await;
        assert_eq!((failed["attempts"].as_i64(), failed["last_error"].as_str()), (Some(3), Some("no luck")));
        let folder = traces.path().join(&id);
        let outs: Vec<Value> = ["output.attempt-1.json", "output.attempt-2.json", "output.json"]
            .iter()
            .map(|f| read_json(folder.join(f)))
            .collect();
        let statuses: Vec<&str> = outs.iter().map(|o| o["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["queued", "queued", "failed"], "{kind}");
        let gap1 = time(&outs[1]["started_at"]) - time(&outs[0]["finished_at"]);
        let gap2 = time(&outs[2]["started_at"]) - time(&outs[1]["finished_at"]);
        assert!(gap1 >= chrono::Duration::milliseconds(700), "{kind}: first gap {gap1}");
        assert!(gap2 > gap1, "{kind}: gaps grow: {gap1} then {gap2}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_timeout_fails_with_timed_out() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        let d = daemon(&db, traces.path(), &[]);
        let body = json!({"type": "sleep", "payload": {"ms": 30000}, "timeout_seconds": 1, "max_attempts": 1});
        let id = enqueue(&d.url(""), body).await;
        let failed = wait_status(&d.url(""), &id, "failed", Duration::from_secs(10)).await;
        assert_eq!(failed["last_error"], "timed out after 1 s", "{kind}");
        let took = time(&failed["finished_at"]) - time(&failed["started_at"]);
        assert!(took < chrono::Duration::seconds(5), "{kind}: stopped at the timeout, not after the sleep");
    }
}

/// A handler that panics, for the panic test.
struct Panics;

#[async_trait]
impl Handler for Panics {
    async fn run(&self, _ctx: TaskContext) -> Result<Value, HandlerError> {
        panic!("the handler exploded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_attempt_and_the_worker_goes_on() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let mut registry = Registry::builtin();
        registry.register("panics", Panics);
        let app = support::start_in_process(&db.backend().await, &db.url(), &[], registry).await;
        let id = enqueue(&app.base, json!({"type": "panics", "max_attempts": 1})).await;
        let failed = wait_status(&app.base, &id, "failed", Duration::from_secs(10)).await;
        let err = failed["last_error"].as_str().unwrap();
        assert!(err.contains("panicked") && err.contains("the handler exploded"), "{kind}: {err}");
        let next = enqueue(&app.base, json!({"type": "echo", "payload": 7})).await;
        let done = wait_status(&app.base, &next, "completed", Duration::from_secs(10)).await;
        assert_eq!(done["result"], 7, "{kind}: the worker still runs tasks");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_short_task_finish_and_exits_zero() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        let mut d = daemon(&db, traces.path(), &[]);
        let id = enqueue(&d.url(""), json!({"type": "sleep", "payload": {"ms": 800}})).await;
        wait_status(&d.url(""), &id, "running", Duration::from_secs(5)).await;
        d.signal("TERM");
        assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0), "{kind}: {}", d.stderr());
        let after = db.store().await.get(id.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(after.status.as_str(), "completed", "{kind}");
        assert!(traces.path().join(&id).join("output.json").is_file());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_a_long_task_back_after_the_grace_period() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        let mut d = daemon(&db, traces.path(), &[("JCT_SHUTDOWN_GRACE_SECONDS", "1")]);
        let id = enqueue(&d.url(""), json!({"type": "sleep", "payload": {"ms": 60000}})).await;
        wait_status(&d.url(""), &id, "running", Duration::from_secs(5)).await;
        d.signal("TERM");
        assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0), "{kind}: {}", d.stderr());
        let after = db.store().await.get(id.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(after.status.as_str(), "queued", "{kind}: handed back");
        assert_eq!(after.attempts, 0, "{kind}: the interrupted attempt is not counted");
        assert!(after.locked_by.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_concurrent_enqueues_with_one_key_make_one_task() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = support::start_in_process(&db.backend().await, &db.url(), &[], Registry::builtin()).await;
        let body = json!({"type": "echo", "idempotency_key": format!("once-{kind}")});
        let mut joins = Vec::new();
        for _ in 0..12 {
            let (url, body) = (format!("{}/tasks/enqueue", app.base), body.clone());
            joins.push(tokio::spawn(async move {
                let res = support::http().post(url).json(&body).send().await.unwrap();
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.unwrap())
            }));
        }
        let mut answers = Vec::new();
        for j in joins {
            answers.push(j.await.unwrap());
        }
        let created: Vec<_> = answers.iter().filter(|(s, _)| *s == 201).collect();
        let conflicts: Vec<_> = answers.iter().filter(|(s, _)| *s == 409).collect();
        assert_eq!((created.len(), conflicts.len()), (1, 11), "{kind}: {answers:?}");
        let id = &created[0].1["task_id"];
        assert!(conflicts.iter().all(|(_, b)| &b["task_id"] == id), "{kind}: every 409 names the one task");
        let filter = devops_control_tower::task::TaskFilter { limit: 100, ..Default::default() };
        assert_eq!(db.store().await.list(&filter).await.unwrap().len(), 1, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_task_starts_on_time_without_waiting_for_the_poll() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        let d = daemon(&db, traces.path(), &[("JCT_POLL_INTERVAL_MS", "60000")]);
        let run_at = Utc::now() + chrono::Duration::milliseconds(1500);
        let id = enqueue(&d.url(""), json!({"type": "echo", "run_at": run_at.to_rfc3339()})).await;
        let done = wait_status(&d.url(""), &id, "completed", Duration::from_secs(10)).await;
        let started = time(&done["started_at"]);
        assert!(started >= run_at, "{kind}: not before run_at ({started} < {run_at})");
        let late = started - run_at;
        assert!(late < chrono::Duration::milliseconds(500), "{kind}: started {late} after run_at");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_its_handler() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        let d = daemon(&db, traces.path(), &[]);
        let id = enqueue(&d.url(""), json!({"type": "sleep", "payload": {"ms": 60000}})).await;
        wait_status(&d.url(""), &id, "running", Duration::from_secs(5)).await;
        let res = support::http().post(d.url(&format!("/tasks/{id}/cancel"))).send().await.unwrap();
        assert_eq!(res.status(), 200, "{kind}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "cancelled", "{kind}");
        let output = traces.path().join(&id).join("output.json");
        let out = wait_for("the handler to stop", Duration::from_secs(5), || async {
            output.is_file().then(|| read_json(output.clone()))
        })
        .await;
        assert_eq!(out["status"], "cancelled", "{kind}");
        let log = std::fs::read_to_string(traces.path().join(&id).join("log.txt")).unwrap();
        assert!(log.contains("sleep cancelled"), "{kind}: the handler saw its token: {log}");
        let after = get_task(&d.url(""), &id).await;
        assert_eq!(after["status"], "cancelled", "{kind}: the stopped handler's end did not overwrite it");
    }
}

/// On PostgreSQL a cancel reaches a task running in another daemon through NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_another_daemon_through_notify() {
    let db = TestDb::new("postgres").await;
    let traces = tempfile::tempdir().unwrap();
    let runner = Spawn::new()
        .arg("worker")
        .no_api()
        .env("DATABASE_URL", db.url())
        .env("JCT_TRACE_DIR", traces.path().display().to_string())
        .start();
    let api = Spawn::new().arg("api").env("DATABASE_URL", db.url()).start();
    let id = enqueue(&api.url(""), json!({"type": "sleep", "payload": {"ms": 60000}})).await;
    wait_status(&api.url(""), &id, "running", Duration::from_secs(5)).await;
    let res = support::http().post(api.url(&format!("/tasks/{id}/cancel"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let output = traces.path().join(&id).join("output.json");
    // Well before the 10 s heartbeat of a 30 s lease: only the notification explains it.
    wait_for("the other daemon to stop the handler", Duration::from_secs(3), || async {
        output.is_file().then_some(())
    })
    .await;
    assert_eq!(read_json(output)["status"], "cancelled");
    drop(runner);
}
