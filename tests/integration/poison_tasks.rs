//! Poison tasks back off: a task whose attempts keep dying with their daemon (SIGKILL
//! while it runs, again and again) is queued again by the rescuer with the retry policy's
//! backoff, like a failed attempt, and ends `failed` after `max_attempts`. Real daemon
//! processes, real signals, on both stores.

use std::time::Duration;

use crate::support::{enqueue, get_task, wait_for, DaemonProcess, Spawn, TestDb};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

const STORES: [&str; 2] = ["sqlite", "postgres"];
const BASE_MS: i64 = 1000;

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().with_timezone(&Utc)
}

fn daemon(db: &TestDb, traces: &std::path::Path) -> DaemonProcess {
    Spawn::new()
        .env("DATABASE_URL", db.url())
        .env("JCT_TRACE_DIR", traces.display().to_string())
        .env("JCT_LEASE_SECONDS", "2")
        .env("JCT_POLL_INTERVAL_MS", "50")
        .env("JCT_RETRY_BASE_MS", BASE_MS.to_string())
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_daemons_backs_off_then_fails() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let traces = tempfile::tempdir().unwrap();
        // Two daemons: one runs the task and is killed, the other rescues it (and may be
        // the next to run it, and be killed in turn). A killed one is replaced at once.
        let mut daemons = vec![daemon(&db, traces.path()), daemon(&db, traces.path())];
        let base = daemons[0].url("");
        let id = enqueue(&base, json!({"type": "sleep", "payload": {"ms": 60000}, "max_attempts": 3})).await;
        let mut waits = Vec::new();
        for attempt in 1..=3 {
            let running = wait_for(&format!("attempt {attempt} to run"), Duration::from_secs(30), || async {
                let t = get_task(&daemons.last().unwrap().url(""), &id).await;
                (t["status"] == "running" && t["attempts"] == attempt).then_some(t)
            })
            .await;
            let holder = running["locked_by"].as_str().unwrap().to_string();
            let victim = daemons
                .iter()
                .position(|d| holder.split(':').nth(1) == Some(d.pid().to_string().as_str()))
                .unwrap_or_else(|| panic!("{kind}: no daemon of ours holds {holder}"));
            let mut dead = daemons.remove(victim);
            dead.signal("KILL");
            dead.wait_exit(Duration::from_secs(5));
            daemons.push(daemon(&db, traces.path()));
            let rescued = wait_for(&format!("attempt {attempt} to be rescued"), Duration::from_secs(30), || async {
                let t = get_task(&daemons[0].url(""), &id).await;
                (t["status"] != "running").then_some(t)
            })
            .await;
            let error = rescued["last_error"].as_str().unwrap();
            assert!(
                error.starts_with("lease ")
                    && error.contains(&format!("of worker {holder} expired while running (attempt {attempt})")),
                "{kind}: {error}"
            );
            if attempt == 3 {
                assert_eq!(rescued["status"], "failed", "{kind}: attempts used up: {rescued}");
                assert_eq!(rescued["attempts"], 3, "{kind}");
                break;
            }
            assert_eq!(rescued["status"], "queued", "{kind}: {rescued}");
            // The rescue set run_at one backoff after it (updated_at).
            let wait = (time(&rescued["run_at"]) - time(&rescued["updated_at"])).num_milliseconds();
            let nominal = BASE_MS << (attempt - 1);
            assert!(
                wait >= nominal * 3 / 4 - 5 && wait <= nominal + 5,
                "{kind}: attempt {attempt} waits {wait} ms, not 0.75-1 x {nominal} ms"
            );
            waits.push(wait);
        }
        assert!(waits[1] > waits[0], "{kind}: the waits grow: {waits:?}");
        // It stays failed: nothing runs it again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let end = get_task(&daemons[0].url(""), &id).await;
        assert_eq!((end["status"].as_str(), end["attempts"].as_i64()), (Some("failed"), Some(3)), "{kind}: {end}");
    }
}
