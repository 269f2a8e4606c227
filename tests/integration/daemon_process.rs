//! The real binary as a process, on the embedded SQLite default: start-up, signals,
//! bad configuration, raw inserts from another process, and per-task logs.

use crate::support;

use std::time::Duration;

use crate::support::{wait_for, wait_status, Spawn};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configuration_creates_the_default_database_and_logs() {
    let mut d = Spawn::new().start();
    let base = d.url("");
    let id = support::enqueue(&base, json!({"type": "echo", "payload": {"n": 1}})).await;
    wait_status(&base, &id, "completed", Duration::from_secs(10)).await;
    assert!(d.workdir.join("devops_control_tower.db").is_file(), "the default SQLite file");
    assert!(d.workdir.join("logs").join(&id).join("output.json").is_file(), "traces under ./logs");
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_exit_zero() {
    for sig in ["TERM", "INT"] {
        let mut d = Spawn::new().start();
        assert_eq!(support::http().get(d.url("/health")).send().await.unwrap().status(), 200);
        d.signal(sig);
        let status = d.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "SIG{sig}; stderr:\n{}", d.stderr());
        assert!(d.stderr().contains("stopped cleanly"), "{}", d.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_insert_from_another_process_is_processed() {
    let d = Spawn::new().env("JCT_POLL_INTERVAL_MS", "100").start();
    let db = d.workdir.join("devops_control_tower.db");
    // This test process is the "other service": it writes the file directly.
    let id: String = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row(
            "INSERT INTO tasks (type, payload) VALUES ('echo', '{\"from\":\"sql\"}') RETURNING id",
            [],
            |r| r.get(0),
        )
        .unwrap()
    })
    .await
    .unwrap();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "the SQL default made a uuid: {id}");
    let done = wait_status(&d.url(""), &id, "completed", Duration::from_secs(10)).await;
    assert_eq!(done["result"], json!({"from": "sql"}));
    assert_eq!(done["queue"], "default");
    assert_eq!(done["max_attempts"], 3);
    assert!(d.trace_dir.join(&id).join("output.json").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_nobody_serves_waits_queued_and_is_counted() {
    let d = Spawn::new().env("JCT_POLL_INTERVAL_MS", "100").start();
    let db = d.workdir.join("devops_control_tower.db");
    let insert = |task_type: &'static str| {
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(db).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                conn.query_row("INSERT INTO tasks (type) VALUES (?1) RETURNING id", [task_type], |r| {
                    r.get::<_, String>(0)
                })
                .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let waiting = insert("no_such_type").await;
    // An echo inserted after it runs: the worker's claim skips the type it cannot run.
    let echo = insert("echo").await;
    wait_status(&d.url(""), &echo, "completed", Duration::from_secs(10)).await;
    let task: Value =
        support::http().get(d.url(&format!("/tasks/{waiting}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!((task["status"].as_str(), task["attempts"].as_i64()), (Some("queued"), Some(0)), "{task}");
    assert!(!d.trace_dir.join(&waiting).exists(), "never started, so no trace folder");
    let metrics = support::http().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("jct_tasks_queued{task_type=\"no_such_type\"} 1"), "{metrics}");
}

/// Eight tasks run at once; each `log.txt` holds its own task's lines and no other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_write_only_to_their_own_log() {
    let d = Spawn::new().env("JCT_WORKERS", "8").start();
    let base = d.url("");
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(support::enqueue(&base, json!({"type": "sleep", "payload": {"ms": 400 + i}})).await);
    }
    let mut spans = Vec::new();
    for id in &ids {
        let t = wait_status(&base, id, "completed", Duration::from_secs(20)).await;
        let start = chrono::DateTime::parse_from_rfc3339(t["started_at"].as_str().unwrap()).unwrap();
        let end = chrono::DateTime::parse_from_rfc3339(t["finished_at"].as_str().unwrap()).unwrap();
        spans.push((start, end));
    }
    let latest_start = spans.iter().map(|s| s.0).max().unwrap();
    let earliest_end = spans.iter().map(|s| s.1).min().unwrap();
    assert!(latest_start < earliest_end, "all eight ran at the same time");
    for (i, id) in ids.iter().enumerate() {
        let log = std::fs::read_to_string(d.trace_dir.join(id).join("log.txt")).unwrap();
        let own = format!("ms={}", 400 + i);
        assert!(log.contains(&format!("sleeping {own}")) && log.contains("woke up"), "task {i} log:\n{log}");
        for j in (0..8).filter(|j| *j != i) {
            assert!(!log.contains(&format!("ms={}", 400 + j)), "task {i}'s log has task {j}'s line:\n{log}");
        }
        assert_eq!(log.lines().filter(|l| l.starts_with("=== attempt")).count(), 1);
        assert!(!d.stderr().contains(&format!("sleeping {own}")), "task lines stay out of the daemon log");
    }
}

fn run_bad(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(support::BIN);
    cmd.current_dir(dir.path()).env_clear().env("JCT_BIND", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn bad_configuration_stops_start_up_naming_the_variable() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let under_a_file = format!("{}/traces", file.path().display());
    let cases = [
        ("DATABASE_URL", "mysql://localhost/x"),
        ("DATABASE_URL", "postgres://user@host:notaport/db"),
        ("JCT_WORKERS", "four"),
        ("JCT_POLL_INTERVAL_MS", "-5"),
        ("JCT_BIND", "localhost"),
        ("JCT_TRACE_DIR", under_a_file.as_str()),
    ];
    for (var, value) in cases {
        let (code, stderr) = run_bad(&[(var, value)]);
        assert!(code.is_some_and(|c| c != 0), "{var}={value} exited {code:?}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(var)).collect();
        assert_eq!(lines.len(), 1, "{var}={value}: one line naming it; stderr:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut d = Spawn::new().env("JCT_SHUTDOWN_GRACE_SECONDS", "60").start();
    let base = d.url("");
    let id = support::enqueue(&base, json!({"type": "sleep", "payload": {"ms": 60000}})).await;
    wait_status(&base, &id, "running", Duration::from_secs(5)).await;
    d.signal("TERM");
    wait_for("the drain to begin", Duration::from_secs(5), || async {
        d.stderr().contains("shutting down").then_some(())
    })
    .await;
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "an immediate, non-clean exit; stderr:\n{}", d.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_subcommand_tracks_the_daemon() {
    let d = Spawn::new().start();
    let bind = d.addr.to_string();
    let ok = std::process::Command::new(support::BIN)
        .arg("healthcheck")
        .env_clear()
        .env("JCT_BIND", &bind)
        .status()
        .unwrap();
    assert!(ok.success());
    drop(d);
    let dead = wait_for("the port to close", Duration::from_secs(5), || async {
        let st = std::process::Command::new(support::BIN)
            .arg("healthcheck")
            .env_clear()
            .env("JCT_BIND", &bind)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        (!st.success()).then_some(st)
    })
    .await;
    assert!(!dead.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_task_and_its_trace_id() {
    let d = Spawn::new().env("JCT_LOG_FORMAT", "json").start();
    let res = support::http()
        .post(d.url("/tasks/enqueue"))
        .header("x-trace-id", "trace-abc")
        .json(&json!({"type": "fail", "max_attempts": 1}))
        .send()
        .await
        .unwrap();
    let id = res.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_string();
    wait_status(&d.url(""), &id, "failed", Duration::from_secs(10)).await;
    let line = wait_for("the failure line", Duration::from_secs(5), || async {
        d.stderr().lines().find(|l| l.contains("task failed")).map(str::to_string)
    })
    .await;
    let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(entry["task_id"], id.as_str());
    assert_eq!(entry["trace_id"], "trace-abc");
    assert_eq!(entry["level"], "WARN");
    for l in d.stderr().lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("every line is JSON ({e}): {l}"));
    }
}
