//! Fan-out at run time (issue 25, point 5) on both stores, through a daemon's HTTP API and
//! an HTTP worker: a running step spawns N steps and the step that depended on it waits for
//! all of them (1 → N → 1); the same through `complete`'s `spawn`, in its transaction; the
//! lease fence (a wrong token, a task that ended, a task in no workflow); every 422 with
//! nothing stored; spawned steps that depend on a completed step and on the spawner; and
//! 10,000 steps spawned in one call that all run, the fan-in once.

use crate::support;

use std::time::Duration;

use crate::support::{http, InProcess, TestDb};
use devops_control_tower::handlers::Registry;
use serde_json::{json, Value};

const STORES: [&str; 2] = ["sqlite", "postgres"];

async fn daemon(db: &TestDb, extra: &[(&str, &str)]) -> InProcess {
    let mut vars = vec![("JCT_POLL_INTERVAL_MS", "50")];
    vars.extend_from_slice(extra);
    support::start_in_process(&db.backend().await, &db.url(), &vars, Registry::builtin()).await
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

/// A registered HTTP worker serving `types`, which nothing in the daemon runs.
struct Worker {
    base: String,
    id: String,
}

impl Worker {
    async fn register(base: &str, types: &[&str]) -> Worker {
        let (status, reg) =
            call(base, "POST", "/workers", Some(json!({ "name": "spawner", "types": types, "max_slots": 100 }))).await;
        assert_eq!(status, 201, "{reg}");
        Worker { base: base.to_string(), id: reg["worker_id"].as_str().unwrap().to_string() }
    }

    /// Claims up to `max`, waiting up to 10 s for the first.
    async fn claim(&self, max: u32) -> Vec<Value> {
        let body = json!({ "worker_id": self.id, "max": max, "wait_ms": 10_000 });
        let (status, claim) = call(&self.base, "POST", "/tasks/claim", Some(body)).await;
        assert_eq!(status, 200, "{claim}");
        claim["tasks"].as_array().unwrap().clone()
    }

    /// Claims exactly one task, with this step key.
    async fn claim_step(&self, key: &str) -> Value {
        let mut tasks = self.claim(1).await;
        assert_eq!(tasks.len(), 1, "one task claimable, {key}");
        let task = tasks.remove(0);
        assert_eq!(task["step_key"], key, "{task}");
        task
    }

    /// Nothing is claimable now.
    async fn claims_nothing(&self) {
        let body = json!({ "worker_id": self.id, "max": 10, "wait_ms": 0 });
        let (status, claim) = call(&self.base, "POST", "/tasks/claim", Some(body)).await;
        assert_eq!((status, claim["tasks"].clone()), (200, json!([])), "{claim}");
    }
}

async fn spawn(base: &str, task: &Value, steps: Value) -> (u16, Value) {
    let path = format!("/tasks/{}/spawn", task["task_id"].as_str().unwrap());
    call(base, "POST", &path, Some(json!({ "lease_token": task["lease_token"], "steps": steps }))).await
}

async fn complete(base: &str, task: &Value, result: Value) -> Value {
    let path = format!("/tasks/{}/complete", task["task_id"].as_str().unwrap());
    let (status, done) =
        call(base, "POST", &path, Some(json!({ "lease_token": task["lease_token"], "result": result }))).await;
    assert_eq!(status, 200, "{done}");
    done
}

async fn create(base: &str, steps: Value) -> String {
    let (status, created) = call(base, "POST", "/workflows", Some(json!({ "name": "fan", "steps": steps }))).await;
    assert_eq!(status, 201, "{created}");
    created["workflow_id"].as_str().unwrap().to_string()
}

async fn workflow(base: &str, id: &str) -> Value {
    let (status, w) = call(base, "GET", &format!("/workflows/{id}"), None).await;
    assert_eq!(status, 200, "{w}");
    w
}

fn step<'a>(w: &'a Value, key: &str) -> &'a Value {
    w["steps"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap_or_else(|| panic!("no step {key}: {w}"))
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = match v {
        Value::Array(a) => a.iter().map(|k| k.as_str().unwrap().to_string()).collect(),
        Value::Object(o) => o.keys().cloned().collect(),
        other => panic!("not keys: {other}"),
    };
    keys.sort();
    keys
}

async fn wait_workflow(base: &str, id: &str, status: &str, timeout: Duration) -> Value {
    support::wait_for(&format!("workflow {id} to be {status}"), timeout, || async {
        let w = workflow(base, id).await;
        (w["status"] == status).then_some(w)
    })
    .await
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().unwrap_or_else(|| panic!("not a time: {v}")).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawner_fans_out_and_the_fan_in_waits_for_every_spawned_step() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db, &[]).await;
        let worker = Worker::register(&app.base, &["split", "leaf", "join"]).await;
        let id = create(
            &app.base,
            json!([{ "key": "split", "type": "split" }, { "key": "join", "type": "join", "depends_on": ["split"] }]),
        )
        .await;
        let split = worker.claim_step("split").await;
        let leaves: Vec<String> = (0..5).map(|i| format!("leaf-{i}")).collect();
        let steps: Vec<Value> = leaves
            .iter()
            .enumerate()
            .map(|(i, k)| json!({ "key": k, "type": "leaf", "payload": { "n": i } }))
            .collect();
        let (status, spawned) = spawn(&app.base, &split, json!(steps)).await;
        assert_eq!(status, 201, "{kind}: {spawned}");
        assert_eq!(spawned["workflow_id"], id, "{kind}");
        let answered: Vec<(&str, &str)> = spawned["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["key"].as_str().unwrap(), s["status"].as_str().unwrap()))
            .collect();
        let expected: Vec<(&str, &str)> = leaves.iter().map(|k| (k.as_str(), "queued")).collect();
        assert_eq!(answered, expected, "{kind}");
        let w = workflow(&app.base, &id).await;
        assert_eq!(w["step_count"], 7, "{kind}");
        let mut want: Vec<String> = leaves.clone();
        want.push("split".into());
        want.sort();
        assert_eq!(sorted_keys(&step(&w, "join")["depends_on"]), want, "{kind}: the fan-in waits for every leaf");
        // The spawner ends: the fan-in still waits for the leaves.
        complete(&app.base, &split, json!("split")).await;
        assert_eq!(step(&workflow(&app.base, &id).await, "join")["status"], "waiting", "{kind}");
        let mut claimed = worker.claim(10).await;
        assert_eq!(claimed.len(), 5, "{kind}: every leaf runs at once, the fan-in does not: {claimed:?}");
        claimed.sort_by_key(|t| t["step_key"].as_str().unwrap().to_string());
        for (i, leaf) in claimed.iter().enumerate() {
            assert_eq!(leaf["payload"], json!({ "n": i }), "{kind}");
            assert_eq!(leaf["parents"], json!({}), "{kind}: a spawned step without depends_on has no parents");
            assert_eq!(step(&workflow(&app.base, &id).await, "join")["status"], "waiting", "{kind}, before leaf {i}");
            worker.claims_nothing().await;
            complete(&app.base, leaf, json!({ "leaf": i })).await;
        }
        let join = worker.claim_step("join").await;
        let parents = &join["parents"];
        assert_eq!(sorted_keys(parents), want, "{kind}: {parents}");
        for (i, leaf) in leaves.iter().enumerate() {
            assert_eq!(parents[leaf]["status"], "completed", "{kind}");
            assert_eq!(parents[leaf]["result"], json!({ "leaf": i }), "{kind}");
        }
        // It started only after every leaf had ended.
        let started = time(&support::get_task(&app.base, join["task_id"].as_str().unwrap()).await["started_at"]);
        for leaf in &claimed {
            let t = support::get_task(&app.base, leaf["task_id"].as_str().unwrap()).await;
            assert!(time(&t["finished_at"]) <= started, "{kind}: {leaf} ended after the fan-in started");
        }
        complete(&app.base, &join, json!("joined")).await;
        wait_workflow(&app.base, &id, "completed", Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_with_spawn_adds_the_steps_in_its_own_transaction() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db, &[]).await;
        let worker = Worker::register(&app.base, &["split", "leaf", "join"]).await;
        let id = create(
            &app.base,
            json!([{ "key": "split", "type": "split" }, { "key": "join", "type": "join", "depends_on": ["split"] }]),
        )
        .await;
        let split = worker.claim_step("split").await;
        let body = json!({
            "lease_token": split["lease_token"],
            "result": { "shards": 3 },
            "spawn": [
                { "key": "a", "type": "leaf" },
                { "key": "b", "type": "leaf", "depends_on": ["a"] },
                { "key": "c", "type": "leaf" },
            ],
        });
        let path = format!("/tasks/{}/complete", split["task_id"].as_str().unwrap());
        let (status, done) = call(&app.base, "POST", &path, Some(body)).await;
        assert_eq!(status, 200, "{kind}: {done}");
        assert_eq!((done["status"].as_str(), done["result"].clone()), (Some("completed"), json!({ "shards": 3 })));
        assert_eq!(done["spawned"]["workflow_id"], id, "{kind}: {done}");
        let statuses: Vec<(&str, &str)> = done["spawned"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["key"].as_str().unwrap(), s["status"].as_str().unwrap()))
            .collect();
        assert_eq!(statuses, [("a", "queued"), ("b", "waiting"), ("c", "queued")], "{kind}");
        // The end did not release the fan-in: it waits for what the end spawned.
        let w = workflow(&app.base, &id).await;
        assert_eq!(step(&w, "join")["status"], "waiting", "{kind}: {w}");
        assert_eq!(sorted_keys(&step(&w, "join")["depends_on"]), ["a", "b", "c", "split"], "{kind}");
        let mut first = worker.claim(10).await;
        first.sort_by_key(|t| t["step_key"].as_str().unwrap().to_string());
        let keys: Vec<&str> = first.iter().map(|t| t["step_key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["a", "c"], "{kind}: b waits for a");
        complete(&app.base, &first[0], json!("a")).await;
        let b = worker.claim_step("b").await;
        assert_eq!(b["parents"]["a"]["result"], "a", "{kind}");
        complete(&app.base, &b, json!("b")).await;
        worker.claims_nothing().await;
        complete(&app.base, &first[1], json!("c")).await;
        let join = worker.claim_step("join").await;
        assert_eq!(sorted_keys(&join["parents"]), ["a", "b", "c", "split"], "{kind}");
        complete(&app.base, &join, json!("joined")).await;
        wait_workflow(&app.base, &id, "completed", Duration::from_secs(10)).await;
        // An empty spawn is a plain complete.
        let plain = create(&app.base, json!([{ "key": "only", "type": "split" }])).await;
        let only = worker.claim_step("only").await;
        let body = json!({ "lease_token": only["lease_token"], "spawn": [] });
        let (status, done) =
            call(&app.base, "POST", &format!("/tasks/{}/complete", only["task_id"].as_str().unwrap()), Some(body))
                .await;
        assert_eq!(status, 200, "{kind}: {done}");
        assert!(done.get("spawned").is_none(), "{kind}: {done}");
        assert_eq!(workflow(&app.base, &plain).await["step_count"], 1, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_is_fenced_by_the_lease_like_complete() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db, &[]).await;
        let worker = Worker::register(&app.base, &["split", "leaf", "join"]).await;
        let id = create(
            &app.base,
            json!([{ "key": "split", "type": "split" }, { "key": "join", "type": "join", "depends_on": ["split"] }]),
        )
        .await;
        let split = worker.claim_step("split").await;
        let one = json!([{ "key": "x", "type": "leaf" }]);
        let token = split["lease_token"].as_str().unwrap();
        let (attempt, holder) = token.split_once('.').unwrap();
        for wrong in [format!("{}.{holder}", attempt.parse::<i32>().unwrap() + 1), format!("{attempt}.w-someone-else")]
        {
            let mut forged = split.clone();
            forged["lease_token"] = json!(wrong);
            let (status, answer) = spawn(&app.base, &forged, one.clone()).await;
            assert_eq!((status, answer["error"].as_str()), (409, Some("lease_lost")), "{kind}, {wrong}: {answer}");
            assert_eq!(answer["task_id"], split["task_id"], "{kind}");
        }
        let mut garbled = split.clone();
        garbled["lease_token"] = json!("not a token");
        let (status, answer) = spawn(&app.base, &garbled, one.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_field")), "{kind}: {answer}");
        let mut unknown = split.clone();
        unknown["task_id"] = json!(uuid::Uuid::now_v7().to_string());
        let (status, answer) = spawn(&app.base, &unknown, one.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (404, Some("task_not_found")), "{kind}: {answer}");
        let (status, _) =
            call(&app.base, "POST", "/tasks/not-a-uuid/spawn", Some(json!({ "lease_token": token, "steps": one })))
                .await;
        assert_eq!(status, 400, "{kind}");
        // Ended: the token holds nothing any more, for spawn and for complete with spawn.
        complete(&app.base, &split, json!(null)).await;
        let (status, answer) = spawn(&app.base, &split, one.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (409, Some("lease_lost")), "{kind}: {answer}");
        let body = json!({ "lease_token": token, "spawn": one });
        let (status, answer) =
            call(&app.base, "POST", &format!("/tasks/{}/complete", split["task_id"].as_str().unwrap()), Some(body))
                .await;
        assert_eq!((status, answer["error"].as_str()), (409, Some("lease_lost")), "{kind}: {answer}");
        // A task in no workflow holds its lease but has no workflow to spawn into.
        support::enqueue(&app.base, json!({ "type": "leaf" })).await;
        let join = worker.claim(10).await;
        let plain = join.iter().find(|t| t["step_key"].is_null()).expect("the plain task claimed");
        let (status, answer) = spawn(&app.base, plain, one.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (409, Some("not_a_workflow_step")), "{kind}: {answer}");
        assert_eq!(answer["task_id"], plain["task_id"], "{kind}");
        let body = json!({ "lease_token": plain["lease_token"], "spawn": one });
        let (status, answer) =
            call(&app.base, "POST", &format!("/tasks/{}/complete", plain["task_id"].as_str().unwrap()), Some(body))
                .await;
        assert_eq!((status, answer["error"].as_str()), (409, Some("not_a_workflow_step")), "{kind}: {answer}");
        assert_eq!(support::get_task(&app.base, plain["task_id"].as_str().unwrap()).await["status"], "running");
        // Nothing was spawned by any of them.
        assert_eq!(workflow(&app.base, &id).await["step_count"], 2, "{kind}");
        let (_, tasks) = call(&app.base, "GET", "/tasks?limit=1000", None).await;
        assert_eq!(tasks.as_array().unwrap().len(), 3, "{kind}: {tasks}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spawns_are_refused_naming_the_steps_and_store_nothing() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db, &[]).await;
        let worker = Worker::register(&app.base, &["split", "leaf", "join"]).await;
        let id = create(
            &app.base,
            json!([
                { "key": "split", "type": "split" },
                { "key": "join", "type": "join", "depends_on": ["split"] },
                { "key": "after", "type": "join", "depends_on": ["join"] },
                { "key": "gone", "type": "leaf", "max_attempts": 1 },
            ]),
        )
        .await;
        let mut claimed = worker.claim(10).await;
        claimed.sort_by_key(|t| t["step_key"].as_str().unwrap().to_string());
        let [gone, split] = [claimed[0].clone(), claimed[1].clone()];
        assert_eq!((gone["step_key"].as_str(), split["step_key"].as_str()), (Some("gone"), Some("split")));
        let path = format!("/tasks/{}/fail", gone["task_id"].as_str().unwrap());
        let body = json!({ "lease_token": gone["lease_token"], "error": { "message": "no" }, "retryable": false });
        assert_eq!(call(&app.base, "POST", &path, Some(body)).await.0, 200);
        let leaf = |key: &str, deps: &[&str]| json!({ "key": key, "type": "leaf", "depends_on": deps });
        let many: Vec<Value> = (0..10_001).map(|i| leaf(&format!("s{i}"), &[])).collect();
        let cases: Vec<(&str, Value, Value)> = vec![
            ("a repeated key", json!([leaf("a", &[]), leaf("a", &[])]), json!({ "key": "a", "indexes": [0, 1] })),
            (
                "a key the workflow has",
                json!([leaf("x", &[]), leaf("join", &[])]),
                json!({ "index": 1, "key": "join" }),
            ),
            (
                "an unknown dependency",
                json!([leaf("x", &["zz"])]),
                json!({ "index": 0, "key": "x", "dependency": "zz" }),
            ),
            (
                "a dependency on the spawner's dependant",
                json!([leaf("x", &[]), leaf("y", &["join"])]),
                json!({ "index": 1, "key": "y", "dependency": "join" }),
            ),
            (
                "a dependency below the spawner's dependant",
                json!([leaf("x", &["after"])]),
                json!({ "index": 0, "key": "x", "dependency": "after" }),
            ),
            ("a cycle", json!([leaf("r", &[]), leaf("x", &["r", "y"]), leaf("y", &["x"])]), json!({})),
            (
                "a cancel step on a failed parent",
                json!([leaf("x", &["gone"])]),
                json!({ "index": 0, "key": "x", "dependency": "gone", "status": "failed" }),
            ),
            (
                "a step of an unknown type",
                json!([leaf("x", &[]), { "key": "y", "type": "no-such-type" }]),
                json!({ "index": 1, "key": "y", "cause": "unknown_type" }),
            ),
            ("a bad key", json!([{ "key": "has space", "type": "leaf" }]), json!({ "index": 0 })),
            ("more than 10,000 steps", json!(many), json!({ "count": 10_001 })),
            ("no steps", json!([]), json!({ "field": "steps" })),
        ];
        for (what, steps, expected) in cases {
            let (status, answer) = spawn(&app.base, &split, steps).await;
            assert_eq!(status, 422, "{kind}, {what}: {answer}");
            assert_eq!(answer["error"], "invalid_workflow", "{kind}, {what}: {answer}");
            for (k, v) in expected.as_object().unwrap() {
                assert_eq!(&answer[k], v, "{kind}, {what}: {k} in {answer}");
            }
            if what == "a cycle" {
                assert_eq!(sorted_keys(&answer["keys"]), ["x", "y"], "{kind}: {answer}");
            }
        }
        // The same refusal through complete, which then does not end the attempt.
        let body = json!({ "lease_token": split["lease_token"], "spawn": [leaf("x", &["join"])] });
        let (status, answer) =
            call(&app.base, "POST", &format!("/tasks/{}/complete", split["task_id"].as_str().unwrap()), Some(body))
                .await;
        assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_workflow")), "{kind}: {answer}");
        assert_eq!(support::get_task(&app.base, split["task_id"].as_str().unwrap()).await["status"], "running");
        let (status, answer) = call(
            &app.base,
            "POST",
            &format!("/tasks/{}/spawn", split["task_id"].as_str().unwrap()),
            Some(json!({ "lease_token": split["lease_token"] })),
        )
        .await;
        assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_field")), "{kind}: {answer}");
        let w = workflow(&app.base, &id).await;
        assert_eq!(w["step_count"], 4, "{kind}: a refused spawn stored steps");
        let (_, tasks) = call(&app.base, "GET", "/tasks?limit=1000", None).await;
        assert_eq!(tasks.as_array().unwrap().len(), 4, "{kind}: {tasks}");
        // A `run` step may wait for the failed step: counted at once, it is queued.
        let steps = json!([{ "key": "x", "type": "leaf", "depends_on": ["gone"], "on_parent_failure": "run" }]);
        let (status, spawned) = spawn(&app.base, &split, steps).await;
        assert_eq!(status, 201, "{kind}: {spawned}");
        assert_eq!(spawned["steps"][0]["status"], "queued", "{kind}");
        let x = worker.claim_step("x").await;
        assert_eq!(x["parents"]["gone"]["status"], "failed", "{kind}: {x}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_steps_may_wait_for_a_completed_step_and_for_the_spawner() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db, &[]).await;
        let worker = Worker::register(&app.base, &["split", "leaf", "join"]).await;
        let id = create(
            &app.base,
            json!([
                { "key": "pre", "type": "echo", "payload": { "sha": "abc" } },
                { "key": "split", "type": "split", "depends_on": ["pre"] },
                { "key": "join", "type": "join", "depends_on": ["split"] },
            ]),
        )
        .await;
        let split = worker.claim_step("split").await;
        let steps = json!([
            { "key": "x", "type": "leaf", "depends_on": ["pre"], "payload": { "sha": { "$from": "pre", "pointer": "/sha" } } },
            { "key": "y", "type": "leaf", "depends_on": ["split"] },
        ]);
        let (status, spawned) = spawn(&app.base, &split, steps).await;
        assert_eq!(status, 201, "{kind}: {spawned}");
        let statuses: Vec<&str> =
            spawned["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["queued", "waiting"], "{kind}: x's only parent had completed; y waits for split");
        let x = worker.claim_step("x").await;
        assert_eq!(x["payload"], json!({ "sha": "abc" }), "{kind}: the $from resolved from the completed parent");
        assert_eq!(x["parents"]["pre"]["status"], "completed", "{kind}");
        complete(&app.base, &x, json!("x")).await;
        worker.claims_nothing().await;
        complete(&app.base, &split, json!("split")).await;
        let y = worker.claim_step("y").await;
        assert_eq!(y["parents"]["split"]["result"], "split", "{kind}");
        worker.claims_nothing().await;
        complete(&app.base, &y, json!("y")).await;
        let join = worker.claim_step("join").await;
        assert_eq!(sorted_keys(&join["parents"]), ["split", "x", "y"], "{kind}");
        complete(&app.base, &join, json!("joined")).await;
        wait_workflow(&app.base, &id, "completed", Duration::from_secs(10)).await;
    }
}

/// 10,000 steps in one spawn (the most one call takes, in the default body limit), all run by
/// the daemon's own workers; the fan-in waits for all of them and runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_steps_spawned_in_one_call_all_run_and_the_fan_in_runs_once() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db, &[("JCT_WORKERS", "16")]).await;
        let worker = Worker::register(&app.base, &["split"]).await;
        let id = create(
            &app.base,
            json!([{ "key": "split", "type": "split" }, { "key": "join", "type": "echo", "depends_on": ["split"] }]),
        )
        .await;
        let split = worker.claim_step("split").await;
        let steps: Vec<Value> = (0..10_000).map(|i| json!({ "key": format!("s{i}"), "type": "echo" })).collect();
        let asked = std::time::Instant::now();
        let (status, spawned) = spawn(&app.base, &split, json!(steps)).await;
        assert_eq!(status, 201, "{kind}: {spawned}");
        eprintln!("{kind}: 10,000 steps spawned in {:?}", asked.elapsed());
        assert_eq!(spawned["steps"].as_array().unwrap().len(), 10_000, "{kind}");
        complete(&app.base, &split, json!("split")).await;
        // Watched through the list's summary: polling the view of 10,002 steps would load
        // the daemon more than the steps do.
        support::wait_for("the workflow to complete", Duration::from_secs(300), || async {
            let (status, listed) = call(&app.base, "GET", "/workflows?name=fan", None).await;
            assert_eq!(status, 200, "{listed}");
            (listed[0]["status"] == "completed").then_some(())
        })
        .await;
        let w = workflow(&app.base, &id).await;
        assert_eq!(w["status"], "completed", "{kind}");
        eprintln!("{kind}: the workflow completed {:?} after the spawn", asked.elapsed());
        assert_eq!(w["step_count"], 10_002, "{kind}");
        let join = step(&w, "join");
        assert_eq!(join["depends_on"].as_array().unwrap().len(), 10_001, "{kind}");
        assert_eq!(join["attempts"], 1, "{kind}: the fan-in ran once");
        let started = time(&join["started_at"]);
        let last = w["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["key"] != "join")
            .map(|s| time(&s["finished_at"]))
            .max()
            .unwrap();
        assert!(last <= started, "{kind}: a spawned step ended at {last}, after the fan-in started at {started}");
    }
}

fn claim_of(worker: &str, task_type: &str) -> devops_control_tower::store::ClaimParams {
    devops_control_tower::store::ClaimParams {
        worker: devops_control_tower::task::WorkerId(worker.into()),
        limit: 10,
        lease: Duration::from_secs(30),
        types: vec![task_type.into()],
        queues: None,
    }
}

/// At the store, through two stores (two daemons' pools or connections), 50 rounds: a spawn
/// whose new step waits for a parent that ends at the same instant counts that end exactly
/// once, whichever commits first (the new step is queued, never left waiting); and two
/// steps spawning the same key into one workflow at once store it once.
async fn spawns_race_ends_and_each_other(kind: &str) {
    use crate::store_conformance::workflow_cases::{step, workflow};
    use devops_control_tower::lease::Held;
    use devops_control_tower::store::{AttemptEnd, Finish, Spawn, SpawnError, TaskStore};
    use devops_control_tower::task::{TaskStatus, WorkerId};
    use devops_control_tower::workflow::{InvalidWorkflow, OnParentFailure};
    let db = TestDb::new(kind).await;
    let (one, two): (std::sync::Arc<dyn TaskStore>, std::sync::Arc<dyn TaskStore>) =
        (db.store().await, db.store().await);
    for round in 0..50 {
        let fails = round % 2 == 1;
        let wf = workflow(vec![
            step("p", "race_p", &[], OnParentFailure::Cancel),
            step("s1", "race_s1", &[], OnParentFailure::Cancel),
            step("s2", "race_s2", &[], OnParentFailure::Cancel),
            step("d", "race_d", &["s1", "s2"], OnParentFailure::Cancel),
        ]);
        one.create_workflow(&wf).await.unwrap();
        let p = one.claim(&claim_of("daemon-1", "race_p")).await.unwrap().remove(0);
        let s1 = two.claim(&claim_of("daemon-2", "race_s1")).await.unwrap().remove(0);
        let s2 = one.claim(&claim_of("daemon-1", "race_s2")).await.unwrap().remove(0);
        let end = AttemptEnd {
            held: Held::new(p.id, WorkerId("daemon-1".into()), p.attempts),
            finish: if fails {
                Finish::Failed { error: "p broke".into() }
            } else {
                Finish::Completed { result: json!(1) }
            },
        };
        let x = vec![step("x", "race_x", &["p"], OnParentFailure::Run)];
        let x_id = x[0].task.id;
        let first =
            Spawn { held: Held::new(s1.id, WorkerId("daemon-2".into()), s1.attempts), steps: x, completes: None };
        let (e, s) = (one.clone(), two.clone());
        let ended = tokio::spawn(async move { e.finish(&[end]).await.unwrap() });
        let spawned = tokio::spawn(async move { s.spawn_steps(&first).await });
        assert_eq!(ended.await.unwrap(), vec![p.id], "{kind}, round {round}");
        spawned.await.unwrap().unwrap_or_else(|e| panic!("{kind}, round {round}: {e}"));
        let got = one.get(x_id).await.unwrap().unwrap();
        assert_eq!(got.status, TaskStatus::Queued, "{kind}, round {round}: p's end was not counted off x");
        let mut claimed = two.claim(&claim_of("daemon-2", "race_x")).await.unwrap();
        assert_eq!(claimed.len(), 1, "{kind}, round {round}");
        let seen = claimed.remove(0).parents.unwrap()["p"].status;
        assert_eq!(seen, if fails { TaskStatus::Failed } else { TaskStatus::Completed }, "{kind}, round {round}");
        // Two spawners, one key, at once: one stores it, the other is told the key is taken.
        let y = |by: &devops_control_tower::task::Task, worker: &str| Spawn {
            held: Held::new(by.id, WorkerId(worker.into()), by.attempts),
            steps: vec![step("y", "race_y", &[], OnParentFailure::Cancel)],
            completes: None,
        };
        let (a, b) = (y(&s1, "daemon-2"), y(&s2, "daemon-1"));
        let (sa, sb) = (two.clone(), one.clone());
        let ra = tokio::spawn(async move { sa.spawn_steps(&a).await });
        let rb = tokio::spawn(async move { sb.spawn_steps(&b).await });
        let results = [ra.await.unwrap(), rb.await.unwrap()];
        let stored = results.iter().filter(|r| r.is_ok()).count();
        let taken = results
            .iter()
            .filter(|r| matches!(r, Err(SpawnError::Invalid(InvalidWorkflow::KeyTaken { key, .. })) if key == "y"))
            .count();
        assert_eq!((stored, taken), (1, 1), "{kind}, round {round}: {results:?}");
        let view = one.get_workflow(wf.id).await.unwrap().unwrap();
        assert_eq!(view.summary.step_count, 6, "{kind}, round {round}");
        let d = view.steps.iter().find(|s| s.key == "d").unwrap();
        assert_eq!(d.depends_on, ["s1", "s2", "x", "y"], "{kind}, round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawns_race_ends_and_each_other_on_sqlite() {
    spawns_race_ends_and_each_other("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawns_race_ends_and_each_other_on_postgres() {
    spawns_race_ends_and_each_other("postgres").await;
}

/// Steps spawned in a workflow a schedule started carry the schedule's `schedule_name` and
/// the spawner's `scheduled_for`, as the steps created with it do: `GET /tasks?schedule_name=`
/// lists them, and the overlap policy sees the workflow going while only they are unfinished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_steps_of_a_scheduled_workflow_carry_its_schedule() {
    for kind in STORES {
        let db = TestDb::new(kind).await;
        let app = daemon(&db, &[]).await;
        let worker = Worker::register(&app.base, &["split", "leaf"]).await;
        // Every second, `skip`: a tick fires nothing while the previous workflow is going.
        let schedule = json!({ "name": "fan-each-second", "cron": "* * * * * *", "overlap": "skip",
            "workflow": { "name": "fan", "steps": [{ "key": "split", "type": "split" }] } });
        let (status, created) = call(&app.base, "POST", "/schedules", Some(schedule)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        let split = worker.claim_step("split").await;
        assert_eq!(split["schedule_name"], "fan-each-second", "{kind}: {split}");
        let tick = time(&split["scheduled_for"]);
        let (status, spawned) =
            spawn(&app.base, &split, json!([{ "key": "leaf-0", "type": "leaf" }, { "key": "leaf-1", "type": "leaf" }]))
                .await;
        assert_eq!(status, 201, "{kind}: {spawned}");
        complete(&app.base, &split, json!({})).await;
        // Nothing claims `leaf`: the spawned steps stay queued, the only unfinished steps.
        tokio::time::sleep(Duration::from_millis(2_500)).await;

        let (status, list) = call(&app.base, "GET", "/tasks?schedule_name=fan-each-second", None).await;
        assert_eq!(status, 200, "{kind}: {list}");
        let mut steps: Vec<(String, chrono::DateTime<chrono::Utc>, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let key = t["step_key"].as_str().unwrap_or_else(|| panic!("{kind}: not a step: {t}"));
                (key.to_string(), time(&t["scheduled_for"]), t["status"].as_str().unwrap().to_string())
            })
            .collect();
        steps.sort();
        let expected = [("leaf-0", "queued"), ("leaf-1", "queued"), ("split", "completed")]
            .map(|(key, status)| (key.to_string(), tick, status.to_string()));
        assert_eq!(
            steps, expected,
            "{kind}: the spawned steps under the schedule and its tick, and no later tick fired while they wait"
        );
    }
}
