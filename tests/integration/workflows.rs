//! Workflows (issue 25) on both stores, through a daemon's HTTP API and its worker: every
//! refusal of `POST /workflows`, nothing stored by a refused one, a diamond whose last step
//! sees both parents in `input.json`, a failure that cancels on down while `run` steps run,
//! the cancel route stopping a running step, the idempotency key's 409; and at the store,
//! two parents ending at once on two daemons' stores (repeated), and a raw SQL insert that
//! is still a plain task.

use crate::support;

use std::time::Duration;

use crate::store_conformance::workflow_cases::{step, workflow};
use crate::support::{http, InProcess, TestDb};
use async_trait::async_trait;
use devops_control_tower::handlers::{Handler, HandlerError, Registry, TaskContext};
use devops_control_tower::lease::Held;
use devops_control_tower::store::{AttemptEnd, ClaimParams, Finish, TaskStore};
use devops_control_tower::task::{TaskStatus, WorkerId};
use devops_control_tower::workflow::OnParentFailure;
use serde_json::{json, Value};

const STORES: [&str; 2] = ["sqlite", "postgres"];

async fn daemon(db: &TestDb) -> InProcess {
    support::start_in_process(&db.backend().await, &db.url(), &[("JCT_POLL_INTERVAL_MS", "50")], Registry::builtin())
        .await
}

async fn call(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = http().request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The step of a created workflow's answer with this key.
fn task_of(created: &Value, key: &str) -> String {
    created["steps"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn wait_workflow(base: &str, id: &str, status: &str) -> Value {
    support::wait_for(&format!("workflow {id} to be {status}"), Duration::from_secs(20), || async {
        let (code, w) = call(base, "GET", &format!("/workflows/{id}"), None).await;
        assert_eq!(code, 200, "{w}");
        (w["status"] == status).then_some(w)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_workflows_are_refused_naming_the_steps_and_store_nothing() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let echo = |key: &str, deps: &[&str]| json!({ "key": key, "type": "echo", "depends_on": deps });
        let many: Vec<Value> = (0..10_001).map(|i| json!({ "key": format!("s{i}"), "type": "echo" })).collect();
        // (what, body, the fields the answer must hold)
        let cases: Vec<(&str, Value, Value)> = vec![
            (
                "a repeated key",
                json!({ "name": "w", "steps": [echo("a", &[]), echo("a", &[])] }),
                json!({ "key": "a", "keys": ["a"], "indexes": [0, 1] }),
            ),
            (
                "an unknown dependency",
                json!({ "name": "w", "steps": [echo("a", &[]), echo("b", &["zz"])] }),
                json!({ "index": 1, "key": "b", "dependency": "zz" }),
            ),
            (
                "a cycle",
                json!({ "name": "w", "steps": [echo("r", &[]), echo("x", &["r", "y"]), echo("y", &["x"])] }),
                json!({}),
            ),
            ("more than 10,000 steps", json!({ "name": "w", "steps": many }), json!({ "count": 10_001 })),
            (
                "an invalid step",
                json!({ "name": "w", "steps": [echo("a", &[]), { "key": "b", "type": "echo", "max_attempts": 0 }] }),
                json!({ "index": 1, "key": "b", "cause": "invalid_field" }),
            ),
            (
                "a step of an unknown type",
                json!({ "name": "w", "steps": [{ "key": "a", "type": "no-such-type" }] }),
                json!({ "index": 0, "key": "a", "cause": "unknown_type" }),
            ),
            (
                "an unknown field in a step",
                json!({ "name": "w", "steps": [{ "key": "a", "type": "echo", "colour": "red" }] }),
                json!({ "index": 0, "key": "a" }),
            ),
            (
                "a bad key",
                json!({ "name": "w", "steps": [echo("a", &[]), { "key": "has space", "type": "echo" }] }),
                json!({ "index": 1 }),
            ),
            (
                "a step with its own idempotency key",
                json!({ "name": "w", "steps": [{ "key": "a", "type": "echo", "idempotency_key": "k" }] }),
                json!({ "index": 0, "key": "a" }),
            ),
            (
                "a bad on_parent_failure",
                json!({ "name": "w", "steps": [echo("a", &[]), { "key": "b", "type": "echo", "depends_on": ["a"], "on_parent_failure": "retry" }] }),
                json!({ "index": 1, "key": "b" }),
            ),
            (
                "a $from naming a step that is not a parent",
                json!({ "name": "w", "steps": [echo("a", &[]), echo("x", &[]), { "key": "b", "type": "echo", "depends_on": ["a"],
                    "payload": { "deep": [{ "$from": "x", "pointer": "/v" }] } }] }),
                json!({ "index": 2, "key": "b", "cause": "invalid_reference" }),
            ),
            (
                "a $from without a pointer",
                json!({ "name": "w", "steps": [echo("a", &[]), { "key": "b", "type": "echo", "depends_on": ["a"],
                    "payload": { "v": { "$from": "a" } } }] }),
                json!({ "index": 1, "key": "b", "cause": "invalid_reference" }),
            ),
            ("no steps", json!({ "name": "w", "steps": [] }), json!({ "field": "steps" })),
            ("no name", json!({ "steps": [echo("a", &[])] }), json!({})),
            ("an empty name", json!({ "name": "", "steps": [echo("a", &[])] }), json!({ "field": "name" })),
            ("an unknown field", json!({ "name": "w", "steps": [echo("a", &[])], "colour": 1 }), json!({})),
        ];
        for (what, body, expected) in cases {
            let (status, answer) = call(&app.base, "POST", "/workflows", Some(body)).await;
            assert_eq!(status, 422, "{kind}, {what}: {answer}");
            assert_eq!(answer["error"], "invalid_workflow", "{kind}, {what}: {answer}");
            assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{kind}, {what}: {answer}");
            for (k, v) in expected.as_object().unwrap() {
                assert_eq!(&answer[k], v, "{kind}, {what}: {k} in {answer}");
            }
            if what == "a cycle" {
                let mut keys: Vec<&str> =
                    answer["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
                keys.sort();
                assert_eq!(keys, ["x", "y"], "{kind}: the keys on the cycle, not r: {answer}");
            }
        }
        // Malformed JSON is a 400, as on every route.
        let res = http()
            .post(format!("{}/workflows", app.base))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{kind}");
        // Nothing of any refused workflow was stored.
        let (_, tasks) = call(&app.base, "GET", "/tasks?limit=1000", None).await;
        assert_eq!(tasks, json!([]), "{kind}: a refused workflow left tasks");
        let (_, workflows) = call(&app.base, "GET", "/workflows", None).await;
        assert_eq!(workflows, json!([]), "{kind}: a refused workflow was stored");
        // Unknown ids and bad filters.
        let (status, answer) = call(&app.base, "GET", &format!("/workflows/{}", uuid::Uuid::now_v7()), None).await;
        assert_eq!((status, answer["error"].as_str()), (404, Some("workflow_not_found")), "{kind}");
        let (status, _) = call(&app.base, "GET", "/workflows/not-a-uuid", None).await;
        assert_eq!(status, 400, "{kind}");
        let (status, answer) = call(&app.base, "GET", "/workflows?status=lost", None).await;
        assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_filter")), "{kind}");
        let (status, _) = call(&app.base, "POST", &format!("/workflows/{}/cancel", uuid::Uuid::now_v7()), None).await;
        assert_eq!(status, 404, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_completes_and_its_last_step_sees_both_parents() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let body = json!({
            "name": "diamond",
            "steps": [
                { "key": "d", "type": "echo", "payload": { "me": "d" }, "depends_on": ["b", "c"] },
                { "key": "a", "type": "echo", "payload": { "me": "a" } },
                { "key": "b", "type": "echo", "payload": { "me": "b" }, "depends_on": ["a"] },
                { "key": "c", "type": "echo", "payload": { "me": "c" }, "depends_on": ["a"] },
            ]
        });
        let (status, created) = call(&app.base, "POST", "/workflows", Some(body)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        assert_eq!(created["status"], "running");
        let statuses: Vec<(&str, &str)> = created["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["key"].as_str().unwrap(), s["status"].as_str().unwrap()))
            .collect();
        assert_eq!(statuses, [("d", "waiting"), ("a", "queued"), ("b", "waiting"), ("c", "waiting")], "{kind}");
        let id = created["workflow_id"].as_str().unwrap();
        let done = wait_workflow(&app.base, id, "completed").await;
        let d_view = done["steps"].as_array().unwrap().iter().find(|s| s["key"] == "d").unwrap().clone();
        assert_eq!(d_view["depends_on"], json!(["b", "c"]), "{kind}: {done}");
        assert_eq!((d_view["status"].as_str(), d_view["attempts"].as_i64()), (Some("completed"), Some(1)));
        assert!(d_view["finished_at"].is_string() && done["finished_at"].is_string(), "{kind}: {done}");
        let (d, b, c) = (task_of(&created, "d"), task_of(&created, "b"), task_of(&created, "c"));
        let task = support::get_task(&app.base, &d).await;
        assert_eq!((task["workflow_id"].as_str(), task["step_key"].as_str()), (Some(id), Some("d")), "{kind}");
        // d ran after both of its parents ended.
        let ended = |t: &Value| t["finished_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let started = task["started_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        for parent in [&b, &c] {
            assert!(ended(&support::get_task(&app.base, parent).await) <= started, "{kind}: d started before {parent}");
        }
        let input: Value =
            serde_json::from_slice(&std::fs::read(app.trace.path().join(&d).join("input.json")).unwrap()).unwrap();
        assert_eq!(
            input["parents"],
            json!({
                "b": { "task_id": b, "status": "completed", "result": { "me": "b" } },
                "c": { "task_id": c, "status": "completed", "result": { "me": "c" } },
            }),
            "{kind}: {input}"
        );
        let a = task_of(&created, "a");
        let root: Value =
            serde_json::from_slice(&std::fs::read(app.trace.path().join(&a).join("input.json")).unwrap()).unwrap();
        assert_eq!(root["parents"], json!({}), "{kind}: a root step has no parents");
        let (_, listed) = call(&app.base, "GET", "/workflows?status=completed&name=diamond", None).await;
        assert_eq!(listed.as_array().map(|l| l.len()), Some(1), "{kind}: {listed}");
        assert_eq!(listed[0]["workflow_id"], id);
        let (_, none) = call(&app.base, "GET", "/workflows?status=running", None).await;
        assert_eq!(none, json!([]), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_references_are_resolved_and_an_unresolvable_one_fails_its_step() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let from = |pointer: &str| json!({ "$from": "a", "pointer": pointer });
        let body = json!({
            "name": "refs",
            "steps": [
                // echo answers its payload: a's result is this.
                { "key": "a", "type": "echo", "payload": {
                    "sha": "abc123", "files": ["x.rs", "y.rs"], "nested": { "k": [1, 2] }, "a/b": "slashed" } },
                { "key": "b", "type": "echo", "depends_on": ["a"], "payload": {
                    "value": from("/sha"), "object": from("/nested"), "element": from("/files/1"),
                    "escaped": from("/a~1b"), "deep": [{ "keep": 1, "in": from("/nested/k/0") }] } },
                { "key": "c", "type": "echo", "depends_on": ["a"], "payload": { "x": from("/no/such") } },
                { "key": "d", "type": "echo", "depends_on": ["c"] },
            ]
        });
        let (status, created) = call(&app.base, "POST", "/workflows", Some(body)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        let id = created["workflow_id"].as_str().unwrap();
        let done = wait_workflow(&app.base, id, "failed").await;
        let resolved = json!({
            "value": "abc123", "object": { "k": [1, 2] }, "element": "y.rs",
            "escaped": "slashed", "deep": [{ "keep": 1, "in": 1 }],
        });
        let b = support::get_task(&app.base, &task_of(&created, "b")).await;
        assert_eq!(b["status"], "completed", "{kind}: {done}");
        assert_eq!(b["result"], resolved, "{kind}: the handler saw the resolved payload");
        let input: Value = serde_json::from_slice(
            &std::fs::read(app.trace.path().join(task_of(&created, "b")).join("input.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(input["payload"], resolved, "{kind}: input.json records the resolved payload: {input}");
        let c = support::get_task(&app.base, &task_of(&created, "c")).await;
        assert_eq!(c["status"], "failed", "{kind}: {c}");
        assert_eq!(
            c["last_error"],
            "$from \"a\" pointer \"/no/such\" at payload/x: the result of \"a\" has nothing at that pointer",
            "{kind}: {c}"
        );
        let d = support::get_task(&app.base, &task_of(&created, "d")).await;
        assert_eq!(d["status"], "cancelled", "{kind}: c's dependants follow the usual rule: {d}");
    }
}

/// Fails its first run and completes every later one: a step that a retry fixes.
struct FailsOnce(std::sync::atomic::AtomicBool);

#[async_trait]
impl Handler for FailsOnce {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        if self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Ok(ctx.payload)
        } else {
            Err(HandlerError("the first run fails".into()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_workflow_runs_its_failed_step_and_the_dependants_it_cancelled() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let mut registry = Registry::builtin();
        registry.register("fails-once", FailsOnce(Default::default()));
        let app =
            support::start_in_process(&db.backend().await, &db.url(), &[("JCT_POLL_INTERVAL_MS", "50")], registry)
                .await;
        let body = json!({
            "name": "retried",
            "steps": [
                { "key": "a", "type": "echo", "payload": { "v": 1 } },
                { "key": "b", "type": "fails-once", "payload": { "got": { "$from": "a", "pointer": "/v" } },
                  "depends_on": ["a"], "max_attempts": 1 },
                { "key": "c", "type": "echo", "depends_on": ["b"] },
                { "key": "d", "type": "echo", "depends_on": ["a", "c"] },
            ]
        });
        let (status, created) = call(&app.base, "POST", "/workflows", Some(body)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        let id = created["workflow_id"].as_str().unwrap();
        let failed = wait_workflow(&app.base, id, "failed").await;
        let by_key =
            |w: &Value, k: &str| w["steps"].as_array().unwrap().iter().find(|s| s["key"] == k).unwrap().clone();
        assert_eq!(by_key(&failed, "c")["status"], "cancelled", "{kind}: {failed}");
        assert_eq!(by_key(&failed, "d")["status"], "cancelled", "{kind}: {failed}");

        let (status, retried) = call(&app.base, "POST", &format!("/workflows/{id}/retry"), None).await;
        assert_eq!(status, 200, "{kind}: {retried}");
        assert_eq!(
            (retried["requeued"].as_u64(), retried["reopened"].as_u64()),
            (Some(1), Some(2)),
            "{kind}: {retried}"
        );
        assert_eq!(retried["workflow_id"], id, "{kind}: {retried}");
        let done = wait_workflow(&app.base, id, "completed").await;
        for k in ["a", "b", "c", "d"] {
            let step = by_key(&done, k);
            assert_eq!(
                (step["status"].as_str(), step["attempts"].as_i64()),
                (Some("completed"), Some(1)),
                "{kind}: {k}: {done}"
            );
        }
        let b = support::get_task(&app.base, &task_of(&created, "b")).await;
        assert_eq!(b["result"], json!({ "got": 1 }), "{kind}: the retried step resolved its $from again: {b}");
        let input: Value = serde_json::from_slice(
            &std::fs::read(app.trace.path().join(task_of(&created, "d")).join("input.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(input["parents"]["c"]["status"], "completed", "{kind}: {input}");

        let (status, again) = call(&app.base, "POST", &format!("/workflows/{id}/retry"), None).await;
        assert_eq!((status, again["error"].as_str()), (409, Some("not_retryable")), "{kind}: {again}");
        assert_eq!((again["workflow_id"].as_str(), again["status"].as_str()), (Some(id), Some("completed")), "{kind}");
        let (status, missing) =
            call(&app.base, "POST", &format!("/workflows/{}/retry", uuid::Uuid::now_v7()), None).await;
        assert_eq!((status, missing["error"].as_str()), (404, Some("workflow_not_found")), "{kind}: {missing}");
        let (status, _) = call(&app.base, "POST", "/workflows/not-a-uuid/retry", None).await;
        assert_eq!(status, 400, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_cancels_on_down_while_run_steps_run() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let body = json!({
            "name": "failing",
            "steps": [
                { "key": "build", "type": "fail", "payload": { "message": "compiler said no" }, "max_attempts": 1 },
                { "key": "test", "type": "echo", "depends_on": ["build"] },
                { "key": "deploy", "type": "echo", "depends_on": ["test"] },
                { "key": "report", "type": "echo", "depends_on": ["build"], "on_parent_failure": "run" },
            ]
        });
        let (status, created) = call(&app.base, "POST", "/workflows", Some(body)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        let id = created["workflow_id"].as_str().unwrap();
        let done = wait_workflow(&app.base, id, "failed").await;
        let by_key = |k: &str| done["steps"].as_array().unwrap().iter().find(|s| s["key"] == k).unwrap().clone();
        assert_eq!(by_key("build")["status"], "failed", "{kind}: {done}");
        assert_eq!(by_key("test")["status"], "cancelled", "{kind}: {done}");
        assert_eq!(by_key("test")["last_error"], "parent step build ended failed");
        assert_eq!(by_key("deploy")["status"], "cancelled", "{kind}: the cancel goes on down: {done}");
        assert_eq!(by_key("deploy")["attempts"], 0);
        assert_eq!(by_key("report")["status"], "completed", "{kind}: a run step runs: {done}");
        let report = task_of(&created, "report");
        let input: Value =
            serde_json::from_slice(&std::fs::read(app.trace.path().join(&report).join("input.json")).unwrap()).unwrap();
        assert_eq!(input["parents"]["build"]["status"], "failed", "{kind}: {input}");
        assert!(input["parents"]["build"]["error"].as_str().unwrap().contains("compiler said no"), "{input}");
        assert!(input["parents"]["build"].get("result").is_none(), "{input}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cancel_route_stops_every_unfinished_step() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let body = json!({
            "name": "long",
            "steps": [
                { "key": "slow", "type": "sleep", "payload": { "ms": 60_000 } },
                { "key": "after", "type": "echo", "depends_on": ["slow"], "on_parent_failure": "run" },
                { "key": "other", "type": "sleep", "payload": { "ms": 60_000 }, "run_at": "2999-01-01T00:00:00Z" },
                { "key": "done", "type": "echo" },
            ]
        });
        let (status, created) = call(&app.base, "POST", "/workflows", Some(body)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        let id = created["workflow_id"].as_str().unwrap();
        let slow = task_of(&created, "slow");
        support::wait_status(&app.base, &slow, "running", Duration::from_secs(10)).await;
        support::wait_status(&app.base, &task_of(&created, "done"), "completed", Duration::from_secs(10)).await;
        let (status, answer) = call(&app.base, "POST", &format!("/workflows/{id}/cancel"), None).await;
        assert_eq!(status, 200, "{kind}: {answer}");
        assert_eq!(answer["cancelled"], 3, "{kind}: slow, after and other: {answer}");
        assert_eq!(answer["status"], "cancelled", "{kind}: {answer}");
        let t = support::get_task(&app.base, &slow).await;
        assert_eq!(
            (t["status"].as_str(), t["last_error"].as_str()),
            (Some("cancelled"), Some("cancelled while running"))
        );
        // `after` would run on its parent's cancel, but the workflow's cancel took it first.
        for key in ["after", "other"] {
            assert_eq!(support::get_task(&app.base, &task_of(&created, key)).await["status"], "cancelled", "{kind}");
        }
        assert_eq!(support::get_task(&app.base, &task_of(&created, "done")).await["status"], "completed");
        // The handler was stopped: its trace ends, well before its minute is up.
        let output = app.trace.path().join(&slow).join("output.json");
        support::wait_for("the cancelled step's output.json", Duration::from_secs(10), || async {
            output.exists().then_some(())
        })
        .await;
        let (status, again) = call(&app.base, "POST", &format!("/workflows/{id}/cancel"), None).await;
        assert_eq!((status, again["cancelled"].as_i64()), (200, Some(0)), "{kind}: {again}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_is_409_with_the_existing_workflow() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let body = json!({ "name": "once", "idempotency_key": "release-7", "steps": [{ "key": "a", "type": "echo" }] });
        let (status, first) = call(&app.base, "POST", "/workflows", Some(body.clone())).await;
        assert_eq!(status, 201, "{kind}: {first}");
        let (status, again) = call(&app.base, "POST", "/workflows", Some(body)).await;
        assert_eq!(status, 409, "{kind}: {again}");
        assert_eq!(again["error"], "duplicate_idempotency_key");
        assert_eq!(again["workflow_id"], first["workflow_id"], "{kind}: {again}");
        let (_, listed) = call(&app.base, "GET", "/workflows", None).await;
        assert_eq!(listed.as_array().map(|l| l.len()), Some(1), "{kind}: {listed}");
        let (_, tasks) = call(&app.base, "GET", "/tasks", None).await;
        assert_eq!(tasks.as_array().map(|l| l.len()), Some(1), "{kind}: the repeat stored a step");
    }
}

fn claim_of(worker: &str, task_type: &str) -> ClaimParams {
    ClaimParams {
        worker: WorkerId(worker.into()),
        limit: 10,
        lease: Duration::from_secs(30),
        types: vec![task_type.into()],
        queues: None,
    }
}

/// Two parents of one step end at the same instant through two stores (two daemons' pools
/// or connections): the step becomes `queued` exactly once, whichever commits last, and
/// sees both. Every other round one parent fails and the step is a `run` step.
async fn two_parents_end_at_once(kind: &str) {
    let db = TestDb::new(kind).await;
    let (one, two): (std::sync::Arc<dyn TaskStore>, std::sync::Arc<dyn TaskStore>) =
        (db.store().await, db.store().await);
    for round in 0..100 {
        let fails = round % 2 == 1;
        let mode = if fails { OnParentFailure::Run } else { OnParentFailure::Cancel };
        let wf = workflow(vec![
            step("p1", "race_one", &[], OnParentFailure::Cancel),
            step("p2", "race_two", &[], OnParentFailure::Cancel),
            step("child", "race_child", &["p1", "p2"], mode),
        ]);
        one.create_workflow(&wf).await.unwrap();
        let p1 = one.claim(&claim_of("daemon-1", "race_one")).await.unwrap().remove(0);
        let p2 = two.claim(&claim_of("daemon-2", "race_two")).await.unwrap().remove(0);
        let end1 = AttemptEnd {
            held: Held::new(p1.id, WorkerId("daemon-1".into()), p1.attempts),
            finish: if fails {
                Finish::Failed { error: "p1 broke".into() }
            } else {
                Finish::Completed { result: json!(1) }
            },
        };
        let end2 = AttemptEnd {
            held: Held::new(p2.id, WorkerId("daemon-2".into()), p2.attempts),
            finish: Finish::Completed { result: json!(2) },
        };
        let (s1, s2) = (one.clone(), two.clone());
        let a = tokio::spawn(async move { s1.finish(&[end1]).await.unwrap() });
        let b = tokio::spawn(async move { s2.finish(&[end2]).await.unwrap() });
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a, b), (vec![p1.id], vec![p2.id]), "{kind}, round {round}: both ends applied");
        let child = wf.steps[2].task.id;
        assert_eq!(one.get(child).await.unwrap().unwrap().status, TaskStatus::Queued, "{kind}, round {round}");
        let mut claimed = two.claim(&claim_of("daemon-2", "race_child")).await.unwrap();
        assert_eq!(claimed.len(), 1, "{kind}, round {round}: the child is claimable once");
        let parents = claimed.remove(0).parents.expect("parents");
        let want = if fails { TaskStatus::Failed } else { TaskStatus::Completed };
        assert_eq!((parents["p1"].status, parents["p2"].status), (want, TaskStatus::Completed), "{kind}, {round}");
        assert!(two.claim(&claim_of("daemon-1", "race_child")).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_parents_ending_at_once_release_the_child_once_on_sqlite() {
    two_parents_end_at_once("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_parents_ending_at_once_release_the_child_once_on_postgres() {
    two_parents_end_at_once("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_sql_insert_is_still_a_plain_task() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let store = db.store().await;
        match &db {
            TestDb::Postgres(pg) => {
                let client = pg.client().await;
                client.execute("INSERT INTO tasks (type, payload) VALUES ('echo', '{\"x\":1}')", &[]).await.unwrap();
            }
            TestDb::Sqlite(file) => {
                let conn = rusqlite::Connection::open(&file.path).unwrap();
                conn.execute("INSERT INTO tasks (type, payload) VALUES ('echo', '{\"x\":1}')", []).unwrap();
            }
        }
        let mut claimed = store.claim(&claim_of("w", "echo")).await.unwrap();
        assert_eq!(claimed.len(), 1, "{kind}: the raw insert is claimable at once");
        let t = claimed.remove(0);
        assert_eq!(
            (t.payload.clone(), t.workflow_id, t.step_key.clone(), t.parents.clone()),
            (json!({"x": 1}), None, None, None)
        );
        let end = AttemptEnd {
            held: Held::new(t.id, WorkerId("w".into()), t.attempts),
            finish: Finish::Completed { result: json!(1) },
        };
        assert_eq!(store.finish(&[end]).await.unwrap(), vec![t.id], "{kind}");
        assert_eq!(store.get(t.id).await.unwrap().unwrap().status, TaskStatus::Completed);
    }
}

/// A step released by its parent's end is claimed at once: no poll runs here (its period is
/// a minute), so only the wake-up of the release can start the next step (PostgreSQL: the
/// V8 trigger's NOTIFY through the LISTEN connection; SQLite: the in-process wake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_step_runs_at_once_without_a_poll() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let extra = [("JCT_POLL_INTERVAL_MS", "60000"), ("JCT_LISTEN", "on")];
        let app = support::start_in_process(&db.backend().await, &db.url(), &extra, Registry::builtin()).await;
        let steps: Vec<Value> = (0..5)
            .map(|i| {
                let deps: Vec<String> = if i == 0 { vec![] } else { vec![format!("s{}", i - 1)] };
                json!({ "key": format!("s{i}"), "type": "echo", "depends_on": deps })
            })
            .collect();
        let started = std::time::Instant::now();
        let (status, created) =
            call(&app.base, "POST", "/workflows", Some(json!({ "name": "chain", "steps": steps }))).await;
        assert_eq!(status, 201, "{kind}: {created}");
        wait_workflow(&app.base, created["workflow_id"].as_str().unwrap(), "completed").await;
        assert!(started.elapsed() < Duration::from_secs(10), "{kind}: a chain of five took {:?}", started.elapsed());
    }
}

/// An HTTP worker's claim carries a step's parents, as the local one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_claim_carries_the_parents() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        // The waiting claim ends on the release's wake-up (on PostgreSQL, its NOTIFY).
        let extra = [("JCT_POLL_INTERVAL_MS", "50"), ("JCT_LISTEN", "on")];
        let app = support::start_in_process(&db.backend().await, &db.url(), &extra, Registry::builtin()).await;
        let (status, reg) =
            call(&app.base, "POST", "/workers", Some(json!({ "name": "remote", "types": ["remote_step"] }))).await;
        assert_eq!(status, 201, "{kind}: {reg}");
        let body = json!({
            "name": "mixed",
            "steps": [
                { "key": "local", "type": "echo", "payload": { "made": "here" } },
                { "key": "remote", "type": "remote_step", "depends_on": ["local"] },
            ]
        });
        let (status, created) = call(&app.base, "POST", "/workflows", Some(body)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        let asked = std::time::Instant::now();
        let (status, claim) = call(
            &app.base,
            "POST",
            "/tasks/claim",
            Some(json!({ "worker_id": reg["worker_id"], "max": 1, "wait_ms": 10_000 })),
        )
        .await;
        assert_eq!(status, 200, "{kind}: {claim}");
        assert!(asked.elapsed() < Duration::from_secs(5), "{kind}: the claim waited {:?}", asked.elapsed());
        let task = &claim["tasks"][0];
        assert_eq!(task["step_key"], "remote", "{kind}: {claim}");
        assert_eq!(
            task["parents"],
            json!({ "local": { "task_id": task_of(&created, "local"), "status": "completed", "result": { "made": "here" } } }),
            "{kind}: {claim}"
        );
        let (status, done) = call(
            &app.base,
            "POST",
            &format!("/tasks/{}/complete", task["task_id"].as_str().unwrap()),
            Some(json!({ "lease_token": task["lease_token"], "result": "ok" })),
        )
        .await;
        assert_eq!(status, 200, "{kind}: {done}");
        wait_workflow(&app.base, created["workflow_id"].as_str().unwrap(), "completed").await;
    }
}

/// The largest workflow there may be: 10,000 steps, a root fanning out to 9,998 steps that
/// all fan in to the last, stored whole; cancelling it cancels every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_steps_are_one_workflow() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        // The root is due in 2999: nothing runs while the test looks.
        let mut steps = vec![json!({ "key": "root", "type": "echo", "run_at": "2999-01-01T00:00:00Z" })];
        let middle: Vec<String> = (0..9_998).map(|i| format!("m{i}")).collect();
        steps.extend(middle.iter().map(|k| json!({ "key": k, "type": "echo", "depends_on": ["root"] })));
        steps.push(json!({ "key": "sink", "type": "echo", "depends_on": middle }));
        let (status, created) =
            call(&app.base, "POST", "/workflows", Some(json!({ "name": "wide", "steps": steps }))).await;
        assert_eq!(status, 201, "{kind}: {created}");
        assert_eq!(created["steps"].as_array().unwrap().len(), 10_000);
        let id = created["workflow_id"].as_str().unwrap();
        let (_, view) = call(&app.base, "GET", &format!("/workflows/{id}"), None).await;
        assert_eq!(view["step_count"], 10_000, "{kind}");
        let sink = view["steps"].as_array().unwrap().iter().find(|s| s["key"] == "sink").unwrap().clone();
        assert_eq!(sink["depends_on"].as_array().unwrap().len(), 9_998, "{kind}");
        assert_eq!(sink["status"], "waiting");
        let (status, answer) = call(&app.base, "POST", &format!("/workflows/{id}/cancel"), None).await;
        assert_eq!(status, 200, "{kind}");
        assert_eq!(
            (answer["cancelled"].as_u64(), answer["status"].as_str()),
            (Some(10_000), Some("cancelled")),
            "{kind}"
        );
        let (_, tasks) = call(&app.base, "GET", "/tasks?status=waiting", None).await;
        assert_eq!(tasks, json!([]), "{kind}: a step was left waiting");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_key_cannot_retry_a_workflow() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let env = [("JCT_API_KEY", "full-key"), ("JCT_READONLY_API_KEY", "read-key")];
        let app = support::start_in_process(&db.backend().await, &db.url(), &env, Registry::builtin()).await;
        let created: Value = http()
            .post(format!("{}/workflows", app.base))
            .bearer_auth("full-key")
            .json(&json!({ "name": "ro", "steps": [{ "key": "a", "type": "fail", "max_attempts": 1 }] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["workflow_id"].as_str().unwrap_or_else(|| panic!("{kind}: {created}"));
        let retry =
            |key: &'static str| http().post(format!("{}/workflows/{id}/retry", app.base)).bearer_auth(key).send();
        let refused = retry("read-key").await.unwrap();
        assert_eq!(refused.status(), 403, "{kind}");
        let refused: Value = refused.json().await.unwrap();
        assert_eq!(refused["error"], "read_only_key", "{kind}: {refused}");
        // The full key may: once the step failed, the retry queues it again.
        support::wait_for("the step to fail", Duration::from_secs(20), || async {
            let w: Value = http()
                .get(format!("{}/workflows/{id}", app.base))
                .bearer_auth("read-key")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (w["status"] == "failed").then_some(())
        })
        .await;
        let allowed = retry("full-key").await.unwrap();
        assert_eq!(allowed.status(), 200, "{kind}");
    }
}

/// Issue 27 on workflow steps: a step is an enqueue body, so it carries `concurrency_key`,
/// and its queue's `key_concurrency` holds it like any task: three steps of one key, free
/// to run at once, run one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_steps_carry_their_concurrency_key_and_are_held_to_its_limit() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let (status, queue) = call(&app.base, "PUT", "/queues/repo-a", Some(json!({ "key_concurrency": 1 }))).await;
        assert_eq!(status, 200, "{kind}: {queue}");
        let step = |key: &str| json!({ "key": key, "type": "sleep", "payload": { "ms": 300 }, "queue": "repo-a", "concurrency_key": "acme/api" });
        let body = json!({ "name": "one-agent-per-repo", "steps": [step("a"), step("b"), step("c")] });
        let (status, created) = call(&app.base, "POST", "/workflows", Some(body)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        let id = created["workflow_id"].as_str().unwrap();
        wait_workflow(&app.base, id, "completed").await;
        let mut spans = Vec::new();
        for key in ["a", "b", "c"] {
            let task = support::get_task(&app.base, &task_of(&created, key)).await;
            assert_eq!(task["concurrency_key"], "acme/api", "{kind}: {task}");
            let at = |field: &str| chrono::DateTime::parse_from_rfc3339(task[field].as_str().unwrap()).unwrap();
            spans.push((at("started_at"), at("finished_at")));
        }
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[1].0 >= pair[0].1, "{kind}: two steps of one key ran at once: {spans:?}");
        }
    }
}
