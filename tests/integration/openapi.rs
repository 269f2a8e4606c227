//! `GET /openapi.json` describes the API the daemon really serves: every path and method
//! in the document is called on a running daemon, and its status and body must be the
//! ones documented.

use crate::support;

use std::time::Duration;

use crate::support::{enqueue, http, schema_check, wait_status, SqliteDb};
use devops_control_tower::handlers::Registry;
use serde_json::{json, Value};

/// Checks `body` against a response's `schema` with a JSON Schema validator: the document is
/// OpenAPI 3.1, whose schemas are JSON Schema 2020-12, and its `$ref`s point into
/// `#/components/schemas`, so the schema is checked with the document's components beside it.
fn check(doc: &Value, schema: &Value, body: &Value, at: &str) -> Result<(), String> {
    let mut rooted = schema.clone();
    rooted["components"] = doc["components"].clone();
    schema_check(&rooted, body, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_documented() {
    let db = SqliteDb::new();
    let app = support::start_in_process(&db.backend().await, &db.url(), &[], Registry::builtin()).await;
    let base = app.base.clone();

    let res = http().get(format!("{base}/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // The checker refuses a body that breaks the document (so a pass below means something).
    let task = json!({ "$ref": "#/components/schemas/Task" });
    assert!(check(&doc, &task, &json!({ "id": 7, "status": "lost" }), "a bad task").is_err());
    let error = json!({ "$ref": "#/components/schemas/Error" });
    assert!(check(&doc, &error, &json!({ "message": "no error code" }), "a bad error").is_err());

    // Real ids for the routes that take one: a finished task, and a queued one to cancel.
    let done = enqueue(&base, json!({"type": "echo", "concurrency_key": "tenant-1"})).await;
    wait_status(&base, &done, "completed", Duration::from_secs(10)).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let queued = enqueue(&base, json!({"type": "echo", "run_at": later})).await;

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            let id = if path == "/tasks/{id}/cancel" {
                queued.clone()
            } else if path.starts_with("/tasks/") {
                done.clone()
            } else {
                uuid::Uuid::now_v7().to_string()
            };
            let url = format!("{base}{}", path.replace("{id}", &id));
            let method_upper = method.to_uppercase();
            let mut req = http().request(method_upper.parse().unwrap(), &url);
            let example = &op["requestBody"]["content"]["application/json"]["example"];
            if !example.is_null() {
                req = req.json(example);
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16().to_string();
            let content_type = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
            let text = res.text().await.unwrap();
            let at = format!("{method_upper} {path} → {status}");
            let documented =
                op["responses"].get(&status).unwrap_or_else(|| panic!("{at}: status not documented; body: {text}"));
            if let Some(schema) = documented["content"].get("application/json").map(|c| &c["schema"]) {
                assert!(content_type.unwrap_or_default().starts_with("application/json"), "{at}: not JSON");
                let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{at}: {e}: {text}"));
                check(&doc, schema, &body, &at).unwrap_or_else(|e| panic!("{e}"));
            }
            checked += 1;
        }
    }
    // Every route family is in the document: tasks, probes, metrics and the seven CWOM kinds.
    assert!(checked >= 9 + 7 * 3, "only {checked} operations documented");
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/tasks/enqueue",
        "/tasks/enqueue_batch",
        "/tasks/{id}/cancel",
        "/queues",
        "/queues/{name}",
        "/queues/{name}/pause",
        "/queues/{name}/resume",
        "/workflows",
        "/workflows/{id}",
        "/workflows/{id}/cancel",
        "/workflows/{id}/retry",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    // The PUT's example went through: the queue named `{name}` has its limits, as the
    // Queue schema says; a bad limit is the documented 422.
    let queue: Value = http().get(format!("{base}/queues/%7Bname%7D")).send().await.unwrap().json().await.unwrap();
    check(&doc, &json!({ "$ref": "#/components/schemas/Queue" }), &queue, "GET /queues/{name}").unwrap();
    assert_eq!(queue["concurrency"], 4, "{queue}");
    assert_eq!(queue["rate"], json!({ "limit": 10, "per_s": 60.0 }), "{queue}");
    let res = http().put(format!("{base}/queues/q")).json(&json!({ "concurrency": 0 })).send().await.unwrap();
    assert_eq!(res.status(), 422);
    assert!(doc["paths"]["/queues/{name}"]["put"]["responses"].get("422").is_some());
    let refused: Value = res.json().await.unwrap();
    assert_eq!((refused["error"].as_str(), refused["field"].as_str()), (Some("invalid_queue"), Some("concurrency")));
    // Every enqueue body documents concurrency_key, and so does the task.
    let schemas = &doc["components"]["schemas"];
    for schema in ["TaskSpec", "ScheduleTask", "Task"] {
        assert!(schemas[schema]["properties"].get("concurrency_key").is_some(), "{schema} has concurrency_key");
    }
    // A schedule's task is the enqueue body less run_at and idempotency_key (or null: left out).
    let task = &schemas["ScheduleBody"]["properties"]["task"];
    assert_eq!(task["anyOf"][0]["$ref"], "#/components/schemas/ScheduleTask", "{task}");
    for gone in ["run_at", "idempotency_key"] {
        assert!(schemas["ScheduleTask"]["properties"].get(gone).is_none(), "ScheduleTask has no {gone}");
        assert!(schemas["TaskSpec"]["properties"].get(gone).is_some(), "TaskSpec has {gone}");
    }
    let batch = &doc["paths"]["/tasks/enqueue_batch"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(batch["items"]["$ref"], "#/components/schemas/TaskSpec");
    let task: Value = http().get(format!("{base}/tasks/{done}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(task["concurrency_key"], "tenant-1");
    // The POST's example made a workflow: it reads as the Workflow schema says, and so does
    // its cancel; a second POST of the example is the documented 409.
    let listed: Vec<Value> = http().get(format!("{base}/workflows")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let wf = listed[0]["workflow_id"].as_str().unwrap();
    let view: Value = http().get(format!("{base}/workflows/{wf}")).send().await.unwrap().json().await.unwrap();
    check(&doc, &json!({ "$ref": "#/components/schemas/Workflow" }), &view, "GET /workflows/{id}").unwrap();
    assert_eq!(view["steps"].as_array().map(|s| s.len()), Some(3), "{view}");
    let cancelled = http().post(format!("{base}/workflows/{wf}/cancel")).send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    check(&doc, &json!({ "$ref": "#/components/schemas/Workflow" }), &cancelled, "POST /workflows/{id}/cancel")
        .unwrap();
    // Its retry: 200 when the cancel ended steps, else 409 (the example's echo steps may all
    // have completed first); either answer is as documented.
    let retried = http().post(format!("{base}/workflows/{wf}/retry")).send().await.unwrap();
    let code = retried.status().as_u16();
    assert!(code == 200 || code == 409, "{code}");
    let retried: Value = retried.json().await.unwrap();
    let documented = &doc["paths"]["/workflows/{id}/retry"]["post"]["responses"][code.to_string()];
    let schema = &documented["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "POST /workflows/{{id}}/retry documents {code}: {documented}");
    check(&doc, schema, &retried, "POST /workflows/{id}/retry").unwrap();
    if code == 200 {
        assert!(retried["requeued"].as_u64().unwrap() + retried["reopened"].as_u64().unwrap() > 0, "{retried}");
    } else {
        assert_eq!(retried["error"], "not_retryable", "{retried}");
    }
    let example = &doc["paths"]["/workflows"]["post"]["requestBody"]["content"]["application/json"]["example"];
    let again = http().post(format!("{base}/workflows")).json(example).send().await.unwrap();
    assert_eq!(again.status(), 409);
    assert!(doc["paths"]["/workflows"]["post"]["responses"].get("409").is_some());
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["workflow_id"].as_str(), Some(wf), "{again}");
    // The decision's example on an approval step awaiting it: the step as the Task schema says.
    let gated = json!({ "name": "gated", "steps": [{ "key": "g", "type": "approval", "payload": { "prompt": "?" } }] });
    let gated: Value =
        http().post(format!("{base}/workflows")).json(&gated).send().await.unwrap().json().await.unwrap();
    let gate = gated["steps"][0]["task_id"].as_str().unwrap();
    let op = &doc["paths"]["/tasks/{id}/decision"]["post"];
    let example = &op["requestBody"]["content"]["application/json"]["example"];
    let decided = http().post(format!("{base}/tasks/{gate}/decision")).json(example).send().await.unwrap();
    assert_eq!(decided.status(), 200);
    let decided: Value = decided.json().await.unwrap();
    check(
        &doc,
        &op["responses"]["200"]["content"]["application/json"]["schema"],
        &decided,
        "POST /tasks/{id}/decision",
    )
    .unwrap();
    assert_eq!((decided["status"].as_str(), decided["result"]["by"].as_str()), (Some("completed"), Some("ana")));
    // A spawn's 201 and a complete's answer with `spawned`, from a step a worker holds, read
    // as documented; the spawn is the document's example with the real token.
    let post = |path: String, body: Value| {
        let url = format!("{base}{path}");
        async move {
            let res = http().post(url).json(&body).send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (_, worker) = post("/workers".into(), json!({ "name": "w", "types": ["split"] })).await;
    let steps =
        json!([{ "key": "split", "type": "split" }, { "key": "join", "type": "echo", "depends_on": ["split"] }]);
    let (code, _) = post("/workflows".into(), json!({ "name": "spawns", "steps": steps })).await;
    assert_eq!(code, 201);
    let (_, claim) = post("/tasks/claim".into(), json!({ "worker_id": worker["worker_id"], "wait_ms": 5000 })).await;
    let (id, token) = (claim["tasks"][0]["id"].as_str().unwrap(), &claim["tasks"][0]["lease_token"]);
    let op = &doc["paths"]["/tasks/{id}/spawn"]["post"];
    let mut example = op["requestBody"]["content"]["application/json"]["example"].clone();
    example["lease_token"] = token.clone();
    let (code, spawned) = post(format!("/tasks/{id}/spawn"), example).await;
    assert_eq!(code, 201, "{spawned}");
    check(&doc, &op["responses"]["201"]["content"]["application/json"]["schema"], &spawned, "spawn → 201").unwrap();
    assert_eq!(spawned["steps"].as_array().map(|s| s.len()), Some(2), "{spawned}");
    let op = &doc["paths"]["/tasks/{id}/complete"]["post"];
    let body = json!({ "lease_token": token, "spawn": [{ "key": "last", "type": "echo" }] });
    let (code, done) = post(format!("/tasks/{id}/complete"), body).await;
    assert_eq!(code, 200, "{done}");
    check(&doc, &op["responses"]["200"]["content"]["application/json"]["schema"], &done, "complete → 200").unwrap();
    assert_eq!(done["spawned"]["steps"][0]["key"], "last", "{done}");
}
