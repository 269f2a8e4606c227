//! The HTTP worker protocol over real sockets, on both stores: workers register, long-poll,
//! heartbeat, stream logs, post artifacts and end attempts; stale tokens change nothing.

use crate::support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::remote::{call, enqueue, get, long_http, post, task, Worker};
use crate::support::{http, wait_for, TestDb};
use devops_control_tower::handlers::Registry;
use serde_json::{json, Value};

struct App {
    base: String,
    db: TestDb,
    daemon: support::InProcess,
}

async fn app(kind: &str, extra: &[(&str, &str)]) -> App {
    let db = TestDb::new(kind).await;
    let daemon = support::start_in_process(&db.backend().await, &db.url(), extra, Registry::builtin()).await;
    App { base: daemon.base.clone(), db, daemon }
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!((status, body["error"].as_str()), (want_status, Some(code)), "{body}");
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::worker_protocol::$name("sqlite").await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::worker_protocol::$name("postgres").await;
                }
            )*
        }
    };
}

both_stores!(
    four_workers_complete_each_task_exactly_once,
    a_dead_workers_task_runs_again_after_its_lease,
    a_stale_token_changes_nothing,
    a_cancel_reaches_the_worker_through_its_heartbeats,
    a_log_follower_receives_lines_while_the_task_runs,
    artifacts_are_stored_once_under_safe_names,
    types_registered_workers_serve_are_known_and_left_to_them,
    fail_honours_retryable_and_retry_after,
    deregistering_gives_tasks_back_and_retry_requeues,
    a_linked_remote_attempt_is_a_run_with_its_artifacts,
    what_no_store_can_hold_is_refused_before_the_store,
);

async fn four_workers_complete_each_task_exactly_once(kind: &str) {
    const TASKS: usize = 5_000;
    let app = app(kind, &[]).await;
    let batch: Vec<Value> = (0..TASKS).map(|i| json!({ "type": "remote-noop", "payload": { "i": i } })).collect();
    let workers: Vec<Worker> =
        futures_util::future::join_all((0..4).map(|_| Worker::register(&app.base, &["remote-noop"], 100))).await;
    let (status, body) = post(&app.base, "/tasks/enqueue_batch", json!(batch)).await;
    assert_eq!(status, 201, "{body}");
    let runs = futures_util::future::join_all(workers.into_iter().map(|w| async move {
        let mut done = Vec::new();
        loop {
            let tasks = w.claim(100, 300).await;
            if tasks.is_empty() {
                return done;
            }
            for t in &tasks {
                let (status, body) = w.op(t, "complete", json!({ "result": t["payload"] })).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["status"], "completed");
                done.push(t["task_id"].as_str().unwrap().to_string());
            }
        }
    }))
    .await;
    let all: Vec<&String> = runs.iter().flatten().collect();
    let distinct: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        TASKS,
        "every task completed, none twice (per worker: {:?})",
        runs.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(distinct.len(), TASKS);
    let store = app.db.store().await;
    let completed = store
        .list(&devops_control_tower::task::TaskFilter {
            status: Some(devops_control_tower::task::TaskStatus::Completed),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(completed.iter().all(|t| t.attempts == 1), "one attempt each");
}

async fn a_dead_workers_task_runs_again_after_its_lease(kind: &str) {
    let app = app(kind, &[("JCT_LEASE_SECONDS", "1")]).await;
    let dead = Worker::register(&app.base, &["remote-echo"], 1).await;
    let id = enqueue(&app.base, json!({ "type": "remote-echo" })).await;
    let first = dead.claim(1, 1000).await;
    assert_eq!(first.len(), 1);
    // The first worker dies: no heartbeat, no end. Another takes the task after the lease.
    let alive = Worker::register(&app.base, &["remote-echo"], 1).await;
    let again = alive.claim(1, 10_000).await;
    assert_eq!(again.len(), 1, "the task came back after the lease ended");
    assert_eq!(again[0]["task_id"], id.as_str());
    assert_eq!(again[0]["attempts"], 2);
    assert_ne!(again[0]["lease_token"], first[0]["lease_token"]);
    let (status, body) = alive.op(&again[0], "complete", json!({ "result": "second" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(task(&app.base, &id).await["result"], "second");
    let (_, workers) = get(&app.base, "/workers").await;
    assert_eq!(workers.as_array().unwrap().len(), 2);
}

async fn a_stale_token_changes_nothing(kind: &str) {
    let app = app(kind, &[("JCT_LEASE_SECONDS", "1")]).await;
    let a = Worker::register(&app.base, &["remote-echo"], 1).await;
    let id = enqueue(&app.base, json!({ "type": "remote-echo" })).await;
    let old = a.claim(1, 1000).await.remove(0);
    let b = Worker::register(&app.base, &["remote-echo"], 1).await;
    let new = b.claim(1, 10_000).await.remove(0);
    let before = task(&app.base, &id).await;
    assert_eq!((before["status"].as_str(), before["locked_by"].as_str()), (Some("running"), Some(b.id.as_str())));
    for (op, body) in [
        ("complete", json!({ "result": "late" })),
        ("fail", json!({ "error": { "message": "late" } })),
        ("release", json!({})),
        ("log", json!({ "seq": 1, "lines": ["late"] })),
        ("artifacts", json!({ "name": "late.txt", "type": "log", "content_base64": "bGF0ZQ==" })),
        ("heartbeat", json!({})),
    ] {
        let (status, answer) = a.op(&old, op, body).await;
        assert_error(status, &answer, 409, "lease_lost");
        assert_eq!(answer["task_id"], id.as_str());
    }
    let after = task(&app.base, &id).await;
    assert_eq!(after, before, "the stale token changed nothing");
    let (status, body) = b.op(&new, "complete", json!({ "result": "fresh" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(task(&app.base, &id).await["result"], "fresh");
    // A token that is not one at all is a client error, not a lost lease.
    let (status, body) = post(&app.base, &format!("/tasks/{id}/complete"), json!({ "lease_token": "nonsense" })).await;
    assert_error(status, &body, 422, "invalid_field");
}

async fn a_cancel_reaches_the_worker_through_its_heartbeats(kind: &str) {
    let app = app(kind, &[]).await;
    let w = Worker::register(&app.base, &["remote-echo"], 2).await;
    let id = enqueue(&app.base, json!({ "type": "remote-echo" })).await;
    let other = enqueue(&app.base, json!({ "type": "remote-echo" })).await;
    let tasks = w.claim(2, 1000).await;
    assert_eq!(tasks.len(), 2);
    let mine = tasks.iter().find(|t| t["task_id"] == id.as_str()).unwrap();
    let (status, beat) = w.op(mine, "heartbeat", json!({ "progress": { "pct": 10 } })).await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["cancel_requested"], false);
    assert!(beat["lease_expires_at"].is_string());
    let (status, _) = post(&app.base, &format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    let (status, beat) =
        post(&app.base, &format!("/workers/{}/heartbeat", w.id), json!({ "running": [id, other] })).await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["signal"], "run");
    assert_eq!(beat["cancel"], json!([id]), "only the cancelled task is to stop");
    let (status, beat) = w.op(mine, "heartbeat", json!({})).await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["cancel_requested"], true);
    assert_eq!(task(&app.base, &id).await["status"], "cancelled");
    let (status, body) = post(&app.base, "/workers/nobody/heartbeat", json!({})).await;
    assert_error(status, &body, 404, "worker_not_found");
}

async fn a_log_follower_receives_lines_while_the_task_runs(kind: &str) {
    use futures_util::StreamExt;
    let app = app(kind, &[]).await;
    let w = Worker::register(&app.base, &["remote-echo"], 1).await;
    let id = enqueue(&app.base, json!({ "type": "remote-echo" })).await;
    let t = w.claim(1, 1000).await.remove(0);
    let res = long_http().get(format!("{}/tasks/{id}/log?follow=1", app.base)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut stream = Box::pin(res.bytes_stream());
    let mut seen = String::new();
    async fn read_until<B: AsRef<[u8]>, E: std::fmt::Debug>(
        stream: &mut (impl futures_util::Stream<Item = Result<B, E>> + Unpin),
        seen: &mut String,
        want: &str,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk =
                tokio::time::timeout(left, stream.next()).await.unwrap_or_else(|_| panic!("no {want:?} in {seen}"));
            seen.push_str(&String::from_utf8_lossy(chunk.unwrap().unwrap().as_ref()));
        }
    }
    let (status, body) = w.op(&t, "log", json!({ "seq": 1, "lines": ["compiling crate one"] })).await;
    assert_eq!((status, &body["appended"]), (200, &json!(true)), "{body}");
    read_until(&mut stream, &mut seen, "compiling crate one").await;
    let (_, body) = w.op(&t, "log", json!({ "seq": 2, "lines": ["linking", "done"] })).await;
    assert_eq!(body["appended"], true);
    let (_, body) = w.op(&t, "log", json!({ "seq": 2, "lines": ["linking", "done"] })).await;
    assert_eq!(body["appended"], false, "a repeated seq is not appended twice");
    read_until(&mut stream, &mut seen, "remote: done").await;
    let (status, _) = w.op(&t, "complete", json!({ "result": 1 })).await;
    assert_eq!(status, 200);
    read_until(&mut stream, &mut seen, "event:end").await;
    let log = long_http().get(format!("{}/tasks/{id}/log", app.base)).send().await.unwrap().text().await.unwrap();
    assert_eq!(log.matches("linking").count(), 1, "{log}");
    assert!(log.contains("compiling crate one") && log.contains("=== attempt 1"), "{log}");
    let trace = app.daemon.trace.path().join(&id);
    let output: Value = serde_json::from_slice(&std::fs::read(trace.join("output.json")).unwrap()).unwrap();
    assert_eq!((output["status"].as_str(), output["result"].as_i64()), (Some("completed"), Some(1)));
    let input: Value = serde_json::from_slice(&std::fs::read(trace.join("input.json")).unwrap()).unwrap();
    assert_eq!(input["locked_by"], w.id.as_str());
    let (status, served) = get(&app.base, &format!("/tasks/{id}/trace/output.json")).await;
    assert_eq!((status, &served), (200, &output));
    let (status, body) = get(&app.base, &format!("/tasks/{id}/trace/..%2Fsecrets")).await;
    assert_error(status, &body, 404, "trace_file_not_found");
}

async fn artifacts_are_stored_once_under_safe_names(kind: &str) {
    use base64::Engine;
    let app = app(kind, &[]).await;
    let w = Worker::register(&app.base, &["remote-echo"], 1).await;
    let id = enqueue(&app.base, json!({ "type": "remote-echo" })).await;
    let t = w.claim(1, 1000).await.remove(0);
    let content = b"diff --git a/x b/x\n\x00binary\xff";
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    let (status, artifact) = w
        .op(&t, "artifacts", json!({ "name": "changes.patch", "type": "code_patch", "media_type": "text/x-diff", "content_base64": b64 }))
        .await;
    assert_eq!(status, 201, "{artifact}");
    assert_eq!(artifact["size_bytes"], content.len());
    assert!(artifact["digest"].as_str().unwrap().starts_with("sha256:"));
    let path = app.daemon.trace.path().join(&id).join("artifacts/changes.patch");
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let res = long_http().get(format!("{}/tasks/{id}/trace/artifacts/changes.patch", app.base)).send().await.unwrap();
    assert_eq!((res.status().as_u16(), res.bytes().await.unwrap().to_vec()), (200, content.to_vec()));
    let (status, body) =
        w.op(&t, "artifacts", json!({ "name": "changes.patch", "type": "code_patch", "content_base64": "eA==" })).await;
    assert_error(status, &body, 409, "artifact_exists");
    assert_eq!(std::fs::read(&path).unwrap(), content, "not overwritten");
    for bad in ["../escape", ".hidden", "a/b", ""] {
        let (status, body) =
            w.op(&t, "artifacts", json!({ "name": bad, "type": "log", "content_base64": "eA==" })).await;
        assert_error(status, &body, 422, "invalid_field");
    }
    let (status, body) = w.op(&t, "artifacts", json!({ "name": "x", "type": "log" })).await;
    assert_error(status, &body, 422, "invalid_field");
    let (status, body) = w.op(&t, "artifacts", json!({ "name": "x", "type": "not-a-type", "uri": "https://x" })).await;
    assert_error(status, &body, 422, "invalid_field");
    let (status, linked) =
        w.op(&t, "artifacts", json!({ "name": "pr", "type": "pr", "uri": "https://example.invalid/pr/1" })).await;
    assert_eq!((status, linked["uri"].as_str()), (201, Some("https://example.invalid/pr/1")), "{linked}");
}

async fn types_registered_workers_serve_are_known_and_left_to_them(kind: &str) {
    let app = app(kind, &[("JCT_TASK_TYPES", "declared-only")]).await;
    let (status, body) = post(&app.base, "/tasks/enqueue", json!({ "type": "build" })).await;
    assert_error(status, &body, 422, "unknown_type");
    // Declared ahead of its workers: accepted, and waits queued.
    let declared = enqueue(&app.base, json!({ "type": "declared-only" })).await;
    let w = Worker::register(&app.base, &["build"], 1).await;
    let build = enqueue(&app.base, json!({ "type": "build" })).await;
    let echo = enqueue(&app.base, json!({ "type": "echo" })).await;
    // The daemon's own worker runs `echo` and leaves the others alone.
    wait_for("echo to complete", Duration::from_secs(10), || async {
        (task(&app.base, &echo).await["status"] == "completed").then_some(())
    })
    .await;
    assert_eq!(task(&app.base, &build).await["status"], "queued");
    assert_eq!(task(&app.base, &declared).await["status"], "queued");
    let metrics = long_http().get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("jct_tasks_queued{task_type=\"declared-only\"} 1"), "{metrics}");
    assert!(metrics.contains("jct_tasks_queued{task_type=\"build\"} 1"), "{metrics}");
    let claimed = w.claim(5, 1000).await;
    assert_eq!(claimed.iter().map(|t| t["task_id"].as_str().unwrap()).collect::<Vec<_>>(), vec![build.as_str()]);
    let (status, workers) = get(&app.base, "/workers").await;
    assert_eq!(status, 200);
    let listed = &workers[0];
    assert_eq!(
        (listed["worker_id"].as_str(), listed["running"].as_u64(), listed["state"].as_str()),
        (Some(w.id.as_str()), Some(1), Some("alive"))
    );
    assert_eq!(listed["types"], json!(["build"]));
    // Never more than the free slots.
    enqueue(&app.base, json!({ "type": "build" })).await;
    assert!(w.claim(5, 100).await.is_empty(), "its one slot is taken");
    let (status, body) = post(&app.base, "/tasks/claim", json!({ "worker_id": w.id, "max": 0 })).await;
    assert_error(status, &body, 422, "invalid_field");
    let (status, body) = post(&app.base, "/tasks/claim", json!({ "worker_id": "nobody" })).await;
    assert_error(status, &body, 404, "worker_not_found");
    let (status, body) = post(&app.base, "/workers", json!({ "name": "x", "types": [] })).await;
    assert_error(status, &body, 422, "invalid_field");
}

async fn fail_honours_retryable_and_retry_after(kind: &str) {
    let app = app(kind, &[]).await;
    let w = Worker::register(&app.base, &["remote-echo"], 1).await;
    let id = enqueue(&app.base, json!({ "type": "remote-echo", "max_attempts": 3 })).await;
    let t = w.claim(1, 1000).await.remove(0);
    let (status, after) =
        w.op(&t, "fail", json!({ "error": { "message": "flaky", "kind": "network" }, "retry_after_s": 60 })).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!((after["status"].as_str(), after["last_error"].as_str()), (Some("queued"), Some("network: flaky")));
    let run_at = chrono::DateTime::parse_from_rfc3339(after["run_at"].as_str().unwrap()).unwrap();
    let wait = run_at.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((50..=61).contains(&wait), "retry in ~60 s, got {wait} s");
    assert!(w.claim(1, 100).await.is_empty(), "not due yet");
    let id2 = enqueue(&app.base, json!({ "type": "remote-echo", "max_attempts": 3 })).await;
    let t2 = w.claim(1, 1000).await.remove(0);
    assert_eq!(t2["task_id"], id2.as_str());
    let (status, after) = w.op(&t2, "fail", json!({ "error": { "message": "bad input" }, "retryable": false })).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!((after["status"].as_str(), after["attempts"].as_i64()), (Some("failed"), Some(1)));
    let output: Value =
        serde_json::from_slice(&std::fs::read(app.daemon.trace.path().join(&id2).join("output.json")).unwrap())
            .unwrap();
    assert_eq!(output["status"], "failed");
    assert_eq!(task(&app.base, &id).await["status"], "queued");
}

async fn deregistering_gives_tasks_back_and_retry_requeues(kind: &str) {
    let app = app(kind, &[]).await;
    let w = Worker::register(&app.base, &["remote-echo"], 2).await;
    let id = enqueue(&app.base, json!({ "type": "remote-echo", "max_attempts": 1 })).await;
    assert_eq!(w.claim(1, 1000).await.len(), 1);
    let (status, body) = call(reqwest::Method::DELETE, &app.base, &format!("/workers/{}", w.id), None).await;
    assert_eq!((status, body["released"].as_u64()), (200, Some(1)), "{body}");
    let back = task(&app.base, &id).await;
    assert_eq!((back["status"].as_str(), back["attempts"].as_i64()), (Some("queued"), Some(0)));
    let (status, body) = call(reqwest::Method::DELETE, &app.base, &format!("/workers/{}", w.id), None).await;
    assert_error(status, &body, 404, "worker_not_found");
    // Retry: a failed task gets a fresh budget; a queued one cannot be retried.
    let (status, body) = post(&app.base, &format!("/tasks/{id}/retry"), json!({})).await;
    assert_error(status, &body, 409, "not_retryable");
    let w2 = Worker::register(&app.base, &["remote-echo"], 1).await;
    let t = w2.claim(1, 1000).await.remove(0);
    let (_, failed) = w2.op(&t, "fail", json!({ "error": { "message": "no" } })).await;
    assert_eq!(failed["status"], "failed");
    let (status, again) = post(&app.base, &format!("/tasks/{id}/retry"), json!({})).await;
    assert_eq!(
        (status, again["status"].as_str(), again["attempts"].as_i64()),
        (200, Some("queued"), Some(0)),
        "{again}"
    );
    assert_eq!(w2.claim(1, 1000).await.len(), 1, "claimable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_route_needs_the_api_key() {
    let app = app("sqlite", &[("JCT_API_KEY", "s3cret")]).await;
    for (method, path) in [
        (reqwest::Method::POST, "/workers"),
        (reqwest::Method::GET, "/workers"),
        (reqwest::Method::POST, "/workers/x/heartbeat"),
        (reqwest::Method::DELETE, "/workers/x"),
        (reqwest::Method::POST, "/tasks/claim"),
        (reqwest::Method::POST, "/tasks/00000000-0000-0000-0000-000000000000/complete"),
        (reqwest::Method::POST, "/tasks/00000000-0000-0000-0000-000000000000/retry"),
        (reqwest::Method::GET, "/tasks/00000000-0000-0000-0000-000000000000/log"),
        (reqwest::Method::GET, "/tasks/00000000-0000-0000-0000-000000000000/trace/log.txt"),
    ] {
        let res = http().request(method.clone(), format!("{}{path}", app.base)).json(&json!({})).send().await.unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
    }
    let res = http()
        .post(format!("{}/workers", app.base))
        .bearer_auth("s3cret")
        .json(&json!({ "name": "w", "types": ["echo"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

async fn a_linked_remote_attempt_is_a_run_with_its_artifacts(kind: &str) {
    let app = app(kind, &[]).await;
    let slug = format!("jct-{}", uuid::Uuid::now_v7());
    let (status, repo) =
        post(&app.base, "/cwom/repos", json!({ "name": "JCT", "slug": slug, "source": { "system": "github" } })).await;
    assert_eq!(status, 201, "{repo}");
    let (status, issue) = post(
        &app.base,
        "/cwom/issues",
        json!({ "repo": { "kind": "Repo", "id": repo["id"] }, "title": "Remote work", "type": "feature" }),
    )
    .await;
    assert_eq!(status, 201, "{issue}");
    let issue_id = issue["id"].as_str().unwrap();
    let w = Worker::register(&app.base, &["remote-echo"], 1).await;
    enqueue(&app.base, json!({ "type": "remote-echo", "cwom_issue_id": issue_id })).await;
    let t = w.claim(1, 1000).await.remove(0);
    let (status, artifact) =
        w.op(&t, "artifacts", json!({ "name": "report.txt", "type": "report", "content_base64": "b2s=" })).await;
    assert_eq!(status, 201, "{artifact}");
    let artifact_id = artifact["cwom_artifact_id"].as_str().expect("a linked attempt records a CWOM Artifact");
    let (status, _) = w.op(&t, "complete", json!({ "result": "ok" })).await;
    assert_eq!(status, 200);
    let (_, runs) = get(&app.base, &format!("/cwom/runs?issue_id={issue_id}")).await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run["status"], "done");
    assert_eq!(run["executor"]["actor"]["actor_id"], w.id.as_str(), "the remote worker is the Run's executor");
    let (_, stored) = get(&app.base, &format!("/cwom/artifacts/{artifact_id}")).await;
    assert_eq!((stored["type"].as_str(), &stored["produced_by"]["id"]), (Some("report"), &run["id"]));
    assert!(stored["digest"].as_str().unwrap().starts_with("sha256:"));
    let outputs: Vec<&str> =
        run["outputs"]["artifacts"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(outputs.contains(&artifact_id), "the Run lists the posted artifact: {outputs:?}");
}

async fn what_no_store_can_hold_is_refused_before_the_store(kind: &str) {
    let app = app(kind, &[]).await;
    let (status, body) = post(&app.base, "/workers", json!({ "name": "a\u{0}b", "types": ["remote-echo"] })).await;
    assert_error(status, &body, 422, "invalid_field");
    assert!(body["message"].as_str().unwrap().contains("/name"), "names the field: {body}");
    let (status, body) =
        post(&app.base, "/workers", json!({ "name": "w", "types": ["remote-echo"], "labels": { "k\u{0}": 1 } })).await;
    assert_error(status, &body, 422, "invalid_field");
    let w = Worker::register(&app.base, &["remote-echo"], 1).await;
    let id = enqueue(&app.base, json!({ "type": "remote-echo" })).await;
    let t = w.claim(1, 1000).await.remove(0);
    let (status, body) = w.op(&t, "complete", json!({ "result": { "s": "x\u{0}y" } })).await;
    assert_error(status, &body, 422, "invalid_field");
    let (status, body) = w.op(&t, "fail", json!({ "error": { "message": "\u{0}" } })).await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(task(&app.base, &id).await["status"], "running", "nothing was written");
    let (status, body) = post(&app.base, "/tasks/claim", json!({ "worker_id": "w\u{0}" })).await;
    assert_error(status, &body, 422, "invalid_field");
    let (status, body) = post(&app.base, "/workers/w%00x/heartbeat", json!({})).await;
    assert_error(status, &body, 404, "worker_not_found");
    let (status, body) = post(&app.base, &format!("/tasks/{id}/complete"), json!({ "lease_token": "1.w\u{0}" })).await;
    assert_error(status, &body, 422, "invalid_field");
    let (status, _) = w.op(&t, "complete", json!({ "result": "fine" })).await;
    assert_eq!(status, 200, "the worker's own clean report still lands");
}
