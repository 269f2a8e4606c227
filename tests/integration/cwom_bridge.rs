//! The bridge from tasks to CWOM, on both stores: a task linked to an Issue records a Run
//! per attempt and registers its trace folder as a `trace` Artifact of that Run.

use crate::support;

use std::time::Duration;

use crate::support::{http, wait_status, TestDb};
use devops_control_tower::handlers::Registry;
use serde_json::{json, Value};

const STORES: [&str; 2] = ["sqlite", "postgres"];

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let res = http().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn get(base: &str, path: &str) -> Value {
    let res = http().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

/// A Repo and an Issue to link tasks to; returns the Issue's id.
async fn issue(base: &str) -> String {
    let (status, repo) = post(
        base,
        "/cwom/repos",
        json!({"name": "Control Tower", "slug": format!("jct-{}", uuid::Uuid::now_v7()), "source": {"system": "github"}}),
    )
    .await;
    assert_eq!(status, 201, "{repo}");
    let (status, issue) = post(
        base,
        "/cwom/issues",
        json!({"repo": {"kind": "Repo", "id": repo["id"]}, "title": "Ship the bridge", "type": "feature"}),
    )
    .await;
    assert_eq!(status, 201, "{issue}");
    issue["id"].as_str().unwrap().to_string()
}

fn read_json(path: std::path::PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_task_records_a_run_and_its_trace_artifact() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = support::start_in_process(&db.backend().await, &db.url(), &[], Registry::builtin()).await;
        let issue_id = issue(&app.base).await;

        let (status, task) =
            post(&app.base, "/tasks/enqueue", json!({"type": "echo", "cwom_issue_id": issue_id})).await;
        assert_eq!(status, 201, "{kind}: {task}");
        assert_eq!(task["cwom_issue_id"], issue_id.as_str());
        let id = task["task_id"].as_str().unwrap().to_string();
        let done = wait_status(&app.base, &id, "completed", Duration::from_secs(10)).await;

        let issue = get(&app.base, &format!("/cwom/issues/{issue_id}")).await;
        let runs = issue["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{kind}: one Run for one attempt: {issue}");
        let run_id = runs[0]["id"].as_str().unwrap().to_string();
        let run = get(&app.base, &format!("/cwom/runs/{run_id}")).await;
        assert_eq!((run["status"].as_str(), run["mode"].as_str()), (Some("done"), Some("system")), "{kind}: {run}");
        assert!(run["executor"]["actor"]["actor_id"].as_str().unwrap().contains(':'), "the daemon's id: {run}");
        assert!(run["telemetry"]["started_at"].is_string() && run["telemetry"]["ended_at"].is_string());
        assert!(run["failure"].is_null(), "{kind}: {run}");

        let artifacts = get(&app.base, &format!("/cwom/artifacts?run_id={run_id}")).await;
        let artifacts = artifacts.as_array().unwrap();
        assert_eq!(artifacts.len(), 1, "{kind}");
        assert_eq!(artifacts[0]["type"], "trace");
        let folder = app.trace.path().join(&id);
        let uri = artifacts[0]["uri"].as_str().unwrap();
        assert_eq!(uri, format!("file://{}", std::path::absolute(&folder).unwrap().display()), "{kind}");
        assert_eq!(run["outputs"]["artifacts"][0]["id"], artifacts[0]["id"], "{kind}: the Run lists it");

        let output = read_json(folder.join("output.json"));
        assert_eq!(output["cwom_run_id"], run_id.as_str(), "{kind}: output.json names the Run");
        assert_eq!(done["result"], json!({}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_linked_task_makes_a_failed_run_per_attempt() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = support::start_in_process(&db.backend().await, &db.url(), &[], Registry::builtin()).await;
        let issue_id = issue(&app.base).await;
        let body =
            json!({"type": "fail", "payload": {"message": "red build"}, "max_attempts": 2, "cwom_issue_id": issue_id});
        let (status, task) = post(&app.base, "/tasks/enqueue", body).await;
        assert_eq!(status, 201);
        let id = task["task_id"].as_str().unwrap();
        wait_status(&app.base, id, "failed", Duration::from_secs(15)).await;
        // Each attempt's end stays readable: the first as output.attempt-1.json, shown on the
        // task's page too.
        let first = get(&app.base, &format!("/tasks/{id}/trace/output.attempt-1.json")).await;
        assert_eq!((first["attempt"].as_i64(), first["status"].as_str()), (Some(1), Some("queued")), "{kind}: {first}");
        assert_eq!(get(&app.base, &format!("/tasks/{id}/trace/output.json")).await["attempt"], 2);
        for missing in ["output.attempt-2.json", "output.attempt-.json", "output.attempt-1x.json"] {
            let res = http().get(format!("{}/tasks/{id}/trace/{missing}", app.base)).send().await.unwrap();
            assert_eq!(res.status(), 404, "{kind}: {missing}");
        }
        let page = http().get(format!("{}/ui/tasks/{id}", app.base)).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("<h2>output.attempt-1.json") && page.contains("red build"), "{kind}: {page}");
        let runs = get(&app.base, &format!("/cwom/runs?issue_id={issue_id}")).await;
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), 2, "{kind}: one Run per attempt");
        for run in runs {
            assert_eq!(run["status"], "failed", "{kind}: {run}");
            assert_eq!(run["failure"]["message"], "red build", "{kind}: {run}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_missing_issue_is_refused_and_unlinked_tasks_make_no_runs() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = support::start_in_process(&db.backend().await, &db.url(), &[], Registry::builtin()).await;
        let (status, body) = post(&app.base, "/tasks/enqueue", json!({"type": "echo", "cwom_issue_id": "nope"})).await;
        assert_eq!(status, 422, "{kind}: {body}");
        assert_eq!(body["error"], "invalid_ref");
        assert!(body["message"].as_str().unwrap().contains("cwom_issue_id"), "{body}");
        let batch = json!([{"type": "echo"}, {"type": "echo", "cwom_issue_id": "nope"}]);
        let (status, body) = post(&app.base, "/tasks/enqueue_batch", batch).await;
        assert_eq!((status, body["index"].as_u64()), (422, Some(1)), "{kind}: {body}");

        let plain = support::enqueue(&app.base, json!({"type": "echo"})).await;
        let done = wait_status(&app.base, &plain, "completed", Duration::from_secs(10)).await;
        assert!(done["cwom_issue_id"].is_null());
        assert_eq!(get(&app.base, "/cwom/runs").await.as_array().unwrap().len(), 0, "{kind}: no Run without a link");
        let output = read_json(app.trace.path().join(&plain).join("output.json"));
        assert!(output.get("cwom_run_id").is_none(), "{kind}: {output}");
    }
}
