//! A remote worker as tests drive it: the worker protocol over HTTP, with the assertions
//! every test would repeat (the registration's fields, a claim's 200).

use std::time::Duration;

use serde_json::{json, Value};

/// A client whose timeout outlasts the longest claim wait.
pub fn long_http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

pub async fn call(method: reqwest::Method, base: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = long_http().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, base, path, Some(body)).await
}

pub async fn get(base: &str, path: &str) -> (u16, Value) {
    call(reqwest::Method::GET, base, path, None).await
}

/// A registered remote worker.
pub struct Worker {
    pub base: String,
    pub id: String,
}

impl Worker {
    pub async fn register(base: &str, types: &[&str], max_slots: u32) -> Worker {
        let (status, body) =
            post(base, "/workers", json!({ "name": "test-worker", "types": types, "max_slots": max_slots })).await;
        assert_eq!(status, 201, "{body}");
        assert!(body["heartbeat_interval_s"].as_f64().unwrap() > 0.0 && body["lease_s"].as_f64().unwrap() > 0.0);
        Worker { base: base.to_string(), id: body["worker_id"].as_str().unwrap().to_string() }
    }

    pub async fn claim(&self, max: u32, wait_ms: u64) -> Vec<Value> {
        let (status, body) =
            post(&self.base, "/tasks/claim", json!({ "worker_id": self.id, "max": max, "wait_ms": wait_ms })).await;
        assert_eq!(status, 200, "{body}");
        body["tasks"].as_array().unwrap().clone()
    }

    pub async fn op(&self, task: &Value, op: &str, mut body: Value) -> (u16, Value) {
        body["lease_token"] = task["lease_token"].clone();
        post(&self.base, &format!("/tasks/{}/{op}", task["task_id"].as_str().unwrap()), body).await
    }
}

pub async fn enqueue(base: &str, body: Value) -> String {
    let (status, task) = post(base, "/tasks/enqueue", body).await;
    assert_eq!(status, 201, "{task}");
    task["task_id"].as_str().unwrap().to_string()
}

pub async fn task(base: &str, id: &str) -> Value {
    let (status, task) = get(base, &format!("/tasks/{id}")).await;
    assert_eq!(status, 200, "{task}");
    task
}
