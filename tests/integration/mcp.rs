//! `devops-control-tower mcp` as an agent's MCP client sees it: rmcp's client starts the real
//! binary over stdio against a real daemon process (SQLite file, real HTTP, an API key), lists
//! the tools, and drives an operator's and a worker's cycle; refusals, a server error and a
//! server that is down come back as tool errors from a process that keeps answering.

use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{schema_check, wait_for, DaemonProcess, Spawn, BIN};
use rmcp::model::{CallToolRequestParams, Tool};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

const KEY: &str = "mcp-test-key";
/// A type no handler in the daemon serves: tasks of it wait for a remote worker (the agent).
const AGENT_TYPE: &str = "agent-job";

/// The tools DESIGN.md names, and the ones that change nothing.
const ALL_TOOLS: [&str; 26] = [
    "jct_enqueue_task",
    "jct_get_task",
    "jct_list_tasks",
    "jct_cancel_task",
    "jct_retry_task",
    "jct_get_trace",
    "jct_claim_task",
    "jct_heartbeat",
    "jct_append_log",
    "jct_report_artifact",
    "jct_spawn_steps",
    "jct_complete_task",
    "jct_fail_task",
    "jct_get_issue_context",
    "jct_list_schedules",
    "jct_create_schedule",
    "jct_pause_schedule",
    "jct_resume_schedule",
    "jct_trigger_schedule",
    "jct_list_queues",
    "jct_pause_queue",
    "jct_resume_queue",
    "jct_set_queue_limits",
    "jct_start_workflow",
    "jct_get_workflow",
    "jct_decide_approval",
];
const READ_ONLY_TOOLS: [&str; 7] = [
    "jct_get_task",
    "jct_list_tasks",
    "jct_get_trace",
    "jct_get_issue_context",
    "jct_list_schedules",
    "jct_list_queues",
    "jct_get_workflow",
];

fn daemon(extra: &[(&'static str, &str)]) -> DaemonProcess {
    let mut spawn =
        Spawn::new().arg("serve").env("JCT_API_KEY", KEY).env("JCT_TASK_TYPES", AGENT_TYPE).env("JCT_WORKERS", "1");
    for (k, v) in extra {
        spawn = spawn.env(k, *v);
    }
    spawn.start()
}

/// The MCP server as a child process, and the tools it listed.
struct Mcp {
    client: RunningService<RoleClient, ()>,
    tools: Vec<Tool>,
    pid: u32,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn mcp(server_url: &str, key: &str, args: &[&str]) -> Mcp {
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("mcp.stderr");
    let cmd = tokio::process::Command::new(BIN).configure(|cmd| {
        cmd.arg("mcp")
            .args(args)
            .env_clear()
            .env("JCT_SERVER_URL", server_url)
            .env("JCT_API_KEY", key)
            .env("RUST_LOG", "info")
            .current_dir(dir.path());
    });
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
        .spawn()
        .expect("spawning the mcp subcommand");
    let pid = transport.id().expect("the child's pid");
    // The initialize handshake happens here.
    let client = ().serve(transport).await.unwrap_or_else(|e| panic!("initialize failed: {e}"));
    let info = client.peer_info().expect("the server answered initialize");
    assert_eq!(info.server_info.as_ref().map(|i| i.name.as_str()), Some("devops-control-tower"));
    assert!(info.capabilities.tools.is_some(), "tools capability: {info:?}");
    let tools = client.list_all_tools().await.expect("tools/list");
    Mcp { client, tools, pid, stderr, _dir: dir }
}

/// A tool call's outcome: whether it is a tool error, and its text (as JSON when it is JSON).
struct Outcome {
    is_error: bool,
    body: Value,
}

impl Outcome {
    fn ok(self) -> Value {
        assert!(!self.is_error, "expected success, got a tool error: {}", self.body);
        self.body
    }

    /// Asserts a tool error with `code` (and the HTTP `status`, when the server answered).
    fn error(self, code: &str, status: Option<u16>) -> Value {
        assert!(self.is_error, "expected the tool error {code}, got success: {}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.body);
        assert_eq!(self.body["status"].as_u64(), status.map(u64::from), "{}", self.body);
        self.body
    }
}

impl Mcp {
    fn schema(&self, name: &str) -> Value {
        let tool = self.tools.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} is not listed"));
        Value::Object((*tool.input_schema).clone())
    }

    /// Calls `name` with arguments that the tool's listed schema accepts (checked first).
    async fn call(&self, name: &str, args: Value) -> Outcome {
        schema_check(&self.schema(name), &args, name).unwrap_or_else(|e| panic!("the test's arguments: {e}"));
        self.call_unchecked(name, args).await
    }

    async fn call_unchecked(&self, name: &str, args: Value) -> Outcome {
        let Value::Object(map) = args else { panic!("arguments must be an object") };
        let params = CallToolRequestParams::new(name.to_string()).with_arguments(map);
        let result = self.client.call_tool(params).await.unwrap_or_else(|e| panic!("{name}: protocol error {e}"));
        let text: String = result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Outcome { is_error: result.is_error == Some(true), body }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    async fn close(self) -> String {
        self.client.cancel().await.expect("closing the MCP session");
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// The daemon's API, with the key.
async fn api(daemon: &DaemonProcess, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = support::http().request(method, daemon.url(path)).bearer_auth(KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn enqueue(daemon: &DaemonProcess, body: Value) -> String {
    let (status, task) = api(daemon, reqwest::Method::POST, "/tasks/enqueue", Some(body)).await;
    assert_eq!(status, 201, "{task}");
    task["task_id"].as_str().unwrap().to_string()
}

async fn workers(daemon: &DaemonProcess) -> Vec<Value> {
    let (status, list) = api(daemon, reqwest::Method::GET, "/workers", None).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_is_listed_with_an_object_schema_and_read_only_offers_only_readers() {
    let d = daemon(&[]);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let mut names: Vec<&str> = m.tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    let mut want = ALL_TOOLS.to_vec();
    want.sort();
    assert_eq!(names, want);
    for tool in &m.tools {
        let schema = Value::Object((*tool.input_schema).clone());
        assert_eq!(schema["type"], "object", "{}: {schema}", tool.name);
        let properties = schema["properties"].as_object().unwrap_or_else(|| panic!("{}: no properties", tool.name));
        for p in properties.values() {
            assert!(p.is_object(), "{}: every property is a schema: {schema}", tool.name);
        }
        for name in schema["required"].as_array().unwrap_or_else(|| panic!("{}: no required", tool.name)) {
            assert!(
                properties.contains_key(name.as_str().unwrap()),
                "{}: required {name} is not a property",
                tool.name
            );
        }
        let description = tool.description.as_deref().unwrap_or_default();
        let read_only = READ_ONLY_TOOLS.contains(&tool.name.as_ref());
        if read_only {
            assert!(description.contains("Changes nothing"), "{}: {description}", tool.name);
        } else {
            assert!(description.contains("Changes:") && description.contains("Twice"), "{}: {description}", tool.name);
        }
        assert_eq!(tool.annotations.as_ref().and_then(|a| a.read_only_hint), Some(read_only), "{}", tool.name);
    }
    // The validator the other tests rely on refuses what the schemas refuse.
    assert!(schema_check(&m.schema("jct_claim_task"), &json!({ "types": [] }), "t").is_err());
    assert!(schema_check(&m.schema("jct_get_task"), &json!({ "task_id": "x", "other": 1 }), "t").is_err());
    assert!(schema_check(&m.schema("jct_list_tasks"), &json!({ "status": "done" }), "t").is_err());
    assert!(schema_check(&m.schema("jct_enqueue_task"), &json!({ "payload": {} }), "t").is_err());
    m.close().await;

    let ro = mcp(&d.url(""), KEY, &["--read-only"]).await;
    let mut names: Vec<&str> = ro.tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    let mut want = READ_ONLY_TOOLS.to_vec();
    want.sort();
    assert_eq!(names, want);
    // A changing tool is refused even when called by name, and changes nothing.
    ro.call_unchecked("jct_enqueue_task", json!({ "type": AGENT_TYPE })).await.error("tool_not_offered", None);
    ro.call_unchecked("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 0 }))
        .await
        .error("tool_not_offered", None);
    let listed = ro.call("jct_list_tasks", json!({})).await.ok();
    assert_eq!(listed, json!([]), "a refused enqueue must not create a task");
    assert!(workers(&d).await.is_empty(), "a refused claim must not register a worker");
    ro.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_enqueues_inspects_cancels_and_retries() {
    let d = daemon(&[]);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let enqueued = m
        .call(
            "jct_enqueue_task",
            json!({ "type": AGENT_TYPE, "payload": { "ticket": 7 }, "queue": "ops", "priority": 3, "idempotency_key": "once" }),
        )
        .await
        .ok();
    assert_eq!(enqueued["status"], "queued", "{enqueued}");
    let id = enqueued["task_id"].as_str().unwrap().to_string();
    // The same idempotency key again: the server's 409, with the existing task's id.
    let again = m.call("jct_enqueue_task", json!({ "type": AGENT_TYPE, "idempotency_key": "once" })).await;
    assert_eq!(again.error("duplicate_idempotency_key", Some(409))["task_id"], id.as_str());

    let task = m.call("jct_get_task", json!({ "task_id": id })).await.ok();
    assert_eq!(
        (task["status"].as_str(), task["payload"].clone(), task["queue"].as_str()),
        (Some("queued"), json!({ "ticket": 7 }), Some("ops"))
    );
    let listed = m.call("jct_list_tasks", json!({ "queue": "ops", "status": "queued", "limit": 10 })).await.ok();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);
    assert_eq!(m.call("jct_list_tasks", json!({ "queue": "elsewhere" })).await.ok(), json!([]));

    let cancelled = m.call("jct_cancel_task", json!({ "task_id": id })).await.ok();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    m.call("jct_cancel_task", json!({ "task_id": id })).await.error("not_cancellable", Some(409));
    let retried = m.call("jct_retry_task", json!({ "task_id": id })).await.ok();
    assert_eq!(retried["status"], "queued", "{retried}");
    m.call("jct_retry_task", json!({ "task_id": id })).await.error("not_retryable", Some(409));
    let (status, task) = api(&d, reqwest::Method::GET, &format!("/tasks/{id}"), None).await;
    assert_eq!((status, task["status"].as_str()), (200, Some("queued")));

    // Server errors carry the server's code; bad arguments are tool errors too; the
    // process answers every next call.
    let unknown = uuid::Uuid::now_v7().to_string();
    m.call("jct_get_task", json!({ "task_id": unknown })).await.error("task_not_found", Some(404));
    m.call("jct_list_tasks", json!({ "limit": 100000 })).await.error("invalid_filter", Some(422));
    m.call_unchecked("jct_get_task", json!({ "task_id": "../workers" })).await.error("invalid_arguments", None);
    m.call_unchecked("jct_get_task", json!({})).await.error("invalid_arguments", None);
    m.call_unchecked("jct_get_task", json!({ "task_id": id, "verbose": true })).await.error("invalid_arguments", None);
    m.call_unchecked("jct_get_trace", json!({ "task_id": id, "file": "../../workers" }))
        .await
        .error("invalid_arguments", None);
    m.call_unchecked("jct_no_such_tool", json!({})).await.error("tool_not_offered", None);
    assert_eq!(m.call("jct_get_task", json!({ "task_id": id })).await.ok()["task_id"], id.as_str());

    // A wrong key is the server's 401, as a tool error.
    let wrong = mcp(&d.url(""), "not-the-key", &[]).await;
    wrong.call("jct_get_task", json!({ "task_id": id })).await.error("unauthorized", Some(401));
    wrong.close().await;
    let log = m.close().await;
    assert!(log.contains("MCP server on stdio"), "the MCP log goes to stderr:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claims_logs_reports_and_completes_and_the_trace_folder_shows_it() {
    agent_cycle(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cycle_on_postgresql() {
    let db = support::PgDb::new().await;
    agent_cycle(&[("DATABASE_URL", &db.url)]).await;
}

/// The worker cycle through the tools, on the daemon's default SQLite file or `extra`'s store.
async fn agent_cycle(extra: &[(&'static str, &str)]) {
    // A one-second lease: the agent's pauses below outlast it, so only the MCP server's
    // worker heartbeats keep the task.
    let mut env = vec![("JCT_LEASE_SECONDS", "1")];
    env.extend_from_slice(extra);
    let d = daemon(&env);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let id = enqueue(&d, json!({ "type": AGENT_TYPE, "payload": { "do": "review" } })).await;
    let claimed = m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 5000 })).await.ok();
    let task = &claimed["task"];
    assert_eq!((task["task_id"].as_str(), task["payload"].clone()), (Some(id.as_str()), json!({ "do": "review" })));
    let token = task["lease_token"].as_str().expect("a lease token").to_string();
    let registered = workers(&d).await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0]["types"], json!([AGENT_TYPE]));
    let first_worker = registered[0]["worker_id"].as_str().unwrap().to_string();

    let lease = json!({ "task_id": id, "lease_token": token });
    let beat = m.call("jct_heartbeat", lease.clone()).await.ok();
    assert_eq!(beat["cancel_requested"], false, "{beat}");
    let mut args = lease.clone();
    args["lines"] = json!(["reading the diff", "two files changed"]);
    assert_eq!(m.call("jct_append_log", args).await.ok()["appended"], true);
    // Thinking for three leases: the lease must survive on the worker heartbeats alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut args = lease.clone();
    args["lines"] = json!(["review written"]);
    assert_eq!(m.call("jct_append_log", args).await.ok()["appended"], true);
    let mut args = lease.clone();
    args.as_object_mut().unwrap().extend([
        ("name".to_string(), json!("review.md")),
        ("type".to_string(), json!("report")),
        ("content".to_string(), json!("# Review\nLooks good.\n")),
        ("media_type".to_string(), json!("text/markdown")),
    ]);
    m.call("jct_report_artifact", args.clone()).await.ok();
    m.call("jct_report_artifact", args).await.error("artifact_exists", Some(409));
    let mut args = lease.clone();
    args["result"] = json!({ "verdict": "approve" });
    let done = m.call("jct_complete_task", args.clone()).await.ok();
    assert_eq!(done["status"], "completed", "{done}");
    m.call("jct_complete_task", args).await.error("lease_lost", Some(409));

    let folder = d.trace_dir.join(&id);
    let input: Value = serde_json::from_str(&read(&folder.join("input.json"))).unwrap();
    assert_eq!((input["task_id"].as_str(), input["payload"].clone()), (Some(id.as_str()), json!({ "do": "review" })));
    let log = read(&folder.join("log.txt"));
    // Each appended line is a log event of the attempt: `<time>  INFO remote: <line>`.
    let lines: Vec<&str> =
        log.lines().skip(1).filter_map(|l| l.split_once(" remote: ").map(|(_, line)| line)).collect();
    assert_eq!(lines, ["reading the diff", "two files changed", "review written"], "log.txt:\n{log}");
    assert_eq!(read(&folder.join("artifacts/review.md")), "# Review\nLooks good.\n");
    let output: Value = serde_json::from_str(&read(&folder.join("output.json"))).unwrap();
    assert_eq!(
        (output["status"].as_str(), output["result"].clone()),
        (Some("completed"), json!({ "verdict": "approve" }))
    );
    // The same files through the tool.
    let trace = m.call("jct_get_trace", json!({ "task_id": id, "file": "artifacts/review.md" })).await.ok();
    assert_eq!(trace, "# Review\nLooks good.\n");

    // The server forgets the worker: the next claim registers again and still gets work.
    let (status, _) = api(&d, reqwest::Method::DELETE, &format!("/workers/{first_worker}"), None).await;
    assert_eq!(status, 200);
    let second = enqueue(&d, json!({ "type": AGENT_TYPE })).await;
    let claimed = m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 5000 })).await.ok();
    assert_eq!(claimed["task"]["task_id"], second.as_str());
    let now = workers(&d).await;
    assert!(now.len() == 1 && now[0]["worker_id"] != first_worker.as_str(), "{now:?}");
    let lease = json!({ "task_id": second, "lease_token": claimed["task"]["lease_token"] });
    let mut args = lease.clone();
    args["message"] = json!("cannot reach the repository");
    args["retryable"] = json!(false);
    assert_eq!(m.call("jct_fail_task", args).await.ok()["status"], "failed");
    // Nothing to claim: {"task": null} once the wait runs out.
    let none = m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 200 })).await.ok();
    assert_eq!(none, json!({ "task": null }));

    // A clean exit (stdin closed) deregisters the worker.
    let log = m.close().await;
    wait_for("the MCP server to deregister its worker", Duration::from_secs(10), || async {
        workers(&d).await.is_empty().then_some(())
    })
    .await;
    assert!(log.contains("registered as a JCT worker"), "{log}");
}

/// An agent that holds a workflow step fans out through the tools: jct_spawn_steps adds
/// steps, jct_complete_task's spawn adds more as it ends, and the step that depended on it
/// waits for every one of them; a refused spawn comes back whole.
async fn agent_spawns(extra: &[(&'static str, &str)]) {
    let d = daemon(extra);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let body = json!({ "name": "fan", "steps": [
        { "key": "plan", "type": AGENT_TYPE },
        { "key": "report", "type": "echo", "depends_on": ["plan"] },
    ] });
    let (status, created) = api(&d, reqwest::Method::POST, "/workflows", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let wid = created["workflow_id"].as_str().unwrap().to_string();
    let claimed = m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 5000 })).await.ok();
    let task = &claimed["task"];
    assert_eq!(task["step_key"], "plan", "{claimed}");
    let lease = json!({ "task_id": task["task_id"], "lease_token": task["lease_token"] });
    let mut args = lease.clone();
    args["steps"] =
        json!([{ "key": "one", "type": "echo", "payload": { "n": 1 } }, { "key": "report", "type": "echo" }]);
    let refused = m.call("jct_spawn_steps", args).await.error("invalid_workflow", Some(422));
    assert_eq!(refused["key"], "report", "{refused}");
    let mut args = lease.clone();
    args["steps"] = json!([{ "key": "one", "type": "echo", "payload": { "n": 1 } }]);
    let spawned = m.call("jct_spawn_steps", args).await.ok();
    assert_eq!(
        (spawned["workflow_id"].as_str(), spawned["steps"][0]["key"].as_str()),
        (Some(wid.as_str()), Some("one"))
    );
    let mut args = lease.clone();
    args["result"] = json!("planned");
    args["spawn"] = json!([{ "key": "two", "type": "echo", "depends_on": ["one"] }]);
    let done = m.call("jct_complete_task", args).await.ok();
    assert_eq!(
        (done["status"].as_str(), done["spawned"]["steps"][0]["key"].as_str()),
        (Some("completed"), Some("two"))
    );
    let w = wait_for("the workflow to complete", Duration::from_secs(20), || async {
        let (_, w) = api(&d, reqwest::Method::GET, &format!("/workflows/{wid}"), None).await;
        (w["status"] == "completed").then_some(w)
    })
    .await;
    let report = w["steps"].as_array().unwrap().iter().find(|s| s["key"] == "report").unwrap();
    assert_eq!(report["depends_on"], json!(["one", "plan", "two"]), "{w}");
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_spawns_steps_into_its_workflow() {
    agent_spawns(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_spawns_steps_into_its_workflow_on_postgresql() {
    let db = support::PgDb::new().await;
    agent_spawns(&[("DATABASE_URL", &db.url)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_the_mcp_server_deregisters_and_its_task_goes_back() {
    let d = daemon(&[]);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let id = enqueue(&d, json!({ "type": AGENT_TYPE })).await;
    let claimed =
        m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "queues": ["default"], "wait_ms": 5000 })).await.ok();
    assert_eq!(claimed["task"]["task_id"], id.as_str());
    let (_, task) = api(&d, reqwest::Method::GET, &format!("/tasks/{id}"), None).await;
    assert_eq!(task["status"], "running");
    assert_eq!(workers(&d).await[0]["queues"], json!(["default"]));
    let killed = std::process::Command::new("kill").args(["-TERM", &m.pid.to_string()]).status().unwrap();
    assert!(killed.success());
    wait_for("the task to go back to the queue", Duration::from_secs(10), || async {
        let (_, task) = api(&d, reqwest::Method::GET, &format!("/tasks/{id}"), None).await;
        (task["status"] == "queued").then_some(())
    })
    .await;
    assert!(workers(&d).await.is_empty());
    let log = m.stderr();
    assert!(log.contains("deregistered"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_claims_share_one_registration() {
    let d = daemon(&[]);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let a = enqueue(&d, json!({ "type": AGENT_TYPE })).await;
    let b = enqueue(&d, json!({ "type": AGENT_TYPE })).await;
    let claim = || m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 5000 }));
    let (first, second) = tokio::join!(claim(), claim());
    let mut got = vec![first.ok()["task"]["task_id"].clone(), second.ok()["task"]["task_id"].clone()];
    got.sort_by_key(|v| v.to_string());
    let mut want = vec![json!(a), json!(b)];
    want.sort_by_key(|v| v.to_string());
    assert_eq!(got, want);
    let registered = workers(&d).await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0]["running"], 2, "{registered:?}");
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_a_tool_error_and_the_process_keeps_answering() {
    // A port nothing listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let m = mcp(&url, KEY, &[]).await;
    let id = uuid::Uuid::now_v7().to_string();
    let down = m.call("jct_get_task", json!({ "task_id": id })).await.error("server_unreachable", None);
    assert!(down["message"].as_str().unwrap().contains("unreachable"), "{down}");
    m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 0 })).await.error("server_unreachable", None);
    // Still alive: it lists its tools again and, once a server listens there, reaches it.
    assert_eq!(m.client.list_all_tools().await.unwrap().len(), ALL_TOOLS.len());
    let d = daemon(&[("JCT_BIND", &format!("127.0.0.1:{port}"))]);
    assert_eq!(d.addr.port(), port);
    m.call("jct_get_task", json!({ "task_id": id })).await.error("task_not_found", Some(404));
    assert!(!m.stderr().contains("panicked"), "{}", m.stderr());
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_context_brings_the_issue_its_packets_constraints_and_doctrine() {
    let d = daemon(&[]);
    let create = |kind: &'static str, body: Value| {
        let d = &d;
        async move {
            let (status, object) = api(d, reqwest::Method::POST, &format!("/cwom/{kind}"), Some(body)).await;
            assert_eq!(status, 201, "{kind}: {object}");
            object
        }
    };
    let r = |kind: &str, o: &Value| json!({ "kind": kind, "id": o["id"] });
    let repo = create("repos", json!({ "name": "JCT", "slug": "jct", "source": { "system": "github" } })).await;
    let snapshot = create(
        "constraint-snapshots",
        json!({ "scope": "personal", "owner": { "actor_kind": "human", "actor_id": "ann" },
                "constraints": { "time": { "available_minutes": 30 } } }),
    )
    .await;
    let doctrine = create(
        "doctrine-refs",
        json!({ "namespace": "eng", "name": "tests", "version": "1", "type": "policy", "statement": "Test first." }),
    )
    .await;
    let pinned = create(
        "doctrine-refs",
        json!({ "namespace": "eng", "name": "small-steps", "version": "1", "type": "principle", "statement": "Commit small." }),
    )
    .await;
    let issue = create(
        "issues",
        json!({ "repo": r("Repo", &repo), "title": "Add MCP", "type": "feature",
                "doctrine_refs": [r("DoctrineRef", &doctrine)], "constraints": [r("ConstraintSnapshot", &snapshot)] }),
    )
    .await;
    let packet = create(
        "context-packets",
        json!({ "for_issue": r("Issue", &issue), "version": "1", "summary": "Agents need a queue.",
                "doctrine_refs": [r("DoctrineRef", &doctrine), r("DoctrineRef", &pinned)],
                "constraint_snapshot": r("ConstraintSnapshot", &snapshot) }),
    )
    .await;

    let m = mcp(&d.url(""), KEY, &["--read-only"]).await;
    let context = m.call("jct_get_issue_context", json!({ "issue_id": issue["id"] })).await.ok();
    assert_eq!(
        (context["issue"]["id"].clone(), context["issue"]["title"].as_str()),
        (issue["id"].clone(), Some("Add MCP"))
    );
    let ids = |list: &Value| -> Vec<Value> { list.as_array().unwrap().iter().map(|o| o["id"].clone()).collect() };
    assert_eq!(ids(&context["context_packets"]), [packet["id"].clone()]);
    assert_eq!(context["context_packets"][0]["summary"], "Agents need a queue.");
    // Named by both the issue and its packet: once.
    assert_eq!(ids(&context["constraint_snapshots"]), [snapshot["id"].clone()]);
    assert_eq!(context["constraint_snapshots"][0]["constraints"]["time"]["available_minutes"], 30);
    assert_eq!(ids(&context["doctrine"]), [doctrine["id"].clone(), pinned["id"].clone()]);
    assert_eq!(context["doctrine"][1]["statement"], "Commit small.");
    m.call("jct_get_issue_context", json!({ "issue_id": "no-such-issue" })).await.error("object_not_found", Some(404));
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_listed_created_paused_resumed_and_triggered() {
    let d = daemon(&[]);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let created = m
        .call(
            "jct_create_schedule",
            json!({ "name": "mcp-nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin", "task": { "type": "echo" } }),
        )
        .await
        .ok();
    assert_eq!(created["name"], "mcp-nightly");
    assert_eq!(created["upcoming"].as_array().map(Vec::len), Some(5));
    m.call("jct_create_schedule", json!({ "name": "mcp-nightly", "cron": "0 3 * * *", "task": { "type": "echo" } }))
        .await
        .error("schedule_exists", Some(409));
    let bad = m
        .call("jct_create_schedule", json!({ "name": "bad", "cron": "every day", "task": { "type": "echo" } }))
        .await
        .error("invalid_schedule", Some(422));
    assert_eq!(bad["field"], "cron");
    assert_eq!(m.call("jct_pause_schedule", json!({ "name": "mcp-nightly" })).await.ok()["paused"], true);
    let listed = m.call("jct_list_schedules", json!({})).await.ok();
    assert_eq!(listed["schedules"][0]["paused"], true);
    assert_eq!(m.call("jct_resume_schedule", json!({ "name": "mcp-nightly" })).await.ok()["paused"], false);
    let fired = m.call("jct_trigger_schedule", json!({ "name": "mcp-nightly" })).await.ok();
    let task_id = fired["task_id"].as_str().expect("a task id").to_string();
    let task = m.call("jct_get_task", json!({ "task_id": task_id })).await.ok();
    assert_eq!(task["schedule_name"], "mcp-nightly");
    m.call("jct_trigger_schedule", json!({ "name": "nope" })).await.error("schedule_not_found", Some(404));
    m.close().await;
    // --read-only offers the list and none of the changes.
    let ro = mcp(&d.url(""), KEY, &["--read-only"]).await;
    assert_eq!(ro.call("jct_list_schedules", json!({})).await.ok()["schedules"][0]["name"], "mcp-nightly");
    ro.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_listed_paused_resumed_and_limited() {
    let d = daemon(&[]);
    let m = mcp(&d.url(""), KEY, &[]).await;
    // Two tasks of one key in a queue nobody configured yet: it is listed by its tasks.
    let task = m
        .call("jct_enqueue_task", json!({ "type": AGENT_TYPE, "queue": "mcp.q", "concurrency_key": "repo-1" }))
        .await
        .ok();
    assert_eq!(task["concurrency_key"], "repo-1", "{task}");
    m.call("jct_enqueue_task", json!({ "type": AGENT_TYPE, "queue": "mcp.q", "concurrency_key": "repo-1" })).await.ok();
    let listed = m.call("jct_list_queues", json!({})).await.ok();
    let q = listed["queues"].as_array().unwrap().iter().find(|q| q["name"] == "mcp.q").cloned().expect("listed");
    assert_eq!((q["queued"].as_i64(), q["paused"].as_bool(), &q["concurrency"]), (Some(2), Some(false), &Value::Null));

    // Paused: the agent's claim gets nothing from it.
    assert_eq!(m.call("jct_pause_queue", json!({ "name": "mcp.q" })).await.ok()["paused"], true);
    let (_, q) = api(&d, reqwest::Method::GET, "/queues/mcp.q", None).await;
    assert_eq!(q["paused"], true, "the API sees the pause");
    let claimed = m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 300 })).await.ok();
    assert_eq!(claimed["task"], Value::Null, "nothing is claimed from a paused queue: {claimed}");

    // Limits: one of the key at a time; a field left out is kept, null removes it.
    let limited = m
        .call(
            "jct_set_queue_limits",
            json!({ "name": "mcp.q", "concurrency": 5, "key_concurrency": 1, "rate": { "limit": 10, "per_s": 60 } }),
        )
        .await
        .ok();
    assert_eq!(
        (&limited["concurrency"], &limited["key_concurrency"], &limited["rate"]),
        (&json!(5), &json!(1), &json!({ "limit": 10, "per_s": 60.0 }))
    );
    let kept = m.call("jct_set_queue_limits", json!({ "name": "mcp.q", "concurrency": null })).await.ok();
    assert_eq!((&kept["concurrency"], &kept["key_concurrency"]), (&Value::Null, &json!(1)), "{kept}");
    // Past the schema (the server is the one that checks): its 422 comes back whole.
    let bad = m
        .call_unchecked(
            "jct_set_queue_limits",
            json!({ "name": "mcp.q", "rate": { "limit": 10, "per_s": 0.5 }, "concurrency": 0 }),
        )
        .await;
    let bad = bad.error("invalid_queue", Some(422));
    assert_eq!(bad["field"], "concurrency", "{bad}");
    m.call_unchecked("jct_set_queue_limits", json!({ "name": "mcp.q", "paused": true }))
        .await
        .error("invalid_arguments", None);
    m.call("jct_pause_queue", json!({ "name": ".." })).await.error("invalid_arguments", None);

    // Resumed: the first of the key is claimed, the second waits for it.
    assert_eq!(m.call("jct_resume_queue", json!({ "name": "mcp.q" })).await.ok()["paused"], false);
    let first = m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 5000 })).await.ok();
    assert_eq!(first["task"]["queue"], "mcp.q", "{first}");
    let second = m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 300 })).await.ok();
    assert_eq!(second["task"], Value::Null, "key_concurrency 1 holds the second: {second}");
    let listed = m.call("jct_list_queues", json!({})).await.ok();
    let q = listed["queues"].as_array().unwrap().iter().find(|q| q["name"] == "mcp.q").cloned().unwrap();
    assert_eq!((q["running"].as_i64(), q["queued"].as_i64()), (Some(1), Some(1)), "{q}");
    m.close().await;

    // --read-only lists the queues and offers none of the changes.
    let ro = mcp(&d.url(""), KEY, &["--read-only"]).await;
    assert!(ro.call("jct_list_queues", json!({})).await.ok()["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "mcp.q"));
    ro.call_unchecked("jct_pause_queue", json!({ "name": "mcp.q" })).await.error("tool_not_offered", None);
    let (_, q) = api(&d, reqwest::Method::GET, "/queues/mcp.q", None).await;
    assert_eq!(q["paused"], false, "the refused pause changed nothing");
    ro.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_started_read_and_driven() {
    let d = daemon(&[]);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let body = json!({
        "name": "mcp-diamond",
        "idempotency_key": "mcp-wf-1",
        "steps": [
            { "key": "a", "type": AGENT_TYPE, "payload": { "n": 1 } },
            { "key": "b", "type": AGENT_TYPE, "depends_on": ["a"], "payload": { "got": { "$from": "a", "pointer": "/n" } } },
            { "key": "c", "type": AGENT_TYPE, "depends_on": ["a"], "on_parent_failure": "run" },
            { "key": "d", "type": AGENT_TYPE, "depends_on": ["b", "c"] }
        ]
    });
    let started = m.call("jct_start_workflow", body.clone()).await.ok();
    assert_eq!(started["status"], "running", "{started}");
    let id = started["workflow_id"].as_str().unwrap().to_string();
    let statuses: Vec<(&str, &str)> = started["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["key"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("a", "queued"), ("b", "waiting"), ("c", "waiting"), ("d", "waiting")]);
    let (status, seen) = api(&d, reqwest::Method::GET, &format!("/workflows/{id}"), None).await;
    assert_eq!((status, &seen["name"]), (200, &json!("mcp-diamond")), "the API sees it");
    // The same key again: refused, naming the workflow that holds it; nothing more is stored.
    let again = m.call("jct_start_workflow", body).await.error("duplicate_idempotency_key", Some(409));
    assert_eq!(again["workflow_id"], id.as_str(), "{again}");
    // A cycle is the server's to refuse, whole; a field no step has is refused here.
    let cycle = m
        .call(
            "jct_start_workflow",
            json!({ "name": "loop", "steps": [
                { "key": "x", "type": AGENT_TYPE, "depends_on": ["y"] },
                { "key": "y", "type": AGENT_TYPE, "depends_on": ["x"] }] }),
        )
        .await
        .error("invalid_workflow", Some(422));
    assert!(cycle.to_string().contains('x') && cycle.to_string().contains('y'), "{cycle}");
    m.call_unchecked(
        "jct_start_workflow",
        json!({ "name": "w", "steps": [{ "key": "a", "type": AGENT_TYPE, "needs": [] }] }),
    )
    .await
    .error("invalid_arguments", None);
    let (_, listed) = api(&d, reqwest::Method::GET, "/workflows", None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "refused starts stored nothing: {listed}");

    // Driven by the agent: a's end releases b (its $from resolved) and c.
    let claimed = m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 5000 })).await.ok();
    let task = &claimed["task"];
    assert_eq!(task["step_key"], "a", "{claimed}");
    let args = json!({ "task_id": task["task_id"], "lease_token": task["lease_token"], "result": { "n": 41 } });
    m.call("jct_complete_task", args).await.ok();
    let wf = m.call("jct_get_workflow", json!({ "workflow_id": id })).await.ok();
    let step = |k: &str| wf["steps"].as_array().unwrap().iter().find(|s| s["key"] == k).cloned().unwrap();
    assert_eq!(
        (&step("a")["status"], &step("b")["status"], &step("d")["status"]),
        (&json!("completed"), &json!("queued"), &json!("waiting"))
    );
    assert_eq!(step("d")["depends_on"], json!(["b", "c"]));
    assert_eq!(wf["status"], "running");
    // b and c are the agent's next claims; b's $from is a's result by then.
    let mut next = Vec::new();
    for _ in 0..2 {
        next.push(
            m.call("jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 5000 })).await.ok()["task"].clone(),
        );
    }
    let b = next.iter().find(|t| t["step_key"] == "b").unwrap_or_else(|| panic!("b claimed: {next:?}"));
    assert_eq!(b["payload"]["got"], 41, "{b}");
    assert!(next.iter().any(|t| t["step_key"] == "c"), "{next:?}");
    m.call("jct_get_workflow", json!({ "workflow_id": "nope" })).await.error("invalid_arguments", None);
    m.call("jct_get_workflow", json!({ "workflow_id": uuid::Uuid::now_v7().to_string() }))
        .await
        .error("workflow_not_found", Some(404));
    m.close().await;

    // --read-only reads the workflow and starts none.
    let ro = mcp(&d.url(""), KEY, &["--read-only"]).await;
    assert_eq!(ro.call("jct_get_workflow", json!({ "workflow_id": id })).await.ok()["workflow_id"], id.as_str());
    ro.call_unchecked("jct_start_workflow", json!({ "name": "w", "steps": [{ "key": "a", "type": AGENT_TYPE }] }))
        .await
        .error("tool_not_offered", None);
    let (_, listed) = api(&d, reqwest::Method::GET, "/workflows", None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "the refused start stored nothing");
    ro.close().await;
}

/// One JSON-RPC exchange with the daemon's `/mcp` (streamable HTTP, stateless JSON answers).
async fn rpc(daemon: &DaemonProcess, key: &str, id: u64, method: &str, params: Value) -> (u16, Value) {
    let res = support::http()
        .post(daemon.url("/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A tool call through `/mcp`: whether it is a tool error, and its text as JSON.
async fn http_tool(daemon: &DaemonProcess, name: &str, arguments: Value) -> Outcome {
    let (status, answer) = rpc(daemon, KEY, 7, "tools/call", json!({ "name": name, "arguments": arguments })).await;
    assert_eq!(status, 200, "{answer}");
    let result = &answer["result"];
    let text = result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {answer}"));
    Outcome { is_error: result["isError"] == true, body: serde_json::from_str(text).unwrap_or(json!(text)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_the_same_tools_at_slash_mcp_behind_the_key() {
    let d = daemon(&[]);
    let init =
        json!({ "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } });
    let (status, answer) = rpc(&d, KEY, 1, "initialize", init.clone()).await;
    assert_eq!(
        (status, answer["result"]["serverInfo"]["name"].as_str()),
        (200, Some("devops-control-tower")),
        "{answer}"
    );
    let (status, answer) = rpc(&d, "not-the-key", 2, "initialize", init).await;
    assert_eq!((status, answer["error"].as_str()), (401, Some("unauthorized")), "{answer}");
    // Stateless: no session stream to open.
    let res = support::http().get(d.url("/mcp")).bearer_auth(KEY).header("accept", "text/event-stream").send().await;
    assert_eq!(res.unwrap().status(), 405);

    // The same catalog as the stdio server.
    let (_, answer) = rpc(&d, KEY, 3, "tools/list", json!({})).await;
    let stdio = mcp(&d.url(""), KEY, &[]).await;
    for tool in answer["result"]["tools"].as_array().unwrap_or_else(|| panic!("{answer}")) {
        assert_eq!(tool["inputSchema"], stdio.schema(tool["name"].as_str().unwrap()), "{tool}");
    }
    assert_eq!(answer["result"]["tools"].as_array().unwrap().len(), ALL_TOOLS.len());
    stdio.close().await;

    // A worker cycle through /mcp reaches the trace folder like any other.
    let id = http_tool(&d, "jct_enqueue_task", json!({ "type": AGENT_TYPE, "payload": { "n": 1 } })).await.ok()
        ["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let claimed = http_tool(&d, "jct_claim_task", json!({ "types": [AGENT_TYPE], "wait_ms": 5000 })).await.ok();
    assert_eq!(claimed["task"]["task_id"], id.as_str());
    let lease = json!({ "task_id": id, "lease_token": claimed["task"]["lease_token"], "lines": ["over http"] });
    http_tool(&d, "jct_append_log", lease.clone()).await.ok();
    let done =
        http_tool(&d, "jct_complete_task", json!({ "task_id": id, "lease_token": lease["lease_token"], "result": 1 }))
            .await
            .ok();
    assert_eq!(done["status"], "completed");
    assert!(read(&d.trace_dir.join(&id).join("log.txt")).contains("over http"));
    http_tool(&d, "jct_get_task", json!({ "task_id": uuid::Uuid::now_v7().to_string() }))
        .await
        .error("task_not_found", Some(404));
    assert_eq!(workers(&d).await.len(), 1);

    // Stopping the daemon deregisters the endpoint's worker while the API still answers.
    d.signal("TERM");
    let mut d = d;
    assert!(d.wait_exit(Duration::from_secs(30)).success());
    let log = d.stderr();
    assert!(log.contains("deregistered"), "{log}");
    assert!(!log.contains("could not deregister"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_approved_and_rejected_through_the_tool() {
    let d = daemon(&[]);
    let m = mcp(&d.url(""), KEY, &[]).await;
    let (status, created) = api(
        &d,
        reqwest::Method::POST,
        "/workflows",
        Some(json!({ "name": "mcp-gates", "steps": [
            { "key": "yes", "type": "approval", "payload": { "prompt": "Ship?" } },
            { "key": "no", "type": "approval", "payload": { "prompt": "And this?" } },
            { "key": "after", "type": "echo", "depends_on": ["yes"] },
        ]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = |i: usize| created["steps"][i]["task_id"].as_str().unwrap().to_string();
    let (yes, no, after) = (id(0), id(1), id(2));
    let approved = m
        .call(
            "jct_decide_approval",
            json!({ "task_id": yes, "decision": "approve", "comment": "lgtm", "by": "agent-7" }),
        )
        .await
        .ok();
    assert_eq!(approved["status"], "completed", "{approved}");
    assert_eq!(
        (approved["result"]["by"].as_str(), approved["result"]["comment"].as_str()),
        (Some("agent-7"), Some("lgtm"))
    );
    let rejected = m.call("jct_decide_approval", json!({ "task_id": no, "decision": "reject" })).await.ok();
    assert_eq!(
        (rejected["status"].as_str(), rejected["last_error"].as_str()),
        (Some("failed"), Some("approval_rejected"))
    );
    // Twice: the server's 409 comes back whole; a bad decision never leaves the tool.
    m.call("jct_decide_approval", json!({ "task_id": yes, "decision": "reject" }))
        .await
        .error("not_awaiting_decision", Some(409));
    m.call_unchecked("jct_decide_approval", json!({ "task_id": no, "decision": "maybe" }))
        .await
        .error("invalid_arguments", None);
    m.call("jct_decide_approval", json!({ "task_id": "nope", "decision": "approve" }))
        .await
        .error("invalid_arguments", None);
    support::wait_for("the approved step's dependant to run", Duration::from_secs(20), || async {
        let (_, t) = api(&d, reqwest::Method::GET, &format!("/tasks/{after}"), None).await;
        (t["status"] == "completed").then_some(())
    })
    .await;
    m.close().await;
    // --read-only does not offer it.
    let ro = mcp(&d.url(""), KEY, &["--read-only"]).await;
    ro.call_unchecked("jct_decide_approval", json!({ "task_id": yes, "decision": "approve" }))
        .await
        .error("tool_not_offered", None);
    ro.close().await;
}
