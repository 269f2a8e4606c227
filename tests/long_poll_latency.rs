//! A waiting long-poll claim answers as soon as a task arrives: on PostgreSQL a plain INSERT
//! from another service wakes it through NOTIFY, on SQLite an enqueue through the API wakes
//! it in-process. Its own test binary, so no heavy test runs beside the measured one.

mod support;

use std::time::{Duration, Instant};

use devops_control_tower::handlers::Registry;
use serde_json::json;
use support::remote::{enqueue, get, Worker};
use support::{wait_for, TestDb};

struct App {
    base: String,
    db: TestDb,
    _daemon: support::InProcess,
}

async fn app(kind: &str, extra: &[(&str, &str)]) -> App {
    let db = TestDb::new(kind).await;
    let daemon = support::start_in_process(&db.backend().await, &db.url(), extra, Registry::builtin()).await;
    App { base: daemon.base.clone(), db, _daemon: daemon }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite() {
    a_waiting_claim_returns_as_soon_as_a_task_is_enqueued("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres() {
    a_waiting_claim_returns_as_soon_as_a_task_is_enqueued("postgres").await;
}

async fn a_waiting_claim_returns_as_soon_as_a_task_is_enqueued(kind: &str) {
    // PostgreSQL: the task arrives by a plain INSERT from another service, so only NOTIFY
    // can wake the claim; SQLite: by the API, which wakes it in-process.
    let app = app(kind, &[("JCT_LISTEN", "on"), ("JCT_POLL_INTERVAL_MS", "60000")]).await;
    let worker = Worker::register(&app.base, &["remote-echo"], 1).await;
    if kind == "postgres" {
        // The listener is up once a first NOTIFY round trip works: wait for `/ready` to say so.
        wait_for("the listener", Duration::from_secs(10), || async {
            let (_, ready) = get(&app.base, "/ready").await;
            (ready["listener_connected"] == true).then_some(())
        })
        .await;
    }
    let claimer = {
        let w = Worker { base: worker.base.clone(), id: worker.id.clone() };
        tokio::spawn(async move {
            let tasks = w.claim(1, 30_000).await;
            (tasks, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the claim is waiting by now
    assert!(!claimer.is_finished(), "nothing to claim yet: the claim must wait");
    // Measured from the moment the task exists (the INSERT's or the enqueue's answer): the
    // commit's own flush is the database's time, not the claim's.
    let client = match &app.db {
        TestDb::Postgres(db) => Some(db.client().await),
        TestDb::Sqlite(_) => None,
    };
    let id = match &client {
        Some(client) => {
            let row = client
                .query_one(
                    "INSERT INTO tasks (type, payload) VALUES ('remote-echo', '{\"x\":1}') RETURNING id::text",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
        None => enqueue(&app.base, json!({ "type": "remote-echo", "payload": { "x": 1 } })).await,
    };
    let sent = Instant::now();
    let (tasks, answered) = tokio::time::timeout(Duration::from_secs(5), claimer).await.unwrap().unwrap();
    let latency = answered.duration_since(sent);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["task_id"], id.as_str());
    assert!(tasks[0]["lease_token"].as_str().is_some_and(|t| !t.is_empty()));
    eprintln!("{kind}: the claim answered {latency:?} after the task was stored");
    assert!(latency < Duration::from_millis(50), "the claim answered {latency:?} after the enqueue");
    let (status, _) = worker.op(&tasks[0], "complete", json!({})).await;
    assert_eq!(status, 200);
    // With nothing left, a short wait returns an empty list when it runs out.
    let started = Instant::now();
    assert!(worker.claim(1, 200).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(190), "returned before the wait ran out");
}
