//! A PostgreSQL server restart in the middle of a run loses no task, and the daemon
//! recovers by itself (pool and LISTEN connection). Its own test binary, because it
//! restarts the server every other PostgreSQL test shares.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{wait_for, PgDb, Spawn};

fn restart_server() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run through `make test`"));
    let (ctl, log, opts) = (var("TEST_PG_CTL"), var("TEST_PG_LOG"), var("TEST_PG_OPTS"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{ctl} -w -t 60 -l '{log}' -o '{opts}' restart -m fast >/dev/null"))
        .status()
        .expect("running pg_ctl");
    assert!(status.success(), "pg_ctl restart failed");
}

async fn counts(db: &PgDb) -> Option<(i64, i64)> {
    let client = tokio::time::timeout(Duration::from_secs(2), db.client()).await.ok()?;
    let row =
        client.query_one("SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM tasks", &[]).await.ok()?;
    Some((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_loses_nothing() {
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
