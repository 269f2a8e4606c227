//! The HTTP API over a real socket: the daemon runs in-process on a real SQLite file (and
//! once on PostgreSQL), bound to a free port; requests go through reqwest.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crate::support::{http, wait_status};
use devops_control_tower::handlers::Registry;
use devops_control_tower::store::{Backend, TaskStore};
use serde_json::{json, Value};

struct App {
    base: String,
    store: Arc<dyn TaskStore>,
    daemon: support::InProcess,
    _db: support::SqliteDb,
}

async fn start_with(backend: &Backend, db_url: &str, extra: &[(&str, &str)]) -> support::InProcess {
    support::start_in_process(backend, db_url, extra, Registry::builtin()).await
}

async fn app(extra: &[(&str, &str)]) -> App {
    let db = support::SqliteDb::new();
    let backend = db.backend().await;
    let store = backend.tasks();
    let daemon = start_with(&backend, &db.url(), extra).await;
    App { base: daemon.base.clone(), store, daemon, _db: db }
}

async fn count(store: &Arc<dyn TaskStore>) -> usize {
    let filter = devops_control_tower::task::TaskFilter { limit: 1000, ..Default::default() };
    store.list(&filter).await.unwrap().len()
}

async fn post_raw(base: &str, path: &str, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut req = http().post(format!("{base}{path}")).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get_json(base: &str, path: &str) -> (u16, Value) {
    let res = http().get(format!("{base}{path}")).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(body["error"], want_code, "body: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready() {
    let app = app(&[]).await;
    assert_eq!(get_json(&app.base, "/health").await, (200, json!({"status": "ok"})));
    let (status, body) = get_json(&app.base, "/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_runs_the_task_and_get_shows_the_result() {
    let app = app(&[]).await;
    let res = http()
        .post(format!("{}/tasks/enqueue", app.base))
        .header("x-trace-id", "req-42")
        .json(&json!({"type": "echo", "payload": {"hello": "world"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let id = body["task_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(body["status"], "queued");
    assert!(body["created_at"].as_str().is_some());
    let done = wait_status(&app.base, &id, "completed", Duration::from_secs(10)).await;
    assert_eq!(done["result"], json!({"hello": "world"}));
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["trace_id"], "req-42");
    let folder = app.daemon.trace.path().join(&id);
    let input: Value = serde_json::from_slice(&std::fs::read(folder.join("input.json")).unwrap()).unwrap();
    assert_eq!(input["trace_id"], "req-42");
    assert_eq!(input["payload"], json!({"hello": "world"}));
    let output: Value = serde_json::from_slice(&std::fs::read(folder.join("output.json")).unwrap()).unwrap();
    assert_eq!(output["status"], "completed");
    assert_eq!(output["result"], json!({"hello": "world"}));
    assert!(output["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(std::fs::read_to_string(folder.join("log.txt")).unwrap().starts_with("=== attempt 1 of 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages_newest_first() {
    let app = app(&[]).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let mut ids = Vec::new();
    for ty in ["echo", "sleep", "echo"] {
        ids.push(support::enqueue(&app.base, json!({"type": ty, "payload": {"ms": 1}, "run_at": later})).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let (status, all) = get_json(&app.base, "/tasks").await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = all.as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    let (_, echoes) = get_json(&app.base, "/tasks?type=echo&status=queued&limit=1&offset=1").await;
    assert_eq!(echoes.as_array().unwrap().len(), 1);
    assert_eq!(echoes[0]["task_id"], ids[0].as_str());
    let (status, body) = get_json(&app.base, "/tasks?status=bogus").await;
    assert_error(status, &body, 422, "invalid_filter");
    let (status, body) = get_json(&app.base, "/tasks?limit=zero").await;
    assert_error(status, &body, 422, "invalid_filter");
    let (status, body) = get_json(&app.base, "/tasks?colour=red").await;
    assert_error(status, &body, 422, "invalid_filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_then_conflict_and_missing() {
    let app = app(&[]).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let id = support::enqueue(&app.base, json!({"type": "echo", "run_at": later})).await;
    let (status, body) = post_raw(&app.base, &format!("/tasks/{id}/cancel"), None, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (status, body) = post_raw(&app.base, &format!("/tasks/{id}/cancel"), None, "").await;
    assert_error(status, &body, 409, "not_cancellable");
    assert_eq!(body["status"], "cancelled");
    let missing = uuid::Uuid::now_v7();
    let (status, body) = post_raw(&app.base, &format!("/tasks/{missing}/cancel"), None, "").await;
    assert_error(status, &body, 404, "task_not_found");
    let (status, body) = post_raw(&app.base, "/tasks/not-a-uuid/cancel", None, "").await;
    assert_error(status, &body, 400, "invalid_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_conflict_names_the_existing_task() {
    let app = app(&[]).await;
    let body = json!({"type": "echo", "idempotency_key": "deploy-7"});
    let first = support::enqueue(&app.base, body.clone()).await;
    let (status, again) = post_raw(&app.base, "/tasks/enqueue", Some("application/json"), body.to_string()).await;
    assert_error(status, &again, 409, "duplicate_idempotency_key");
    assert_eq!(again["task_id"], first.as_str());
    assert_eq!(count(&app.store).await, 1);
}

/// Every bad request gets its status and JSON error, stores nothing, and the daemon
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_without_side_effects() {
    let app = app(&[("JCT_MAX_BODY_BYTES", "1024")]).await;
    let seed = support::enqueue(&app.base, json!({"type": "echo"})).await;
    let before = count(&app.store).await;
    let json_ct = Some("application/json");
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        ("malformed JSON", json_ct, "{\"type\": \"echo\",".into(), 400, "malformed_json"),
        ("missing type", json_ct, json!({"payload": {}}).to_string(), 422, "invalid_field"),
        ("mistyped field", json_ct, json!({"type": "echo", "priority": "high"}).to_string(), 422, "invalid_field"),
        ("unknown field", json_ct, json!({"type": "echo", "colour": "red"}).to_string(), 422, "invalid_field"),
        ("not an object", json_ct, "[1, 2]".into(), 422, "invalid_field"),
        ("empty type", json_ct, json!({"type": ""}).to_string(), 422, "invalid_field"),
        ("bad max_attempts", json_ct, json!({"type": "echo", "max_attempts": 0}).to_string(), 422, "invalid_field"),
        ("bad run_at", json_ct, json!({"type": "echo", "run_at": "tomorrow"}).to_string(), 422, "invalid_field"),
        ("unknown type", json_ct, json!({"type": "launch_rockets"}).to_string(), 422, "unknown_type"),
        ("text content type", Some("text/plain"), json!({"type": "echo"}).to_string(), 415, "unsupported_media_type"),
        ("no content type", None, json!({"type": "echo"}).to_string(), 415, "unsupported_media_type"),
        (
            "body over the limit",
            json_ct,
            json!({"type": "echo", "payload": {"pad": "x".repeat(2000)}}).to_string(),
            413,
            "payload_too_large",
        ),
    ];
    for (what, ct, body, want_status, want_code) in cases {
        let (status, got) = post_raw(&app.base, "/tasks/enqueue", ct, body).await;
        assert_eq!(status, want_status, "{what}: {got}");
        assert_eq!(got["error"], want_code, "{what}: {got}");
        assert!(got["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {got}");
    }
    let (status, got) = post_raw(&app.base, "/tasks/enqueue", json_ct, json!({"type": "nope"}).to_string()).await;
    assert_eq!(status, 422);
    let message = got["message"].as_str().unwrap();
    assert!(message.contains("echo") && message.contains("sleep") && message.contains("fail"), "{message}");

    // A chunked body (no Content-Length) over the limit is refused too.
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok("{\"type\":\"echo\",\"payload\":\"".into()), Ok("y".repeat(4096)), Ok("\"}".into())];
    let stream = futures_util::stream::iter(chunks);
    let (status, got) = post_raw(&app.base, "/tasks/enqueue", json_ct, reqwest::Body::wrap_stream(stream)).await;
    assert_error(status, &got, 413, "payload_too_large");

    let (status, got) = get_json(&app.base, "/tasks/not-a-uuid").await;
    assert_error(status, &got, 400, "invalid_id");
    let (status, got) = get_json(&app.base, &format!("/tasks/{}", uuid::Uuid::now_v7())).await;
    assert_error(status, &got, 404, "task_not_found");
    let (status, got) = get_json(&app.base, "/no/such/route").await;
    assert_error(status, &got, 404, "not_found");
    let res = http().delete(format!("{}/tasks/{seed}", app.base)).send().await.unwrap();
    let status = res.status().as_u16();
    let got: Value = res.json().await.unwrap();
    assert!(status == 405 || status == 404, "{status}");
    assert!(got["error"].is_string());

    assert_eq!(count(&app.store).await, before, "nothing was stored by a bad request");
    assert_eq!(get_json(&app.base, "/health").await.0, 200);
    let seeded = support::get_task(&app.base, &seed).await;
    assert_eq!(seeded["type"], "echo", "what was stored before is intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_task_routes_only() {
    let app = app(&[("JCT_API_KEY", "s3cret")]).await;
    let res = http().post(format!("{}/tasks/enqueue", app.base)).json(&json!({"type": "echo"})).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let res = http().get(format!("{}/tasks", app.base)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = http()
        .post(format!("{}/tasks/enqueue", app.base))
        .bearer_auth("s3cret")
        .json(&json!({"type": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(get_json(&app.base, "/health").await.0, 200);
    assert_eq!(count(&app.store).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_api_on_postgres() {
    let db = support::PgDb::new().await;
    let daemon = start_with(&db.backend().await, &db.url, &[]).await;
    let base = daemon.base.clone();
    let id = support::enqueue(&base, json!({"type": "echo", "payload": [1, "two"]})).await;
    let done = wait_status(&base, &id, "completed", Duration::from_secs(10)).await;
    assert_eq!(done["result"], json!([1, "two"]));
    let (status, body) = post_raw(&base, "/tasks/enqueue", Some("application/json"), "{oops").await;
    assert_error(status, &body, 400, "malformed_json");
    let (status, body) = get_json(&base, "/ready").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let app = app(&[]).await;
    let id = support::enqueue(&app.base, json!({"type": "echo"})).await;
    wait_status(&app.base, &id, "completed", Duration::from_secs(10)).await;
    let failing = support::enqueue(&app.base, json!({"type": "fail", "max_attempts": 1})).await;
    wait_status(&app.base, &failing, "failed", Duration::from_secs(10)).await;
    let res = http().get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().contains("openmetrics-text"));
    let text = res.text().await.unwrap();
    for line in [
        "jct_tasks_enqueued_total{task_type=\"echo\"} 1",
        "jct_tasks_enqueued_total{task_type=\"fail\"} 1",
        "jct_tasks_completed_total{task_type=\"echo\"} 1",
        "jct_tasks_failed_total{task_type=\"fail\"} 1",
        "jct_tasks{status=\"completed\"} 1",
        "jct_tasks{status=\"failed\"} 1",
        "jct_tasks{status=\"queued\"} 0",
        "jct_task_run_seconds_count{task_type=\"echo\"} 1",
        "jct_task_claim_to_start_seconds_count 2",
        "jct_listener_connected 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
}

/// The `jct_queue_*` lines of one scrape.
async fn queue_lines(base: &str) -> Vec<String> {
    let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with("jct_queue_")).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_each_queue_running_limit_and_pause() {
    let db = support::PgDb::new().await;
    let app = start_with(&db.backend().await, &db.url, &[]).await;
    let base = app.base.clone();
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let put = |name: &str, body: Value| {
        let url = format!("{base}/queues/{name}");
        async move {
            let res = http().put(url).json(&body).send().await.unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    put("limited", json!({"concurrency": 3, "rate": {"limit": 5, "per_s": 1}})).await;
    let res = http().post(format!("{base}/queues/stopped/pause")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // A task that stays queued makes its queue listed without any setting.
    support::enqueue(&base, json!({"type": "echo", "queue": "plain", "run_at": later})).await;

    let lines = queue_lines(&base).await;
    for line in [
        "jct_queue_running{queue=\"limited\"} 0",
        "jct_queue_concurrency_limit{queue=\"limited\"} 3",
        "jct_queue_paused{queue=\"limited\"} 0",
        "jct_queue_paused{queue=\"stopped\"} 1",
        "jct_queue_running{queue=\"stopped\"} 0",
        "jct_queue_paused{queue=\"plain\"} 0",
    ] {
        assert!(lines.iter().any(|l| l == line), "missing {line:?} in {lines:#?}");
    }
    for queue in ["stopped", "plain"] {
        let absent = format!("jct_queue_concurrency_limit{{queue=\"{queue}\"}}");
        assert!(!lines.iter().any(|l| l.starts_with(&absent)), "{queue} has no limit, so no series: {lines:#?}");
    }

    // A running task counts; a limit removed and a resume show in a later scrape (the
    // gauges are read at most every couple of seconds).
    let running = support::enqueue(&base, json!({"type": "sleep", "queue": "limited", "payload": {"ms": 30000}})).await;
    wait_status(&base, &running, "running", Duration::from_secs(10)).await;
    put("limited", json!({"concurrency": null})).await;
    let res = http().post(format!("{base}/queues/stopped/resume")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    support::wait_for("the scrape to show the changes", Duration::from_secs(10), || async {
        let lines = queue_lines(&base).await;
        let has = |l: &str| lines.iter().any(|x| x == l);
        (has("jct_queue_running{queue=\"limited\"} 1")
            && has("jct_queue_paused{queue=\"stopped\"} 0")
            && !lines.iter().any(|l| l.starts_with("jct_queue_concurrency_limit{queue=\"limited\"}")))
        .then_some(())
    })
    .await;
    let res = http().post(format!("{base}/tasks/{running}/cancel")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_answer_gives_503() {
    // A PostgreSQL URL where nothing listens: the pool cannot connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://nobody@127.0.0.1:{port}/none");
    let backend = Backend::postgres(devops_control_tower::store::PgStore::connect_no_migrate(&url, 2).unwrap());
    let app = support::start_in_process(&backend, &url, &[], Registry::builtin()).await;
    let (status, body) = get_json(&app.base, "/ready").await;
    assert_error(status, &body, 503, "store_unavailable");
    let (status, body) =
        post_raw(&app.base, "/tasks/enqueue", Some("application/json"), json!({"type": "echo"}).to_string()).await;
    assert_error(status, &body, 503, "store_unavailable");
    assert_eq!(get_json(&app.base, "/health").await.0, 200, "alive even without its store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_all_or_nothing_over_http() {
    let app = app(&[]).await;
    let batch = json!([{"type": "echo", "payload": 1}, {"type": "echo", "payload": 2}]);
    let (status, body) = post_raw(&app.base, "/tasks/enqueue_batch", Some("application/json"), batch.to_string()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["count"], 2);
    let ids: Vec<String> = body["task_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    for (i, id) in ids.iter().enumerate() {
        let done = wait_status(&app.base, id, "completed", Duration::from_secs(10)).await;
        assert_eq!(done["result"], json!(i + 1));
    }
    let bad = json!([{"type": "echo"}, {"type": "echo", "priority": "high"}, {"type": "nope"}]);
    let (status, body) = post_raw(&app.base, "/tasks/enqueue_batch", Some("application/json"), bad.to_string()).await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["index"], 1, "the first bad task is named: {body}");
    for (body, code) in [("{}", "invalid_field"), ("[]", "invalid_field"), ("[{", "malformed_json")] {
        let (status, got) = post_raw(&app.base, "/tasks/enqueue_batch", Some("application/json"), body).await;
        assert_error(status, &got, if code == "malformed_json" { 400 } else { 422 }, code);
    }
    assert_eq!(count(&app.store).await, 2, "refused batches stored nothing");
}
