//! Shutdown on a bad day: SIGTERM while PostgreSQL is unreachable ends the process within
//! the grace period plus a few seconds, with one log line counting the attempt ends it could
//! not write; once the database is back, those tasks return through their leases and
//! complete (at-least-once). Its own test binary, because it stops the server every other
//! PostgreSQL test shares.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{enqueue, pg_ctl, wait_for, wait_status, EnsureRunning, PgDb, Spawn};

const GRACE_S: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_database_gone_exits_in_bounded_time_and_loses_nothing() {
    let db = PgDb::new().await;
    let _restart = EnsureRunning;
    let traces = tempfile::tempdir().unwrap();
    let spawn = || {
        Spawn::new()
            .env("DATABASE_URL", &db.url)
            .env("JCT_TRACE_DIR", traces.path().display().to_string())
            .env("JCT_WORKERS", "4")
            .env("JCT_LEASE_SECONDS", "3")
            .env("JCT_POLL_INTERVAL_MS", "100")
            .env("JCT_RETRY_BASE_MS", "100")
            .env("JCT_SHUTDOWN_GRACE_SECONDS", GRACE_S.to_string())
    };
    let mut a = spawn().start();
    let base = a.url("");
    // Two finish inside the grace period (their ends cannot be written), two outlast it
    // (they are interrupted, and their hand-backs cannot be written). Either way each is one
    // attempt end that cannot be written: four.
    let mut ids = Vec::new();
    for ms in [3000, 3000, 8000, 8000] {
        ids.push(enqueue(&base, json!({"type": "sleep", "payload": {"ms": ms}})).await);
    }
    for id in &ids {
        wait_status(&base, id, "running", Duration::from_secs(10)).await;
    }
    pg_ctl("stop");
    a.signal("TERM");
    let stopped = Instant::now();
    let status = a.wait_exit(Duration::from_secs(60));
    let took = stopped.elapsed();
    let log = a.stderr();
    eprintln!("exited {took:?} after SIGTERM (grace {GRACE_S} s)");
    assert!(status.success(), "exit status {status}; stderr:\n{log}");
    assert!(took <= Duration::from_secs(GRACE_S + 6), "took {took:?} to exit (grace {GRACE_S} s); stderr:\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("attempt ends could not be written")).collect();
    assert_eq!(lines.len(), 1, "one line counts what was not written; stderr:\n{log}");
    assert!(lines[0].contains("4 attempt ends could not be written"), "{}", lines[0]);

    pg_ctl("start");
    let b = spawn().start();
    let base = b.url("");
    for id in &ids {
        let done = wait_status(&base, id, "completed", Duration::from_secs(60)).await;
        assert_eq!(done["attempts"], 2, "{id} came back through its lease: {done}");
        assert!(done["last_error"].as_str().unwrap().contains("expired while running (attempt 1)"), "{done}");
    }
    wait_for("nothing left running", Duration::from_secs(5), || async {
        let client = db.client().await;
        let n: i64 = client.query_one("SELECT count(*) FROM tasks WHERE status <> 'completed'", &[]).await.ok()?.get(0);
        (n == 0).then_some(())
    })
    .await;
}
