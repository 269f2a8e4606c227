//! A request's failure is its own: the PostgreSQL intake folds concurrent enqueues into one
//! INSERT, and when the database refuses one row of it, only that row's request hears so.
//!
//! The database is made to refuse rows that validation lets through (a CHECK constraint
//! the test adds), and 2,000 enqueues go at once over real HTTP to a real daemon process.

use std::sync::Arc;

use crate::support::{PgDb, Spawn};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_fails_only_its_own_request() {
    let db = PgDb::new().await;
    db.client()
        .await
        .batch_execute("ALTER TABLE tasks ADD CONSTRAINT refuse_marked CHECK (payload->>'refuse' IS NULL)")
        .await
        .unwrap();
    // The API alone: nothing claims the tasks while they are counted.
    let d = Spawn::new()
        .arg("api")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "info,devops_control_tower::store::postgres::intake=debug")
        .start();
    let url = Arc::new(d.url("/tasks/enqueue"));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(2000)
        .build()
        .unwrap();
    const N: usize = 2000;
    let start = Arc::new(tokio::sync::Barrier::new(N));
    let mut requests = Vec::with_capacity(N);
    for i in 0..N {
        let (client, url, start) = (client.clone(), url.clone(), start.clone());
        let refused = i % 50 == 7;
        let payload = if refused { json!({"i": i, "refuse": true}) } else { json!({"i": i}) };
        requests.push(tokio::spawn(async move {
            start.wait().await;
            let res = client.post(url.as_str()).json(&json!({"type": "echo", "payload": payload})).send().await;
            let res = res.unwrap_or_else(|e| panic!("request {i}: {e}"));
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            (i, refused, status, body)
        }));
    }
    let mut created = 0;
    let mut refused_seen = 0;
    for r in requests {
        let (i, refused, status, body) = r.await.unwrap();
        if refused {
            assert_eq!(status, 422, "request {i} (refused row) answered {status}: {body}");
            assert_eq!(body["error"], "rejected_by_store", "request {i}: {body}");
            assert!(body["message"].as_str().unwrap().contains("refuse_marked"), "request {i}: {body}");
            refused_seen += 1;
        } else {
            assert_eq!(status, 201, "request {i} (valid) answered {status}: {body}");
            assert_eq!(body["payload"]["i"], i, "request {i} got its own task: {body}");
            created += 1;
        }
    }
    assert_eq!((created, refused_seen), (N - N / 50, N / 50));
    let rows: i64 = db.client().await.query_one("SELECT count(*) FROM tasks", &[]).await.unwrap().get(0);
    assert_eq!(rows as usize, created, "rows stored = 201 answers");
    // Refused rows did share statements with valid ones (so the split was exercised).
    assert!(
        d.stderr().contains("coalesced insert failed; inserting its halves apart"),
        "no coalesced insert held a refused row: the test did not exercise the split"
    );
}
