//! Approvals (issue 25, point 6) on both stores, through a daemon's HTTP API and its worker:
//! an approval step waits for its decision once its parents are done (never claimed);
//! approve completes it with `{decision, comment, by, at}` and releases its dependants
//! (which see it in `parents` and through `$from`); reject fails it, cancelling `cancel`
//! dependants and running `run` ones; the workflow retry asks for a decision again; every
//! refusal (404, 400, 409 `not_awaiting_decision`, 422 naming the field, 403 with the
//! read-only key); the expiry; the trace folder and the CWOM Run of the decision; and two
//! decisions (or a decision and the expiry) at once, of which exactly one wins.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crate::support::{http, InProcess, TestDb};
use devops_control_tower::approval::{Decision, DecisionRecord};
use devops_control_tower::handlers::Registry;
use devops_control_tower::store::{DecideError, TaskStore};
use devops_control_tower::task::{NewTask, TaskStatus};
use devops_control_tower::workflow::{NewStep, NewWorkflow, OnParentFailure, StepKey, WorkflowId};
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

fn task_of(created: &Value, key: &str) -> String {
    created["steps"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap()["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no step {key} in {created}"))
        .to_string()
}

async fn create(base: &str, body: Value) -> Value {
    let (status, created) = call(base, "POST", "/workflows", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn decide(base: &str, task: &str, body: Value) -> (u16, Value) {
    call(base, "POST", &format!("/tasks/{task}/decision"), Some(body)).await
}

async fn wait_status(base: &str, id: &str, status: &str) -> Value {
    support::wait_status(base, id, status, Duration::from_secs(20)).await
}

fn read_json(path: std::path::PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_step_completes_with_the_decision_and_releases_its_dependants() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let created = create(
            &app.base,
            json!({ "name": "ship", "steps": [
                { "key": "build", "type": "echo", "payload": { "built": true } },
                { "key": "gate", "type": "approval", "payload": { "prompt": "Ship it?" }, "depends_on": ["build"] },
                { "key": "deploy", "type": "echo", "depends_on": ["gate"],
                  "payload": { "who": { "$from": "gate", "pointer": "/by" } } },
            ]}),
        )
        .await;
        let statuses: Vec<&str> =
            created["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["queued", "waiting", "waiting"], "{kind}: {created}");
        let (build, gate, deploy) =
            (task_of(&created, "build"), task_of(&created, "gate"), task_of(&created, "deploy"));
        wait_status(&app.base, &build, "completed").await;
        // The gate's parent is done: it awaits its decision, unclaimed, for as long as it takes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = support::get_task(&app.base, &gate).await;
        assert_eq!(
            (waiting["status"].as_str(), waiting["attempts"].as_i64()),
            (Some("waiting"), Some(0)),
            "{kind}: {waiting}"
        );
        assert_eq!(support::get_task(&app.base, &deploy).await["status"], "waiting", "{kind}");

        let before = chrono::Utc::now();
        let (status, decided) =
            decide(&app.base, &gate, json!({ "decision": "approve", "comment": "ship it", "by": "ana" })).await;
        assert_eq!(status, 200, "{kind}: {decided}");
        assert_eq!(decided["status"], "completed", "{kind}: {decided}");
        assert_eq!(decided["attempts"], 1, "{kind}: {decided}");
        let result = &decided["result"];
        assert_eq!(
            (result["decision"].as_str(), result["comment"].as_str(), result["by"].as_str()),
            (Some("approve"), Some("ship it"), Some("ana")),
            "{kind}: {decided}"
        );
        let at: chrono::DateTime<chrono::Utc> = result["at"].as_str().unwrap().parse().unwrap();
        assert!(at >= before - chrono::Duration::milliseconds(5) && at <= chrono::Utc::now(), "{kind}: {at}");
        assert!(decided["last_error"].is_null(), "{kind}: {decided}");

        let deployed = wait_status(&app.base, &deploy, "completed").await;
        assert_eq!(deployed["result"], json!({ "who": "ana" }), "{kind}: $from read the decision: {deployed}");
        let input = read_json(app.trace.path().join(&deploy).join("input.json"));
        assert_eq!(
            input["parents"]["gate"],
            json!({ "task_id": gate, "status": "completed", "result": result }),
            "{kind}: {input}"
        );
        let (_, wf) =
            call(&app.base, "GET", &format!("/workflows/{}", created["workflow_id"].as_str().unwrap()), None).await;
        assert_eq!(wf["status"], "completed", "{kind}: {wf}");

        // The gate's trace folder records the decision like an attempt's end.
        let folder = app.trace.path().join(&gate);
        let gate_input = read_json(folder.join("input.json"));
        assert_eq!(
            (gate_input["task_id"].as_str(), gate_input["type"].as_str()),
            (Some(gate.as_str()), Some("approval")),
            "{kind}"
        );
        assert_eq!(gate_input["payload"], json!({ "prompt": "Ship it?" }), "{kind}");
        let log = std::fs::read_to_string(folder.join("log.txt")).unwrap();
        assert!(log.contains("approved by ana: ship it"), "{kind}: {log}");
        let output = read_json(folder.join("output.json"));
        assert_eq!(
            (output["status"].as_str(), output["attempt"].as_i64()),
            (Some("completed"), Some(1)),
            "{kind}: {output}"
        );
        assert_eq!(&output["result"], result, "{kind}: {output}");
        assert!(output.get("cwom_run_id").is_none(), "{kind}: no Run without a link: {output}");

        // Decided once: a second decision is refused and changes nothing.
        let (status, again) = decide(&app.base, &gate, json!({ "decision": "reject" })).await;
        assert_eq!(status, 409, "{kind}: {again}");
        assert_eq!(
            (again["error"].as_str(), again["status"].as_str()),
            (Some("not_awaiting_decision"), Some("completed")),
            "{kind}: {again}"
        );
        assert!(again["message"].as_str().unwrap().contains("already ended"), "{kind}: {again}");
        assert_eq!(support::get_task(&app.base, &gate).await["result"], *result, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_step_fails_cancelling_and_running_its_dependants_and_a_retry_asks_again() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let created = create(
            &app.base,
            json!({ "name": "gated", "steps": [
                { "key": "gate", "type": "approval", "payload": { "prompt": "Merge?" } },
                { "key": "merge", "type": "echo", "depends_on": ["gate"] },
                { "key": "report", "type": "echo", "depends_on": ["gate"], "on_parent_failure": "run" },
            ]}),
        )
        .await;
        let wf = created["workflow_id"].as_str().unwrap().to_string();
        assert_eq!(created["steps"][0]["status"], "waiting", "{kind}: an approval without parents awaits at once");
        let (gate, merge, report) =
            (task_of(&created, "gate"), task_of(&created, "merge"), task_of(&created, "report"));
        let (status, rejected) =
            decide(&app.base, &gate, json!({ "decision": "reject", "comment": "tests are red", "by": "bob" })).await;
        assert_eq!(status, 200, "{kind}: {rejected}");
        assert_eq!(rejected["status"], "failed", "{kind}: {rejected}");
        assert_eq!(rejected["last_error"], "approval_rejected by bob: tests are red", "{kind}: {rejected}");
        assert_eq!(
            (rejected["result"]["decision"].as_str(), rejected["result"]["by"].as_str()),
            (Some("reject"), Some("bob")),
            "{kind}"
        );
        let cancelled = wait_status(&app.base, &merge, "cancelled").await;
        assert_eq!(cancelled["last_error"], "parent step gate ended failed", "{kind}: {cancelled}");
        wait_status(&app.base, &report, "completed").await;
        let input = read_json(app.trace.path().join(&report).join("input.json"));
        assert_eq!(
            input["parents"]["gate"],
            json!({ "task_id": gate, "status": "failed", "error": "approval_rejected by bob: tests are red" }),
            "{kind}: {input}"
        );
        let log = std::fs::read_to_string(app.trace.path().join(&gate).join("log.txt")).unwrap();
        assert!(log.contains("rejected by bob: tests are red"), "{kind}: {log}");
        let output = read_json(app.trace.path().join(&gate).join("output.json"));
        assert_eq!(
            (output["status"].as_str(), output["error"].as_str()),
            (Some("failed"), Some("approval_rejected by bob: tests are red")),
            "{kind}"
        );
        let (_, view) = call(&app.base, "GET", &format!("/workflows/{wf}"), None).await;
        assert_eq!(view["status"], "failed", "{kind}: {view}");

        // The retry asks for the decision again: the gate waits (never queued), the
        // dependant it cancelled waits for it.
        let (status, retried) = call(&app.base, "POST", &format!("/workflows/{wf}/retry"), None).await;
        assert_eq!(status, 200, "{kind}: {retried}");
        assert_eq!(
            (retried["requeued"].as_u64(), retried["reopened"].as_u64()),
            (Some(0), Some(2)),
            "{kind}: {retried}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = support::get_task(&app.base, &gate).await;
        assert_eq!(
            (again["status"].as_str(), again["attempts"].as_i64()),
            (Some("waiting"), Some(0)),
            "{kind}: {again}"
        );
        assert!(again["result"].is_null(), "{kind}: the old decision is gone: {again}");
        assert_eq!(support::get_task(&app.base, &merge).await["status"], "waiting", "{kind}");
        let (status, approved) = decide(&app.base, &gate, json!({ "decision": "approve" })).await;
        assert_eq!(status, 200, "{kind}: {approved}");
        assert_eq!(
            approved["result"],
            json!({ "decision": "approve", "comment": null, "by": null, "at": approved["result"]["at"] }),
            "{kind}"
        );
        wait_status(&app.base, &merge, "completed").await;
        let (_, view) = call(&app.base, "GET", &format!("/workflows/{wf}"), None).await;
        assert_eq!(view["status"], "completed", "{kind}: {view}");

        // A task's own retry of a rejected approval also asks again, never queues it.
        let created = create(
            &app.base,
            json!({ "name": "one", "steps": [{ "key": "g", "type": "approval", "payload": { "prompt": "?" } }] }),
        )
        .await;
        let g = task_of(&created, "g");
        assert_eq!(decide(&app.base, &g, json!({ "decision": "reject" })).await.0, 200, "{kind}");
        let (status, retried) = call(&app.base, "POST", &format!("/tasks/{g}/retry"), None).await;
        assert_eq!((status, retried["status"].as_str()), (200, Some("waiting")), "{kind}: {retried}");
        assert_eq!(decide(&app.base, &g, json!({ "decision": "approve" })).await.0, 200, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_that_cannot_apply_are_refused_with_the_right_code() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let created = create(
            &app.base,
            json!({ "name": "two-gates", "steps": [
                { "key": "first", "type": "approval", "payload": { "prompt": "One?" } },
                { "key": "second", "type": "approval", "payload": { "prompt": "Two?", "expires_after_s": 3600 }, "depends_on": ["first"] },
            ]}),
        )
        .await;
        let (first, second) = (task_of(&created, "first"), task_of(&created, "second"));
        let (status, early) = decide(&app.base, &second, json!({ "decision": "approve" })).await;
        assert_eq!(status, 409, "{kind}: {early}");
        assert_eq!(
            (early["error"].as_str(), early["status"].as_str(), early["task_id"].as_str()),
            (Some("not_awaiting_decision"), Some("waiting"), Some(second.as_str())),
            "{kind}: {early}"
        );
        assert!(early["message"].as_str().unwrap().contains("parents are not done"), "{kind}: {early}");

        let (_, plain) = call(&app.base, "POST", "/tasks/enqueue", Some(json!({ "type": "echo" }))).await;
        let plain = plain["task_id"].as_str().unwrap().to_string();
        let (status, not_one) = decide(&app.base, &plain, json!({ "decision": "approve" })).await;
        assert_eq!((status, not_one["error"].as_str()), (409, Some("not_awaiting_decision")), "{kind}: {not_one}");
        assert!(not_one["message"].as_str().unwrap().contains("not an approval"), "{kind}: {not_one}");

        let missing = uuid::Uuid::now_v7();
        let (status, nf) = decide(&app.base, &missing.to_string(), json!({ "decision": "approve" })).await;
        assert_eq!((status, nf["error"].as_str()), (404, Some("task_not_found")), "{kind}: {nf}");
        let (status, bad) = decide(&app.base, "not-a-uuid", json!({ "decision": "approve" })).await;
        assert_eq!((status, bad["error"].as_str()), (400, Some("invalid_id")), "{kind}: {bad}");

        let long = "x".repeat(4097);
        for (body, field) in [
            (json!({}), "decision"),
            (json!({ "decision": "maybe" }), "decision"),
            (json!({ "decision": true }), "decision"),
            (json!({ "decision": "approve", "by": "" }), "by"),
            (json!({ "decision": "approve", "by": 7 }), "by"),
            (json!({ "decision": "approve", "comment": long }), "comment"),
            (json!({ "decision": "approve", "comment": "a\u{0}b" }), "comment"),
            (json!({ "decision": "approve", "colour": "red" }), "colour"),
            (json!(["approve"]), "body"),
        ] {
            let (status, refused) = decide(&app.base, &first, body.clone()).await;
            assert_eq!(status, 422, "{kind}, {body}: {refused}");
            assert_eq!(refused["error"], "invalid_field", "{kind}, {body}: {refused}");
            assert!(refused["message"].as_str().unwrap().contains(field), "{kind}, {body}: {refused}");
        }
        let res = http().post(format!("{}/tasks/{first}/decision", app.base)).body("approve").send().await.unwrap();
        assert_eq!(res.status(), 415, "{kind}: not JSON");
        assert_eq!(
            support::get_task(&app.base, &first).await["status"],
            "waiting",
            "{kind}: nothing refused changed it"
        );

        // An approval is a workflow step: on its own it is refused, naming the type.
        let (status, alone) = call(
            &app.base,
            "POST",
            "/tasks/enqueue",
            Some(json!({ "type": "approval", "payload": { "prompt": "?" } })),
        )
        .await;
        assert_eq!((status, alone["error"].as_str()), (422, Some("invalid_field")), "{kind}: {alone}");
        assert!(alone["message"].as_str().unwrap().starts_with("type:"), "{kind}: {alone}");
        let (status, batch) = call(
            &app.base,
            "POST",
            "/tasks/enqueue_batch",
            Some(json!([{ "type": "echo" }, { "type": "approval", "payload": { "prompt": "?" } }])),
        )
        .await;
        assert_eq!((status, batch["index"].as_u64()), (422, Some(1)), "{kind}: {batch}");

        // Its payload is checked with the workflow, naming the step and the field.
        for (payload, field) in [
            (json!({}), "payload"),
            (json!({ "prompt": 1 }), "payload.prompt"),
            (json!({ "prompt": "" }), "payload.prompt"),
            (json!({ "prompt": "?", "expires_after_s": 0 }), "payload.expires_after_s"),
            (json!({ "prompt": "?", "expires_after_s": 2.5 }), "payload.expires_after_s"),
            (json!({ "prompt": "?", "expires_after_s": "soon" }), "payload.expires_after_s"),
        ] {
            let body = json!({ "name": "bad", "steps": [{ "key": "ok", "type": "echo" }, { "key": "g", "type": "approval", "payload": payload }] });
            let (status, refused) = call(&app.base, "POST", "/workflows", Some(body)).await;
            assert_eq!(status, 422, "{kind}, {payload}: {refused}");
            assert_eq!(
                (
                    refused["error"].as_str(),
                    refused["index"].as_u64(),
                    refused["key"].as_str(),
                    refused["cause"].as_str()
                ),
                (Some("invalid_workflow"), Some(1), Some("g"), Some("invalid_field")),
                "{kind}, {payload}: {refused}"
            );
            assert!(
                refused["message"].as_str().unwrap().contains(&format!("{field}:")),
                "{kind}, {payload}: {refused}"
            );
        }
        let (_, list) = call(&app.base, "GET", "/workflows?name=bad", None).await;
        assert_eq!(list, json!([]), "{kind}: nothing stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_key_cannot_decide() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let env = [("JCT_API_KEY", "full-key"), ("JCT_READONLY_API_KEY", "read-key")];
        let app = support::start_in_process(&db.backend().await, &db.url(), &env, Registry::builtin()).await;
        let created: Value = http()
            .post(format!("{}/workflows", app.base))
            .bearer_auth("full-key")
            .json(&json!({ "name": "ro", "steps": [{ "key": "g", "type": "approval", "payload": { "prompt": "?" } }] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let gate = task_of(&created, "g");
        let post = |key: &'static str| {
            http()
                .post(format!("{}/tasks/{gate}/decision", app.base))
                .bearer_auth(key)
                .json(&json!({ "decision": "approve" }))
                .send()
        };
        let refused = post("read-key").await.unwrap();
        assert_eq!(refused.status(), 403, "{kind}");
        assert_eq!(refused.json::<Value>().await.unwrap()["error"], "read_only_key", "{kind}");
        let nokey = http()
            .post(format!("{}/tasks/{gate}/decision", app.base))
            .json(&json!({ "decision": "approve" }))
            .send()
            .await
            .unwrap();
        assert_eq!(nokey.status(), 401, "{kind}");
        let task: Value = http()
            .get(format!("{}/tasks/{gate}", app.base))
            .bearer_auth("read-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(task["status"], "waiting", "{kind}: the refused decision changed nothing");
        let allowed = post("full-key").await.unwrap();
        assert_eq!(allowed.status(), 200, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_without_a_decision_in_time_expires() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let created = create(
            &app.base,
            json!({ "name": "expiring", "steps": [
                { "key": "gate", "type": "approval", "payload": { "prompt": "Quick?", "expires_after_s": 1 } },
                { "key": "patient", "type": "approval", "payload": { "prompt": "Slow?", "expires_after_s": 3600 } },
                { "key": "after", "type": "echo", "depends_on": ["gate"], "on_parent_failure": "run" },
            ]}),
        )
        .await;
        let (gate, patient, after) =
            (task_of(&created, "gate"), task_of(&created, "patient"), task_of(&created, "after"));
        let created_at = chrono::Utc::now();
        let expired = wait_status(&app.base, &gate, "failed").await;
        assert_eq!(expired["last_error"], "approval_expired", "{kind}: {expired}");
        let finished: chrono::DateTime<chrono::Utc> = expired["finished_at"].as_str().unwrap().parse().unwrap();
        assert!(finished - created_at >= chrono::Duration::milliseconds(900), "{kind}: expired early at {finished}");
        let ran = wait_status(&app.base, &after, "completed").await;
        assert_eq!(ran["status"], "completed", "{kind}");
        let output = read_json(app.trace.path().join(&gate).join("output.json"));
        assert_eq!(
            (output["status"].as_str(), output["error"].as_str()),
            (Some("failed"), Some("approval_expired")),
            "{kind}"
        );
        let (status, late) = decide(&app.base, &gate, json!({ "decision": "approve" })).await;
        assert_eq!((status, late["error"].as_str()), (409, Some("not_awaiting_decision")), "{kind}: {late}");
        assert_eq!(support::get_task(&app.base, &patient).await["status"], "waiting", "{kind}: not yet due");
    }
}

/// Many decisions on one step at once through the API: exactly one is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_decisions_exactly_one_wins() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        for round in 0..5 {
            let created = create(
                &app.base,
                json!({ "name": "race", "steps": [{ "key": "g", "type": "approval", "payload": { "prompt": "?" } }] }),
            )
            .await;
            let gate = task_of(&created, "g");
            let calls: Vec<_> = (0..12)
                .map(|i| {
                    let (base, gate) = (app.base.clone(), gate.clone());
                    let decision = if i % 2 == 0 { "approve" } else { "reject" };
                    tokio::spawn(async move {
                        (decision, decide(&base, &gate, json!({ "decision": decision, "by": format!("p{i}") })).await)
                    })
                })
                .collect();
            let mut won = Vec::new();
            for c in calls {
                let (decision, (status, body)) = c.await.unwrap();
                match status {
                    200 => won.push((decision, body)),
                    409 => assert_eq!(body["error"], "not_awaiting_decision", "{kind}, round {round}: {body}"),
                    other => panic!("{kind}, round {round}: {other} {body}"),
                }
            }
            assert_eq!(won.len(), 1, "{kind}, round {round}: {won:?}");
            let task = support::get_task(&app.base, &gate).await;
            let want = if won[0].0 == "approve" { "completed" } else { "failed" };
            assert_eq!(task["status"], want, "{kind}, round {round}");
            assert_eq!(task["result"], won[0].1["result"], "{kind}, round {round}: the winner's record stays");
        }
    }
}

fn approval_workflow(expires_after_s: u64) -> NewWorkflow {
    let mut task = NewTask::new("approval", json!({ "prompt": "race?", "expires_after_s": expires_after_s }));
    task.max_attempts = 1;
    NewWorkflow {
        id: WorkflowId::new(),
        name: "race".into(),
        idempotency_key: None,
        cwom_issue_id: None,
        steps: vec![NewStep {
            key: StepKey::parse("g").unwrap(),
            task,
            depends_on: vec![],
            on_parent_failure: OnParentFailure::Cancel,
        }],
    }
    .checked()
    .unwrap()
}

/// A decision and the expiry of the same due step at once, through two stores (two
/// daemons): exactly one ends it, and the step says which.
async fn decision_and_expiry_race(kind: &str) {
    let db = TestDb::new(kind).await;
    let (one, two): (Arc<dyn TaskStore>, Arc<dyn TaskStore>) = (db.store().await, db.store().await);
    let mut outcomes = (0, 0);
    for round in 0..10 {
        let wf = approval_workflow(1);
        one.create_workflow(&wf).await.unwrap();
        let id = wf.steps[0].task.id;
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let record = DecisionRecord {
            decision: Decision::Approve,
            comment: None,
            by: Some("ana".into()),
            at: chrono::Utc::now(),
        };
        let (s1, s2) = (one.clone(), two.clone());
        let expire = tokio::spawn(async move { s1.expire_approvals(100).await.unwrap() });
        let decision = tokio::spawn(async move { s2.decide(id, &record).await });
        let (expired, decided) = (expire.await.unwrap(), decision.await.unwrap());
        let task = one.get(id).await.unwrap().unwrap();
        match decided {
            Ok(t) => {
                assert!(expired.iter().all(|e| e.id != id), "{kind}, round {round}: both ended it");
                assert_eq!((t.status, task.status), (TaskStatus::Completed, TaskStatus::Completed), "{kind}, {round}");
                outcomes.0 += 1;
            }
            Err(DecideError::NotAwaiting { status, .. }) => {
                assert_eq!(expired.iter().filter(|e| e.id == id).count(), 1, "{kind}, round {round}: nobody ended it");
                assert_eq!((status, task.status), (TaskStatus::Failed, TaskStatus::Failed), "{kind}, round {round}");
                assert_eq!(task.last_error.as_deref(), Some("approval_expired"), "{kind}, round {round}");
                outcomes.1 += 1;
            }
            Err(e) => panic!("{kind}, round {round}: {e}"),
        }
        assert_eq!(task.attempts, 1, "{kind}, round {round}: ended once");
    }
    assert_eq!(outcomes.0 + outcomes.1, 10, "{kind}");
    // A step not yet due is left alone by the expiry.
    let wf = approval_workflow(3600);
    one.create_workflow(&wf).await.unwrap();
    assert!(one.expire_approvals(100).await.unwrap().is_empty(), "{kind}");
    assert_eq!(one.get(wf.steps[0].task.id).await.unwrap().unwrap().status, TaskStatus::Waiting, "{kind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_and_the_expiry_at_once_end_the_step_once_on_sqlite() {
    decision_and_expiry_race("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_and_the_expiry_at_once_end_the_step_once_on_postgres() {
    decision_and_expiry_race("postgres").await;
}

/// A Repo and an Issue to link a workflow to; returns the Issue's id.
async fn issue(base: &str) -> String {
    let (status, repo) = call(
        base,
        "POST",
        "/cwom/repos",
        Some(json!({"name": "Control Tower", "slug": format!("jct-{}", uuid::Uuid::now_v7()), "source": {"system": "github"}})),
    )
    .await;
    assert_eq!(status, 201, "{repo}");
    let (status, issue) = call(
        base,
        "POST",
        "/cwom/issues",
        Some(json!({"repo": {"kind": "Repo", "id": repo["id"]}, "title": "Gate the release", "type": "feature"})),
    )
    .await;
    assert_eq!(status, 201, "{issue}");
    issue["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_approval_records_its_decision_in_a_cwom_run() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db).await;
        let issue_id = issue(&app.base).await;
        let created = create(
            &app.base,
            json!({ "name": "linked", "cwom_issue_id": issue_id, "steps": [
                { "key": "gate", "type": "approval", "payload": { "prompt": "Release?" } },
                { "key": "nope", "type": "approval", "payload": { "prompt": "And this?" } },
            ]}),
        )
        .await;
        let (gate, nope) = (task_of(&created, "gate"), task_of(&created, "nope"));
        let (status, _) =
            decide(&app.base, &gate, json!({ "decision": "approve", "comment": "green", "by": "ana" })).await;
        assert_eq!(status, 200, "{kind}");
        let (status, _) =
            decide(&app.base, &nope, json!({ "decision": "reject", "comment": "not now", "by": "bob" })).await;
        assert_eq!(status, 200, "{kind}");
        for (task, decision, by, comment, run_status) in
            [(&gate, "approve", "ana", "green", "done"), (&nope, "reject", "bob", "not now", "failed")]
        {
            let output = read_json(app.trace.path().join(task).join("output.json"));
            let run_id = output["cwom_run_id"].as_str().unwrap_or_else(|| panic!("{kind}: {output}")).to_string();
            let (status, run) = call(&app.base, "GET", &format!("/cwom/runs/{run_id}"), None).await;
            assert_eq!(status, 200, "{kind}: {run}");
            assert_eq!(run["status"], run_status, "{kind}: {run}");
            assert_eq!(run["for_issue"]["id"], issue_id.as_str(), "{kind}: {run}");
            let meta = &run["meta"];
            assert_eq!(
                (
                    meta["jct.task_id"].as_str(),
                    meta["jct.decision"].as_str(),
                    meta["jct.decided_by"].as_str(),
                    meta["jct.comment"].as_str()
                ),
                (Some(task.as_str()), Some(decision), Some(by), Some(comment)),
                "{kind}: {run}"
            );
            assert_eq!(run["executor"]["actor"]["actor_id"], by, "{kind}: {run}");
            if decision == "reject" {
                assert_eq!(run["failure"]["message"], "approval_rejected by bob: not now", "{kind}: {run}");
                assert_eq!(run["failure"]["category"], "policy", "{kind}: {run}");
            }
            let (_, artifacts) = call(&app.base, "GET", &format!("/cwom/artifacts?run_id={run_id}"), None).await;
            assert_eq!(artifacts[0]["type"], "trace", "{kind}: {artifacts}");
        }
        let (_, issue) = call(&app.base, "GET", &format!("/cwom/issues/{issue_id}"), None).await;
        assert_eq!(issue["runs"].as_array().map(|r| r.len()), Some(2), "{kind}: one Run per decision: {issue}");
    }
}
