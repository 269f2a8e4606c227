//! A PostgreSQL server restart in the middle of a run loses no task, and the daemon
//! recovers by itself (pool and LISTEN connection). Its own test binary, because it
//! restarts the server every other PostgreSQL test shares.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{pg_ctl, wait_for, EnsureRunning, PgDb, Spawn};

/// The tests here stop and restart the one server: one at a time.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    SERVER.lock().await
}

fn restart_server() {
    pg_ctl("restart");
}

/// A daemon that starts before its database waits for it, one log line per attempt,
/// instead of exiting (and crash-looping under a supervisor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_before_its_database_waits_for_it() {
    let _server = exclusive().await;
    let db = PgDb::new().await;
    let _restart = EnsureRunning;
    pg_ctl("stop");
    let mut d = Spawn::new().env("DATABASE_URL", &db.url).until_line("database not reachable yet").start();
    wait_for("a few attempts", Duration::from_secs(20), || async {
        (d.stderr().lines().filter(|l| l.contains("database not reachable yet")).count() >= 3).then_some(())
    })
    .await;
    assert!(d.stderr().lines().filter(|l| l.contains("database not reachable yet")).all(|l| l.contains("attempt=")));
    pg_ctl("start");
    d.wait_listening(Duration::from_secs(30));
    let res = support::http().get(d.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id = support::enqueue(&d.url(""), serde_json::json!({"type": "echo"})).await;
    support::wait_status(&d.url(""), &id, "completed", Duration::from_secs(10)).await;
}

async fn counts(db: &PgDb) -> Option<(i64, i64)> {
    let client = tokio::time::timeout(Duration::from_secs(2), db.client()).await.ok()?;
    let row =
        client.query_one("SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM tasks", &[]).await.ok()?;
    Some((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_loses_nothing() {
    let _server = exclusive().await;
    let db = PgDb::new().await;
    let d = Spawn::new()
        .env("DATABASE_URL", &db.url)
        // Only NOTIFY and the reconnect wake-up can move work quickly.
        .env("JCT_POLL_INTERVAL_MS", "60000")
        .env("JCT_WORKERS", "4")
        .start();
    {
        let client = db.client().await;
        client
            .execute(
                "INSERT INTO tasks (type, payload) SELECT 'sleep', '{\"ms\": 20}' FROM generate_series(1, 200)",
                &[],
            )
            .await
            .unwrap();
    }
    wait_for("some tasks to complete", Duration::from_secs(30), || async {
        counts(&db).await.filter(|(done, _)| *done >= 20)
    })
    .await;
    restart_server();
    let (done, total) = wait_for("every task to complete after the restart", Duration::from_secs(90), || async {
        counts(&db).await.filter(|(done, total)| done == total)
    })
    .await;
    assert_eq!((done, total), (200, 200));

    // The daemon is whole again: the listener reconnected and dispatches a new insert.
    wait_for("the listener to reconnect", Duration::from_secs(30), || async {
        let body: Value = support::http().get(d.url("/ready")).send().await.ok()?.json().await.ok()?;
        (body["listener_connected"] == true).then_some(())
    })
    .await;
    let client = db.client().await;
    let id: uuid::Uuid =
        client.query_one("INSERT INTO tasks (type) VALUES ('echo') RETURNING id", &[]).await.unwrap().get(0);
    support::wait_status(&d.url(""), &id.to_string(), "completed", Duration::from_secs(5)).await;
    let failed: i64 =
        client.query_one("SELECT count(*) FROM tasks WHERE status <> 'completed'", &[]).await.unwrap().get(0);
    assert_eq!(failed, 0);
}
