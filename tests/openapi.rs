//! `GET /openapi.json` describes the API the daemon really serves: every path and method
//! in the document is called on a running daemon, and its status and body must be the
//! ones documented.

mod support;

use std::time::Duration;

use devops_control_tower::handlers::Registry;
use serde_json::{json, Value};
use support::{enqueue, http, wait_status, SqliteDb};

/// Follows a `$ref` into `components.schemas`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("local schema refs only");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks `body` against the parts of `schema` the document uses: type, required keys,
/// array items.
fn check(doc: &Value, schema: &Value, body: &Value, at: &str) {
    let schema = resolve(doc, schema);
    match schema["type"].as_str() {
        Some("object") => {
            let obj = body.as_object().unwrap_or_else(|| panic!("{at}: expected an object, got {body}"));
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap();
                assert!(obj.contains_key(key), "{at}: documented key {key:?} missing from {body}");
            }
        }
        Some("array") => {
            let items = body.as_array().unwrap_or_else(|| panic!("{at}: expected an array, got {body}"));
            for item in items {
                check(doc, &schema["items"], item, at);
            }
        }
        Some("string") => assert!(body.is_string(), "{at}: expected a string"),
        _ => {}
    }
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

    // Real ids for the routes that take one: a finished task, and a queued one to cancel.
    let done = enqueue(&base, json!({"type": "echo"})).await;
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
                check(&doc, schema, &body, &at);
            }
            checked += 1;
        }
    }
    // Every route family is in the document: tasks, probes, metrics and the seven CWOM kinds.
    assert!(checked >= 9 + 7 * 3, "only {checked} operations documented");
    for path in ["/health", "/ready", "/metrics", "/tasks/enqueue", "/tasks/enqueue_batch", "/tasks/{id}/cancel"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
}
