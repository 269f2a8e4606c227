//! CWOM v0.1 over HTTP, on both stores: every kind created, read back and listed; the
//! JSON field names of CWOM.md; validation, Ref resolution, conflicts, final statuses and
//! immutability; the causality chain read back from the join tables; the service methods
//! the worker bridge calls. Each test runs against a SQLite file and a PostgreSQL database.

use crate::support;

use std::collections::BTreeSet;

use crate::support::{http, TestDb};
use chrono::{DateTime, Utc};
use devops_control_tower::cwom::types::{Failure, FailureCategory, ObjectKind, Status, Telemetry};
use devops_control_tower::cwom::CwomError;
use devops_control_tower::cwom_service::{Cwom, StartRun};
use devops_control_tower::handlers::Registry;
use devops_control_tower::store::Backend;
use reqwest::Method;
use serde_json::{json, Value};

const STORES: [&str; 2] = ["sqlite", "postgres"];

/// Small enough to test 413 cheaply, large enough for every body below.
const MAX_BODY: &str = "16384";

struct App {
    base: String,
    backend: Backend,
    db: TestDb,
    _daemon: support::InProcess,
}

async fn app_with(kind: &str, extra: &[(&str, &str)]) -> App {
    let db = TestDb::new(kind).await;
    let backend = db.backend().await;
    let mut config = vec![("JCT_MAX_BODY_BYTES", MAX_BODY)];
    config.extend_from_slice(extra);
    let daemon = support::start_in_process(&backend, &db.url(), &config, Registry::builtin()).await;
    App { base: daemon.base.clone(), backend, db, _daemon: daemon }
}

async fn app(kind: &str) -> App {
    app_with(kind, &[]).await
}

impl App {
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = http().request(method, format!("{}/cwom/{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// Creates and returns the object, asserting 201 and its Location.
    async fn create(&self, path: &str, body: Value) -> Value {
        let res = http().post(format!("{}/cwom/{path}", self.base)).json(&body).send().await.unwrap();
        let status = res.status().as_u16();
        let location = res.headers().get("location").map(|v| v.to_str().unwrap().to_string());
        let created: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "POST /cwom/{path} {body}: {created}");
        assert_eq!(location, Some(format!("/cwom/{path}/{}", created["id"].as_str().unwrap())));
        created
    }

    /// The object at `path`, asserting 200.
    async fn read(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET /cwom/{path}: {body}");
        body
    }

    /// The ids a list answers, in order.
    async fn ids(&self, path_and_query: &str) -> Vec<String> {
        let list = self.read(path_and_query).await;
        list.as_array()
            .unwrap_or_else(|| panic!("not a list: {list}"))
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}"))
}

fn r(kind: &str, target: &Value) -> Value {
    json!({"kind": kind, "id": id(target)})
}

fn r_role(kind: &str, target: &Value, role: &str) -> Value {
    json!({"kind": kind, "id": id(target), "role": role})
}

/// A Ref as the server answers it (role always present).
fn answered(kind: &str, target: &Value) -> Value {
    json!({"kind": kind, "id": id(target), "role": null})
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(String::as_str).collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, mentions: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(body["error"], want_code, "body: {body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("no message: {body}"));
    assert!(message.contains(mentions), "the message should mention {mentions:?}: {message}");
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().with_timezone(&Utc)
}

fn human(actor_id: &str) -> Value {
    json!({"actor_kind": "human", "actor_id": actor_id, "display": null})
}

fn repo_body() -> Value {
    let slug = format!("repo-{}", uuid::Uuid::new_v4().simple());
    json!({"name": "Control Tower", "slug": slug, "source": {"system": "github"}})
}

fn doctrine_body(namespace: &str, name: &str, version: &str) -> Value {
    json!({"namespace": namespace, "name": name, "version": version, "type": "policy", "statement": "Test first."})
}

/// One object of each kind, wired as CWOM.md's causality chain.
struct Chain {
    repo: Value,
    snapshot: Value,
    doctrine: Value,
    issue: Value,
    packet: Value,
    run: Value,
    artifact: Value,
}

async fn chain(app: &App) -> Chain {
    let repo = app.create("repos", repo_body()).await;
    let snapshot = app.create("constraint-snapshots", json!({"scope": "personal", "owner": human("ann")})).await;
    let ns = format!("eng-{}", uuid::Uuid::new_v4().simple());
    let doctrine = app.create("doctrine-refs", doctrine_body(&ns, "tests", "1")).await;
    let issue = app
        .create(
            "issues",
            json!({"repo": r("Repo", &repo), "title": "Add CWOM", "type": "feature",
                   "doctrine_refs": [r("DoctrineRef", &doctrine)], "constraints": [r("ConstraintSnapshot", &snapshot)]}),
        )
        .await;
    let packet = app
        .create(
            "context-packets",
            json!({"for_issue": r("Issue", &issue), "version": "1", "summary": "What we know",
                   "doctrine_refs": [r("DoctrineRef", &doctrine)],
                   "constraint_snapshot": r("ConstraintSnapshot", &snapshot)}),
        )
        .await;
    let run = app
        .create(
            "runs",
            json!({"for_issue": r("Issue", &issue), "repo": r("Repo", &repo), "mode": "agent",
                   "executor": {"actor": {"actor_kind": "agent", "actor_id": "claude"}, "runtime": "local"},
                   "inputs": {"context_packets": [r("ContextPacket", &packet)],
                              "doctrine_refs": [r("DoctrineRef", &doctrine)],
                              "constraint_snapshot": r("ConstraintSnapshot", &snapshot)}}),
        )
        .await;
    let artifact = app
        .create(
            "artifacts",
            json!({"produced_by": r("Run", &run), "for_issue": r("Issue", &issue), "type": "code_patch",
                   "title": "The patch", "uri": "file:///tmp/patch.diff"}),
        )
        .await;
    Chain { repo, snapshot, doctrine, issue, packet, run, artifact }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_is_created_read_back_and_listed() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        // Objects nothing else changed since their creation read back exactly as answered.
        for (path, created) in [
            ("repos", &c.repo),
            ("constraint-snapshots", &c.snapshot),
            ("doctrine-refs", &c.doctrine),
            ("context-packets", &c.packet),
            ("artifacts", &c.artifact),
        ] {
            assert_eq!(&app.read(&format!("{path}/{}", id(created))).await, created, "{store}: {path}");
            assert_eq!(app.ids(path).await, vec![id(created).to_string()], "{store}: list {path}");
        }
        // The Issue and the Run gained links after they were created; the rest is unchanged.
        for (path, created, grown) in
            [("issues", &c.issue, &["context_packets", "runs"][..]), ("runs", &c.run, &["outputs"][..])]
        {
            let mut read = app.read(&format!("{path}/{}", id(created))).await;
            let mut created = created.clone();
            for field in grown {
                read.as_object_mut().unwrap().remove(*field);
                created.as_object_mut().unwrap().remove(*field);
            }
            assert_eq!(read, created, "{store}: {path}");
            assert_eq!(app.ids(path).await, vec![id(&created).to_string()], "{store}: list {path}");
        }
        // Ids are UUID v7 (time-ordered), distinct across kinds; times are RFC 3339 UTC.
        let all = [&c.repo, &c.snapshot, &c.doctrine, &c.issue, &c.packet, &c.run, &c.artifact];
        let ids: BTreeSet<&str> = all.iter().map(|o| id(o)).collect();
        assert_eq!(ids.len(), 7, "{store}");
        for o in all {
            let uuid = uuid::Uuid::parse_str(id(o)).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{store}: {o}");
        }
        assert!(id(&c.repo) < id(&c.artifact), "{store}: ids sort by creation");
        assert!(c.repo["created_at"].as_str().unwrap().ends_with('Z'), "{store}");
        assert_eq!(c.repo["created_at"], c.repo["updated_at"], "{store}");
        assert!(time(&c.artifact["created_at"]) >= time(&c.repo["created_at"]), "{store}");
        assert!(time(&c.snapshot["captured_at"]) <= Utc::now(), "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_round_trips_use_the_contract_field_names() {
    let common = ["kind", "id", "tags", "meta", "created_at", "updated_at"];
    let with_common =
        |own: &[&'static str]| -> BTreeSet<&'static str> { common.iter().chain(own.iter()).copied().collect() };
    for store in STORES {
        let app = app(store).await;
        let meta = json!({"jct": {"team": "infra", "n": 1}});
        let tags = json!(["core", "v0.1"]);

        let repo_sent = json!({
            "kind": "Repo", "name": "Control Tower", "slug": "jct", "default_branch": "trunk",
            "source": {"system": "github", "external_id": "42", "url": "https://github.com/acme/jct"},
            "visibility": "internal", "owners": [{"actor_kind": "human", "actor_id": "ann", "display": "Ann"}],
            "policy": {"allowed_tools": ["cargo"], "secrets_profile": "ci"}, "links": ["https://acme.dev"],
            "tags": tags, "meta": meta});
        let repo = app.create("repos", repo_sent.clone()).await;
        assert_eq!(
            keys(&repo),
            with_common(&["name", "slug", "source", "default_branch", "visibility", "owners", "policy", "links"]),
            "{store}"
        );
        assert_eq!(keys(&repo["source"]), set(&["system", "external_id", "url"]));
        assert_eq!(keys(&repo["owners"][0]), set(&["actor_kind", "actor_id", "display"]));
        assert_eq!(keys(&repo["policy"]), set(&["allowed_tools", "secrets_profile"]));
        for (k, v) in repo_sent.as_object().unwrap() {
            assert_eq!(&repo[k], v, "{store}: Repo.{k}");
        }

        let snapshot_sent = json!({
            "kind": "ConstraintSnapshot", "scope": "run", "owner": {"actor_kind": "agent", "actor_id": "claude", "display": null},
            "constraints": {
                "time": {"available_minutes": 90, "deadline": "2026-12-01T00:00:00Z"},
                "energy": {"score_0_5": 4, "notes": "fresh"},
                "health": {"flags": ["rested"], "notes": null},
                "budget": {"usd_available": 12.5, "burn_limit_usd": 2.0},
                "tools": {"allowed": ["cargo"], "blocked": ["rm"]},
                "environment": {"location": "home", "connectivity": "limited", "device": "laptop"},
                "risk": {"tolerance": "low", "notes": "touches prod"}},
            "tags": tags, "meta": meta});
        let snapshot = app.create("constraint-snapshots", snapshot_sent.clone()).await;
        assert_eq!(
            keys(&snapshot),
            set(&["kind", "id", "tags", "meta", "captured_at", "scope", "owner", "constraints"]),
            "{store}: a snapshot has captured_at instead of created/updated"
        );
        let parts = &snapshot["constraints"];
        assert_eq!(keys(parts), set(&["time", "energy", "health", "budget", "tools", "environment", "risk"]));
        assert_eq!(keys(&parts["time"]), set(&["available_minutes", "deadline"]));
        assert_eq!(keys(&parts["energy"]), set(&["score_0_5", "notes"]));
        assert_eq!(keys(&parts["health"]), set(&["flags", "notes"]));
        assert_eq!(keys(&parts["budget"]), set(&["usd_available", "burn_limit_usd"]));
        assert_eq!(keys(&parts["tools"]), set(&["allowed", "blocked"]));
        assert_eq!(keys(&parts["environment"]), set(&["location", "connectivity", "device"]));
        assert_eq!(keys(&parts["risk"]), set(&["tolerance", "notes"]));
        for (k, v) in snapshot_sent.as_object().unwrap() {
            assert_eq!(&snapshot[k], v, "{store}: ConstraintSnapshot.{k}");
        }

        let doctrine_sent = json!({
            "kind": "DoctrineRef", "namespace": "eng", "name": "tests-first", "version": "2", "type": "procedure",
            "priority": "must", "statement": "Write the test first.", "rationale": "It fails first.",
            "links": ["https://acme.dev/doctrine"],
            "applicability": {"repo_refs": [{"kind": "Repo", "id": id(&repo), "role": "scope"}],
                              "issue_types": ["bug", "feature"], "tags": ["rust"]},
            "tags": tags, "meta": meta});
        let doctrine = app.create("doctrine-refs", doctrine_sent.clone()).await;
        assert_eq!(
            keys(&doctrine),
            with_common(&[
                "namespace",
                "name",
                "version",
                "type",
                "priority",
                "statement",
                "rationale",
                "links",
                "applicability"
            ]),
            "{store}"
        );
        assert_eq!(keys(&doctrine["applicability"]), set(&["repo_refs", "issue_types", "tags"]));
        assert_eq!(keys(&doctrine["applicability"]["repo_refs"][0]), set(&["kind", "id", "role"]));
        for (k, v) in doctrine_sent.as_object().unwrap() {
            assert_eq!(&doctrine[k], v, "{store}: DoctrineRef.{k}");
        }

        let parent = app.create("issues", json!({"repo": r("Repo", &repo), "title": "Epic", "type": "research"})).await;
        let issue_sent = json!({
            "kind": "Issue", "repo": r_role("Repo", &repo, "home"), "title": "Add CWOM", "description": "All of it.",
            "type": "feature", "priority": "P1", "status": "ready",
            "assignees": [human("ann")], "watchers": [human("bob")],
            "doctrine_refs": [r_role("DoctrineRef", &doctrine, "guides")],
            "constraints": [r_role("ConstraintSnapshot", &snapshot, "budget")],
            "context_packets": [],
            "acceptance": {"criteria": ["both stores"], "tests_expected": ["tests/cwom.rs"]},
            "relationships": {"parent": r_role("Issue", &parent, "epic"), "blocks": [],
                              "blocked_by": [r_role("Issue", &parent, "first")], "duplicates": []},
            "tags": tags, "meta": meta});
        let issue = app.create("issues", issue_sent.clone()).await;
        assert_eq!(
            keys(&issue),
            with_common(&[
                "repo",
                "title",
                "description",
                "type",
                "priority",
                "status",
                "assignees",
                "watchers",
                "doctrine_refs",
                "constraints",
                "context_packets",
                "acceptance",
                "relationships",
                "runs"
            ]),
            "{store}"
        );
        assert_eq!(keys(&issue["acceptance"]), set(&["criteria", "tests_expected"]));
        assert_eq!(keys(&issue["relationships"]), set(&["parent", "blocks", "blocked_by", "duplicates"]));
        assert_eq!(keys(&issue["repo"]), set(&["kind", "id", "role"]));
        for (k, v) in issue_sent.as_object().unwrap() {
            assert_eq!(&issue[k], v, "{store}: Issue.{k}");
        }
        assert_eq!(issue["runs"], json!([]), "{store}");

        let packet_sent = json!({
            "kind": "ContextPacket", "for_issue": r_role("Issue", &issue, "subject"), "version": "1.0",
            "summary": "What we know.",
            "inputs": {
                "documents": [{"title": "Spec", "uri": "file:///spec.md", "digest": "sha256:ab", "excerpt": "CWOM"}],
                "data_blobs": [{"name": "ids", "media_type": "text/csv", "uri": null, "inline": "a,b", "digest": null}],
                "links": ["https://acme.dev/cwom"]},
            "assumptions": ["postgres 15"], "open_questions": ["retention?"], "instructions": "Be brief.",
            "doctrine_refs": [r("DoctrineRef", &doctrine)],
            "constraint_snapshot": r_role("ConstraintSnapshot", &snapshot, "pinned"),
            "tags": tags, "meta": meta});
        let packet = app.create("context-packets", packet_sent.clone()).await;
        assert_eq!(
            keys(&packet),
            with_common(&[
                "for_issue",
                "version",
                "summary",
                "inputs",
                "assumptions",
                "open_questions",
                "instructions",
                "doctrine_refs",
                "constraint_snapshot"
            ]),
            "{store}"
        );
        assert_eq!(keys(&packet["inputs"]), set(&["documents", "data_blobs", "links"]));
        assert_eq!(keys(&packet["inputs"]["documents"][0]), set(&["title", "uri", "digest", "excerpt"]));
        assert_eq!(keys(&packet["inputs"]["data_blobs"][0]), set(&["name", "media_type", "uri", "inline", "digest"]));
        for (k, v) in packet_sent.as_object().unwrap() {
            let v = if k == "doctrine_refs" { &json!([answered("DoctrineRef", &doctrine)]) } else { v };
            assert_eq!(&packet[k], v, "{store}: ContextPacket.{k}");
        }

        let run_sent = json!({
            "kind": "Run", "for_issue": r("Issue", &issue), "repo": r("Repo", &repo), "status": "running",
            "mode": "hybrid",
            "executor": {"actor": {"actor_kind": "agent", "actor_id": "claude", "display": "Claude"},
                         "runtime": "container", "toolchain": ["rustc 1.95"]},
            "inputs": {"context_packets": [r_role("ContextPacket", &packet, "primary_context")],
                       "doctrine_refs": [r_role("DoctrineRef", &doctrine, "applies")],
                       "constraint_snapshot": r_role("ConstraintSnapshot", &snapshot, "pinned")},
            "plan": {"steps": ["types", "storage"], "risk_notes": "two dialects"},
            "telemetry": {"started_at": "2026-11-01T10:00:00.123456Z", "ended_at": null, "duration_s": null},
            "cost": {"usd": 0.25, "tokens": 1200, "compute_s": 3.5},
            "outputs": {"result_summary": "halfway", "decision_log": ["one table per kind"]},
            "failure": null, "tags": tags, "meta": meta});
        let run = app.create("runs", run_sent.clone()).await;
        assert_eq!(
            keys(&run),
            with_common(&[
                "for_issue",
                "repo",
                "status",
                "mode",
                "executor",
                "inputs",
                "plan",
                "telemetry",
                "cost",
                "outputs",
                "failure"
            ]),
            "{store}"
        );
        assert_eq!(keys(&run["executor"]), set(&["actor", "runtime", "toolchain"]));
        assert_eq!(keys(&run["inputs"]), set(&["context_packets", "doctrine_refs", "constraint_snapshot"]));
        assert_eq!(keys(&run["plan"]), set(&["steps", "risk_notes"]));
        assert_eq!(keys(&run["telemetry"]), set(&["started_at", "ended_at", "duration_s"]));
        assert_eq!(keys(&run["cost"]), set(&["usd", "tokens", "compute_s"]));
        assert_eq!(keys(&run["outputs"]), set(&["artifacts", "result_summary", "decision_log"]));
        for (k, v) in run_sent.as_object().unwrap() {
            let v = if k == "outputs" {
                &json!({"artifacts": [], "result_summary": "halfway", "decision_log": ["one table per kind"]})
            } else if k == "for_issue" || k == "repo" {
                &json!({"kind": v["kind"], "id": v["id"], "role": null})
            } else {
                v
            };
            assert_eq!(&run[k], v, "{store}: Run.{k}");
        }

        let artifact_sent = json!({
            "kind": "Artifact", "produced_by": r_role("Run", &run, "author"), "for_issue": r_role("Issue", &issue, "for"),
            "type": "code_patch", "title": "The patch", "uri": "file:///tmp/p.diff", "digest": "sha256:cd",
            "media_type": "text/x-diff", "size_bytes": 1234, "preview": "+fn cwom()",
            "verification": {"status": "passed",
                             "checks": [{"name": "ci", "status": "passed", "evidence_uri": "https://ci/1"}]},
            "tags": tags, "meta": meta});
        let artifact = app.create("artifacts", artifact_sent.clone()).await;
        assert_eq!(
            keys(&artifact),
            with_common(&[
                "produced_by",
                "for_issue",
                "type",
                "title",
                "uri",
                "digest",
                "media_type",
                "size_bytes",
                "preview",
                "verification"
            ]),
            "{store}"
        );
        assert_eq!(keys(&artifact["verification"]), set(&["status", "checks"]));
        assert_eq!(keys(&artifact["verification"]["checks"][0]), set(&["name", "status", "evidence_uri"]));
        for (k, v) in artifact_sent.as_object().unwrap() {
            assert_eq!(&artifact[k], v, "{store}: Artifact.{k}");
        }

        // What the server stored reads back the same (every column and list survives).
        for (path, o) in [
            ("repos", &repo),
            ("constraint-snapshots", &snapshot),
            ("doctrine-refs", &doctrine),
            ("context-packets", &packet),
            ("artifacts", &artifact),
        ] {
            assert_eq!(&app.read(&format!("{path}/{}", id(o))).await, o, "{store}: {path}");
        }
        let run_read = app.read(&format!("runs/{}", id(&run))).await;
        assert_eq!(run_read["outputs"]["artifacts"], json!([answered("Artifact", &artifact)]), "{store}");
        assert_eq!(run_read["inputs"], run["inputs"], "{store}");
        let issue_read = app.read(&format!("issues/{}", id(&issue))).await;
        assert_eq!(issue_read["doctrine_refs"], issue["doctrine_refs"], "{store}: roles kept");
        assert_eq!(issue_read["constraints"], issue["constraints"], "{store}");
        assert_eq!(issue_read["relationships"], issue["relationships"], "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_fill_what_is_not_sent() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        assert_eq!(c.repo["default_branch"], "main", "{store}");
        assert_eq!(c.repo["visibility"], "private", "{store}");
        assert_eq!((&c.repo["owners"], &c.repo["policy"], &c.repo["links"]), (&json!([]), &Value::Null, &json!([])));
        assert_eq!((&c.repo["tags"], &c.repo["meta"]), (&json!([]), &json!({})), "{store}");
        assert_eq!(c.repo["source"], json!({"system": "github", "external_id": null, "url": null}), "{store}");
        assert_eq!(c.issue["priority"], "P2", "{store}");
        assert_eq!(c.issue["status"], "planned", "{store}");
        assert_eq!(c.issue["description"], "", "{store}");
        assert_eq!(c.issue["acceptance"], json!({"criteria": [], "tests_expected": null}), "{store}");
        assert_eq!(
            c.issue["relationships"],
            json!({"parent": null, "blocks": [], "blocked_by": [], "duplicates": []}),
            "{store}"
        );
        assert_eq!(c.packet["instructions"], "", "{store}");
        assert_eq!(c.packet["inputs"], json!({"documents": [], "data_blobs": [], "links": []}), "{store}");
        assert_eq!(c.doctrine["priority"], "should", "{store}");
        assert_eq!(c.doctrine["rationale"], Value::Null, "{store}");
        assert_eq!(c.doctrine["applicability"], json!({"repo_refs": [], "issue_types": [], "tags": []}), "{store}");
        assert_eq!(
            c.snapshot["constraints"],
            json!({"time": null, "energy": null, "health": null, "budget": null, "tools": null,
                   "environment": null, "risk": null}),
            "{store}"
        );
        assert_eq!(c.run["status"], "planned", "{store}");
        assert_eq!(c.run["failure"], Value::Null, "{store}");
        assert_eq!(c.run["plan"], json!({"steps": [], "risk_notes": null}), "{store}");
        assert_eq!(c.run["telemetry"], json!({"started_at": null, "ended_at": null, "duration_s": null}));
        assert_eq!(c.run["cost"], json!({"usd": null, "tokens": null, "compute_s": null}), "{store}");
        assert_eq!(c.run["executor"]["toolchain"], json!([]), "{store}");
        assert_eq!(c.artifact["verification"], json!({"status": "unverified", "checks": []}), "{store}");
        assert_eq!(c.artifact["size_bytes"], Value::Null, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_422_naming_the_field() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let issue = |extra: Value| {
            let mut b = json!({"repo": r("Repo", &c.repo), "title": "T", "type": "bug"});
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        let artifact = |extra: Value| {
            let mut b = json!({"produced_by": r("Run", &c.run), "for_issue": r("Issue", &c.issue),
                               "type": "log", "title": "log", "uri": "file:///log"});
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        let actor = json!({"actor_kind": "human", "actor_id": "ann"});
        let executor = json!({"actor": actor, "runtime": "local"});
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            ("repos", json!({"name": "n", "source": {"system": "github"}}), "invalid_field", "slug"),
            (
                "repos",
                json!({"name": "n", "slug": "s", "source": {"system": "github"}, "colour": "red"}),
                "invalid_field",
                "colour",
            ),
            (
                "repos",
                json!({"id": "mine", "name": "n", "slug": "s", "source": {"system": "github"}}),
                "invalid_field",
                "`id`",
            ),
            (
                "repos",
                json!({"name": "x".repeat(257), "slug": "s", "source": {"system": "github"}}),
                "invalid_field",
                "name: must be 1 to 256",
            ),
            ("repos", json!({"name": "n", "slug": "s", "source": {"system": ""}}), "invalid_field", "source.system"),
            (
                "repos",
                json!({"name": "n", "slug": "s", "source": {"system": "gh"}, "visibility": "secret"}),
                "invalid_field",
                "visibility: unknown variant `secret`",
            ),
            (
                "repos",
                json!({"kind": "Issue", "name": "n", "slug": "s", "source": {"system": "gh"}}),
                "invalid_field",
                "kind:",
            ),
            (
                "repos",
                json!({"name": "n", "slug": "s", "source": {"system": "gh"}, "owners": [{"actor_kind": "robot", "actor_id": "r"}]}),
                "invalid_field",
                "owners[0].actor_kind: unknown variant `robot`",
            ),
            ("issues", issue(json!({"priority": "P9"})), "invalid_field", "priority: unknown variant `P9`"),
            ("issues", issue(json!({"title": ""})), "invalid_field", "title: must be 1 to 512"),
            ("issues", issue(json!({"runs": [r("Run", &c.run)]})), "invalid_field", "`runs`"),
            (
                "issues",
                issue(json!({"assignees": [{"actor_kind": "human", "actor_id": ""}]})),
                "invalid_field",
                "assignees[0].actor_id",
            ),
            ("issues", issue(json!({"repo": r("Issue", &c.issue)})), "invalid_ref", "repo: must be a Ref to a Repo"),
            (
                "issues",
                issue(json!({"doctrine_refs": [r("DoctrineRef", &c.doctrine), r("DoctrineRef", &c.doctrine)]})),
                "invalid_field",
                "doctrine_refs[1]",
            ),
            ("issues", issue(json!({"repo": {"kind": "Repo", "id": "x".repeat(129)}})), "invalid_field", "repo.id"),
            (
                "context-packets",
                json!({"for_issue": r("Issue", &c.issue), "version": "2", "summary": "s".repeat(4001)}),
                "invalid_field",
                "summary: must be 1 to 4000",
            ),
            (
                "context-packets",
                json!({"for_issue": r("Issue", &c.issue), "version": "", "summary": "s"}),
                "invalid_field",
                "version",
            ),
            (
                "constraint-snapshots",
                json!({"scope": "run", "owner": actor, "constraints": {"energy": {"score_0_5": 6}}}),
                "invalid_field",
                "constraints.energy.score_0_5",
            ),
            (
                "constraint-snapshots",
                json!({"scope": "run", "owner": actor, "constraints": {"budget": {"usd_available": -1.0}}}),
                "invalid_field",
                "constraints.budget.usd_available",
            ),
            (
                "constraint-snapshots",
                json!({"scope": "run", "owner": {"actor_kind": "human", "actor_id": ""}}),
                "invalid_field",
                "owner.actor_id",
            ),
            (
                "constraint-snapshots",
                json!({"scope": "run", "owner": actor, "captured_at": "2026-01-01T00:00:00Z"}),
                "invalid_field",
                "`captured_at`",
            ),
            ("constraint-snapshots", json!({"scope": "galaxy", "owner": actor}), "invalid_field", "scope:"),
            (
                "doctrine-refs",
                json!({"namespace": "n", "name": "x", "version": "1", "type": "rule", "statement": "s"}),
                "invalid_field",
                "type: unknown variant `rule`",
            ),
            (
                "doctrine-refs",
                json!({"namespace": "n".repeat(129), "name": "x", "version": "1", "type": "policy", "statement": "s"}),
                "invalid_field",
                "namespace",
            ),
            (
                "runs",
                json!({"for_issue": r("Issue", &c.issue), "repo": r("Repo", &c.repo), "executor": executor}),
                "invalid_field",
                "`mode`",
            ),
            (
                "runs",
                json!({"for_issue": r("Issue", &c.issue), "repo": r("Repo", &c.repo), "mode": "agent", "executor": executor,
                            "outputs": {"artifacts": [r("Artifact", &c.artifact)]}}),
                "invalid_field",
                "outputs.artifacts",
            ),
            (
                "runs",
                json!({"for_issue": r("Issue", &c.issue), "repo": r("Repo", &c.repo), "mode": "agent", "executor": executor,
                            "cost": {"usd": -0.5}}),
                "invalid_field",
                "cost.usd",
            ),
            (
                "runs",
                json!({"for_issue": r("Issue", &c.issue), "repo": r("Repo", &c.repo), "mode": "agent", "executor": executor,
                            "failure": {"category": "cosmic", "message": "m"}}),
                "invalid_field",
                "failure.category: unknown variant `cosmic`",
            ),
            ("artifacts", artifact(json!({"size_bytes": -1})), "invalid_field", "size_bytes: must be at least 0"),
            ("artifacts", artifact(json!({"type": "zip"})), "invalid_field", "type: unknown variant `zip`"),
            ("artifacts", artifact(json!({"preview": "p".repeat(4001)})), "invalid_field", "preview"),
            ("artifacts", artifact(json!({"uri": ""})), "invalid_field", "uri: must be 1 to 2000"),
            (
                "artifacts",
                artifact(json!({"produced_by": r("Issue", &c.issue)})),
                "invalid_ref",
                "produced_by: must be a Ref to a Run",
            ),
            ("issues", json!([1, 2]), "invalid_field", "body: must be a JSON object"),
        ];
        for (path, body, code, mentions) in cases {
            let (status, answer) = app.post(path, &body).await;
            assert_error(status, &answer, 422, code, mentions);
        }
        // Nothing of the refused bodies was stored.
        assert_eq!(app.ids("repos").await.len(), 1, "{store}");
        assert_eq!(app.ids("issues").await.len(), 1, "{store}");
        assert_eq!(app.ids("artifacts").await.len(), 1, "{store}");

        // The body is read exactly like /tasks reads it.
        let post = |ct: Option<&'static str>, body: String| {
            let mut req = http().post(format!("{}/cwom/repos", app.base)).body(body);
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            async move {
                let res = req.send().await.unwrap();
                (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let (status, body) = post(Some("application/json"), "{oops".into()).await;
        assert_error(status, &body, 400, "malformed_json", "JSON");
        let (status, body) = post(Some("text/plain"), repo_body().to_string()).await;
        assert_error(status, &body, 415, "unsupported_media_type", "JSON");
        let (status, body) = post(None, repo_body().to_string()).await;
        assert_error(status, &body, 415, "unsupported_media_type", "JSON");
        let big = json!({"name": "n", "slug": "s", "source": {"system": "gh"}, "links": ["x".repeat(20_000)]});
        let (status, body) = post(Some("application/json"), big.to_string()).await;
        assert_error(status, &body, 413, "payload_too_large", MAX_BODY);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_to_missing_objects_are_422_naming_the_ref() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let other_repo = app.create("repos", repo_body()).await;
        let other_issue =
            app.create("issues", json!({"repo": r("Repo", &other_repo), "title": "Elsewhere", "type": "chore"})).await;
        let missing = |kind: &str| json!({"kind": kind, "id": uuid::Uuid::now_v7().to_string()});
        let actor = json!({"actor_kind": "human", "actor_id": "ann"});
        let run = |extra: Value| {
            let mut b = json!({"for_issue": r("Issue", &c.issue), "repo": r("Repo", &c.repo), "mode": "human",
                               "executor": {"actor": actor, "runtime": "local"}});
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        let cases: Vec<(&str, Value, &str)> = vec![
            ("issues", json!({"repo": missing("Repo"), "title": "T", "type": "bug"}), "repo: no Repo with id"),
            (
                "issues",
                json!({"repo": r("Repo", &c.repo), "title": "T", "type": "bug",
                       "doctrine_refs": [r("DoctrineRef", &c.doctrine), missing("DoctrineRef")]}),
                "doctrine_refs[1]: no DoctrineRef",
            ),
            (
                "issues",
                json!({"repo": r("Repo", &c.repo), "title": "T", "type": "bug", "constraints": [missing("ConstraintSnapshot")]}),
                "constraints[0]: no ConstraintSnapshot",
            ),
            (
                "issues",
                json!({"repo": r("Repo", &c.repo), "title": "T", "type": "bug",
                       "relationships": {"parent": missing("Issue")}}),
                "relationships.parent: no Issue",
            ),
            (
                "issues",
                json!({"repo": r("Repo", &c.repo), "title": "T", "type": "bug",
                       "relationships": {"blocks": [r("Issue", &c.issue), missing("Issue")]}}),
                "relationships.blocks[1]",
            ),
            (
                "context-packets",
                json!({"for_issue": missing("Issue"), "version": "1", "summary": "s"}),
                "for_issue: no Issue",
            ),
            (
                "context-packets",
                json!({"for_issue": r("Issue", &c.issue), "version": "1", "summary": "s",
                       "constraint_snapshot": missing("ConstraintSnapshot")}),
                "constraint_snapshot: no ConstraintSnapshot",
            ),
            (
                "doctrine-refs",
                json!({"namespace": "n", "name": "x", "version": "1", "type": "policy", "statement": "s",
                       "applicability": {"repo_refs": [missing("Repo")]}}),
                "applicability.repo_refs[0]: no Repo",
            ),
            ("runs", run(json!({"for_issue": missing("Issue")})), "for_issue: no Issue"),
            (
                "runs",
                run(json!({"inputs": {"context_packets": [missing("ContextPacket")]}})),
                "inputs.context_packets[0]",
            ),
            ("runs", run(json!({"inputs": {"doctrine_refs": [missing("DoctrineRef")]}})), "inputs.doctrine_refs[0]"),
            (
                "runs",
                run(json!({"inputs": {"constraint_snapshot": missing("ConstraintSnapshot")}})),
                "inputs.constraint_snapshot: no ConstraintSnapshot",
            ),
            ("runs", run(json!({"repo": r("Repo", &other_repo)})), "repo: must be the Repo of Issue"),
            (
                "artifacts",
                json!({"produced_by": missing("Run"), "for_issue": r("Issue", &c.issue), "type": "log",
                       "title": "t", "uri": "file:///x"}),
                "produced_by: no Run",
            ),
            (
                "artifacts",
                json!({"produced_by": r("Run", &c.run), "for_issue": r("Issue", &other_issue), "type": "log",
                       "title": "t", "uri": "file:///x"}),
                "for_issue: must be the Issue of Run",
            ),
        ];
        for (path, body, mentions) in cases {
            let (status, answer) = app.post(path, &body).await;
            assert_error(status, &answer, 422, "invalid_ref", mentions);
        }
        // Nothing half-written: no new object and no new link.
        assert_eq!(app.ids("issues").await.len(), 2, "{store}");
        assert_eq!(app.ids("context-packets").await, vec![id(&c.packet).to_string()], "{store}");
        assert_eq!(app.ids("runs").await, vec![id(&c.run).to_string()], "{store}");
        assert_eq!(app.ids("artifacts").await, vec![id(&c.artifact).to_string()], "{store}");
        assert_eq!(app.ids("doctrine-refs").await.len(), 1, "{store}");
        let issue = app.read(&format!("issues/{}", id(&c.issue))).await;
        assert_eq!(issue["context_packets"], json!([answered("ContextPacket", &c.packet)]), "{store}");
        assert_eq!(issue["runs"], json!([answered("Run", &c.run)]), "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_409() {
    for store in STORES {
        let app = app(store).await;
        let repo = app.create("repos", repo_body()).await;
        let mut again = repo_body();
        again["slug"] = repo["slug"].clone();
        again["name"] = json!("A new name");
        let (status, body) = app.post("repos", &again).await;
        assert_error(status, &body, 409, "already_exists", repo["slug"].as_str().unwrap());
        assert_eq!(app.ids("repos").await.len(), 1, "{store}");

        app.create("doctrine-refs", doctrine_body("eng", "tests", "1")).await;
        let (status, body) = app.post("doctrine-refs", &doctrine_body("eng", "tests", "1")).await;
        assert_error(status, &body, 409, "already_exists", "eng/tests version \"1\"");
        // Any one of the three differing is a different doctrine.
        app.create("doctrine-refs", doctrine_body("eng", "tests", "2")).await;
        app.create("doctrine-refs", doctrine_body("ops", "tests", "1")).await;
        app.create("doctrine-refs", doctrine_body("eng", "reviews", "1")).await;
        assert_eq!(app.ids("doctrine-refs").await.len(), 4, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_statuses_cannot_be_left() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let issue = format!("issues/{}", id(&c.issue));
        for status in ["ready", "blocked", "running", "done"] {
            let (code, body) = app.patch(&issue, &json!({"status": status})).await;
            assert_eq!((code, &body["status"]), (200, &json!(status)), "{store}: {body}");
        }
        let (code, body) = app.patch(&issue, &json!({"status": "planned"})).await;
        assert_error(code, &body, 409, "final_status", "done");
        assert_eq!((&body["kind"], &body["id"], &body["status"]), (&json!("Issue"), &c.issue["id"], &json!("done")));
        let (code, body) = app.patch(&issue, &json!({"status": "canceled"})).await;
        assert_error(code, &body, 409, "final_status", "canceled");
        assert_eq!(app.read(&issue).await["status"], "done", "{store}: unchanged");
        // Staying final and changing other fields are not transitions.
        let (code, body) = app.patch(&issue, &json!({"status": "done", "title": "Shipped"})).await;
        assert_eq!((code, &body["title"]), (200, &json!("Shipped")), "{store}: {body}");

        let run = format!("runs/{}", id(&c.run));
        let (code, _) = app.patch(&run, &json!({"status": "running"})).await;
        assert_eq!(code, 200, "{store}");
        let (code, _) =
            app.patch(&run, &json!({"status": "failed", "failure": {"category": "test", "message": "red"}})).await;
        assert_eq!(code, 200, "{store}");
        for to in ["running", "done", "planned"] {
            let (code, body) = app.patch(&run, &json!({"status": to})).await;
            assert_error(code, &body, 409, "final_status", "failed");
        }
        let stored = app.read(&run).await;
        assert_eq!(stored["status"], "failed", "{store}");
        assert_eq!(stored["failure"], json!({"category": "test", "message": "red"}), "{store}");

        let second = app
            .create(
                "issues",
                json!({"repo": r("Repo", &c.repo), "title": "Never mind", "type": "chore", "status": "canceled"}),
            )
            .await;
        let (code, body) = app.patch(&format!("issues/{}", id(&second)), &json!({"status": "ready"})).await;
        assert_error(code, &body, 409, "final_status", "canceled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_packets_and_snapshots_are_immutable() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        for (path, o) in [("context-packets", &c.packet), ("constraint-snapshots", &c.snapshot)] {
            let item = format!("{path}/{}", id(o));
            for method in [Method::PUT, Method::PATCH] {
                let (code, body) = app.send(method.clone(), &item, Some(&json!({"summary": "changed"}))).await;
                assert_error(code, &body, 405, "immutable_object", "immutable");
            }
            // Even for an id that does not exist: immutability is the kind's, not the object's.
            let (code, body) = app.send(Method::PATCH, &format!("{path}/nope"), Some(&json!({}))).await;
            assert_error(code, &body, 405, "immutable_object", "immutable");
            assert_eq!(&app.read(&item).await, o, "{store}: {path} unchanged");
        }
        // Kinds without a PATCH route, and methods no route takes.
        let (code, body) = app.patch(&format!("repos/{}", id(&c.repo)), &json!({"name": "x"})).await;
        assert_error(code, &body, 405, "method_not_allowed", "method");
        let (code, body) = app.send(Method::DELETE, &format!("issues/{}", id(&c.issue)), None).await;
        assert_error(code, &body, 405, "method_not_allowed", "method");
        let (code, body) = app.send(Method::PUT, &format!("issues/{}", id(&c.issue)), Some(&json!({}))).await;
        assert_error(code, &body, 405, "method_not_allowed", "method");
        let (code, body) = app.send(Method::DELETE, "repos", None).await;
        assert_error(code, &body, 405, "method_not_allowed", "method");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_objects_and_unknown_kinds_are_404() {
    for store in STORES {
        let app = app(store).await;
        for kind in ObjectKind::ALL {
            let missing = uuid::Uuid::now_v7().to_string();
            let (code, body) = app.get(&format!("{}/{missing}", kind.path())).await;
            assert_error(code, &body, 404, "object_not_found", &missing);
            assert_eq!(body["kind"], kind.as_str(), "{store}");
        }
        let (code, body) = app.patch("issues/nope", &json!({"title": "x"})).await;
        assert_error(code, &body, 404, "object_not_found", "nope");
        let (code, body) = app.patch("runs/nope", &json!({"status": "done"})).await;
        assert_error(code, &body, 404, "object_not_found", "nope");
        let (code, body) = app.get("widgets").await;
        assert_error(code, &body, 404, "not_found", "route");
        let (code, body) = app.post("widgets", &json!({})).await;
        assert_error(code, &body, 404, "not_found", "route");
        let (code, body) = app.get("widgets/1").await;
        assert_error(code, &body, 404, "not_found", "route");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_causality_chain_reads_back() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let issue_path = format!("issues/{}", id(&c.issue));
        let run_path = format!("runs/{}", id(&c.run));

        // The packet joined its Issue when it was created; the Run joined the Issue's runs.
        let issue = app.read(&issue_path).await;
        assert_eq!(issue["context_packets"], json!([answered("ContextPacket", &c.packet)]), "{store}");
        assert_eq!(issue["doctrine_refs"], json!([answered("DoctrineRef", &c.doctrine)]), "{store}");
        assert_eq!(issue["constraints"], json!([answered("ConstraintSnapshot", &c.snapshot)]), "{store}");
        assert_eq!(issue["runs"], json!([answered("Run", &c.run)]), "{store}");
        assert!(c.issue["context_packets"].as_array().unwrap().is_empty(), "{store}: it had none when created");

        // The packet pins its doctrine and snapshot.
        assert_eq!(c.packet["doctrine_refs"], json!([answered("DoctrineRef", &c.doctrine)]), "{store}");
        assert_eq!(c.packet["constraint_snapshot"], answered("ConstraintSnapshot", &c.snapshot), "{store}");

        // The Run consumed them, and its artifact is in its outputs.
        let run = app.read(&run_path).await;
        assert_eq!(run["inputs"]["context_packets"], json!([answered("ContextPacket", &c.packet)]), "{store}");
        assert_eq!(run["inputs"]["doctrine_refs"], json!([answered("DoctrineRef", &c.doctrine)]), "{store}");
        assert_eq!(run["inputs"]["constraint_snapshot"], answered("ConstraintSnapshot", &c.snapshot), "{store}");
        assert_eq!(run["outputs"]["artifacts"], json!([answered("Artifact", &c.artifact)]), "{store}");
        assert_eq!(c.run["outputs"]["artifacts"], json!([]), "{store}: it had none when created");
        assert_eq!(c.artifact["produced_by"], answered("Run", &c.run), "{store}");
        assert_eq!(c.artifact["for_issue"], answered("Issue", &c.issue), "{store}");

        // More of each: lists keep creation order, and each link lands on its own owner.
        let packet2 = app
            .create(
                "context-packets",
                json!({"for_issue": r_role("Issue", &c.issue, "update"), "version": "2", "summary": "More"}),
            )
            .await;
        let run2 = app
            .create(
                "runs",
                json!({"for_issue": r("Issue", &c.issue), "repo": r("Repo", &c.repo), "mode": "human",
                       "executor": {"actor": {"actor_kind": "human", "actor_id": "ann"}, "runtime": "local"},
                       "inputs": {"context_packets": [r("ContextPacket", &packet2), r("ContextPacket", &c.packet)]}}),
            )
            .await;
        let mut artifacts = Vec::new();
        for n in 0..3 {
            let a = app
                .create(
                    "artifacts",
                    json!({"produced_by": r("Run", &run2), "for_issue": r("Issue", &c.issue), "type": "log",
                           "title": format!("log {n}"), "uri": format!("file:///log/{n}")}),
                )
                .await;
            artifacts.push(answered("Artifact", &a));
        }
        let issue = app.read(&issue_path).await;
        assert_eq!(
            issue["context_packets"],
            json!([answered("ContextPacket", &c.packet), answered("ContextPacket", &packet2)]),
            "{store}"
        );
        assert_eq!(issue["runs"], json!([answered("Run", &c.run), answered("Run", &run2)]), "{store}");
        let run2_read = app.read(&format!("runs/{}", id(&run2))).await;
        assert_eq!(run2_read["outputs"]["artifacts"], json!(artifacts), "{store}");
        assert_eq!(
            run2_read["inputs"]["context_packets"],
            json!([answered("ContextPacket", &packet2), answered("ContextPacket", &c.packet)]),
            "{store}: the order given is kept"
        );
        let run1_read = app.read(&run_path).await;
        assert_eq!(run1_read["outputs"]["artifacts"], json!([answered("Artifact", &c.artifact)]), "{store}");

        // The same links, queried from the other side through the list filters.
        let by_run = app.ids(&format!("artifacts?run_id={}", id(&run2))).await;
        assert_eq!(by_run.len(), 3, "{store}");
        assert_eq!(app.ids(&format!("artifacts?issue_id={}", id(&c.issue))).await.len(), 4, "{store}");
        assert_eq!(
            app.ids(&format!("runs?issue_id={}", id(&c.issue))).await,
            vec![id(&run2).to_string(), id(&c.run).to_string()],
            "{store}: newest first"
        );

        // A patch that rewrites the Issue's lists keeps the packet links it does not name.
        let (code, patched) = app
            .patch(
                &issue_path,
                &json!({"doctrine_refs": [], "constraints": [r_role("ConstraintSnapshot", &c.snapshot, "budget")]}),
            )
            .await;
        assert_eq!(code, 200, "{store}: {patched}");
        assert_eq!(patched["doctrine_refs"], json!([]), "{store}");
        assert_eq!(patched["constraints"], json!([r_role("ConstraintSnapshot", &c.snapshot, "budget")]), "{store}");
        assert_eq!(patched["context_packets"], issue["context_packets"], "{store}");
        assert_eq!(patched["runs"], issue["runs"], "{store}");
        assert_eq!(app.read(&issue_path).await, patched, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_and_runs_are_patched() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let issue_path = format!("issues/{}", id(&c.issue));
        let before = app.read(&issue_path).await;
        let (code, issue) = app
            .patch(
                &issue_path,
                &json!({"title": "Add CWOM v0.1", "description": "Types, storage, API.", "type": "chore",
                        "priority": "P0", "assignees": [human("bob")], "tags": ["cwom"], "meta": {"x": 1},
                        "acceptance": {"criteria": ["green"], "tests_expected": null}}),
            )
            .await;
        assert_eq!(code, 200, "{store}: {issue}");
        assert_eq!(
            (&issue["title"], &issue["description"], &issue["type"], &issue["priority"]),
            (&json!("Add CWOM v0.1"), &json!("Types, storage, API."), &json!("chore"), &json!("P0")),
            "{store}"
        );
        assert_eq!(issue["assignees"], json!([human("bob")]), "{store}");
        assert_eq!((&issue["tags"], &issue["meta"]), (&json!(["cwom"]), &json!({"x": 1})), "{store}");
        assert_eq!(issue["status"], before["status"], "{store}: fields not sent are kept");
        assert_eq!(issue["created_at"], before["created_at"], "{store}");
        assert!(time(&issue["updated_at"]) > time(&before["updated_at"]), "{store}");
        assert_eq!(app.read(&issue_path).await, issue, "{store}");

        for (body, code, mentions) in [
            (json!({"repo": r("Repo", &c.repo)}), "invalid_field", "`repo`"),
            (json!({"runs": []}), "invalid_field", "`runs`"),
            (json!({"priority": "urgent"}), "invalid_field", "priority"),
            (json!({"title": ""}), "invalid_field", "title"),
            (
                json!({"constraints": [{"kind": "ConstraintSnapshot", "id": "missing"}]}),
                "invalid_ref",
                "constraints[0]",
            ),
            (json!({"relationships": {"parent": r("Issue", &c.issue)}}), "invalid_field", "own parent"),
        ] {
            let (status, answer) = app.patch(&issue_path, &body).await;
            assert_error(status, &answer, 422, code, mentions);
        }
        assert_eq!(app.read(&issue_path).await, issue, "{store}: refused patches change nothing");

        let run_path = format!("runs/{}", id(&c.run));
        let (code, run) = app
            .patch(&run_path, &json!({"status": "running", "telemetry": {"started_at": "2026-11-01T10:00:00Z"}}))
            .await;
        assert_eq!(code, 200, "{store}: {run}");
        assert_eq!(run["telemetry"]["duration_s"], Value::Null, "{store}");
        let (code, run) = app
            .patch(
                &run_path,
                &json!({"status": "done", "telemetry": {"ended_at": "2026-11-01T10:01:30.5Z"},
                        "cost": {"usd": 0.5, "tokens": 900}, "outputs": {"result_summary": "shipped",
                        "decision_log": ["kept it small"]}}),
            )
            .await;
        assert_eq!(code, 200, "{store}: {run}");
        assert_eq!(run["status"], "done", "{store}");
        assert_eq!(
            run["telemetry"],
            json!({"started_at": "2026-11-01T10:00:00Z", "ended_at": "2026-11-01T10:01:30.500Z", "duration_s": 90.5}),
            "{store}: telemetry merges, the duration is computed"
        );
        assert_eq!(run["cost"], json!({"usd": 0.5, "tokens": 900, "compute_s": null}), "{store}");
        assert_eq!(
            run["outputs"],
            json!({"artifacts": [answered("Artifact", &c.artifact)], "result_summary": "shipped",
                   "decision_log": ["kept it small"]}),
            "{store}: the artifacts stay the server's"
        );
        let (code, run) = app.patch(&run_path, &json!({"cost": {"compute_s": 12.0}})).await;
        assert_eq!(code, 200, "{store}");
        assert_eq!(run["cost"], json!({"usd": 0.5, "tokens": 900, "compute_s": 12.0}), "{store}");
        let (code, run) = app.patch(&run_path, &json!({"failure": {"category": "test", "message": "flaky"}})).await;
        assert_eq!((code, &run["failure"]), (200, &json!({"category": "test", "message": "flaky"})), "{store}");
        let (code, run) = app.patch(&run_path, &json!({"failure": null})).await;
        assert_eq!((code, &run["failure"]), (200, &Value::Null), "{store}: null clears the failure");
        assert_eq!(app.read(&run_path).await, run, "{store}");

        for (body, mentions) in [
            (json!({"outputs": {"artifacts": [r("Artifact", &c.artifact)]}}), "outputs.artifacts"),
            (json!({"mode": "human"}), "`mode`"),
            (json!({"telemetry": {"duration_s": -1.0}}), "telemetry.duration_s"),
            (json!({"telemetry": {"ended_at": "2026-11-01T09:00:00Z"}}), "telemetry.ended_at"),
            (json!({"status": "finished"}), "status"),
        ] {
            let (status, answer) = app.patch(&run_path, &body).await;
            assert_error(status, &answer, 422, "invalid_field", mentions);
        }
        assert_eq!(app.read(&run_path).await, run, "{store}: refused patches change nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_page_newest_first() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let public = app
            .create("repos", {
                let mut b = repo_body();
                b["visibility"] = json!("public");
                b
            })
            .await;
        assert_eq!(app.ids("repos?visibility=public").await, vec![id(&public).to_string()], "{store}");
        assert_eq!(app.ids("repos?visibility=private").await, vec![id(&c.repo).to_string()], "{store}");
        assert_eq!(app.ids("repos").await, vec![id(&public).to_string(), id(&c.repo).to_string()], "{store}");

        let mut issues = vec![c.issue.clone()];
        for (title, ty, priority, status) in
            [("a", "bug", "P0", "ready"), ("b", "bug", "P3", "planned"), ("c", "ops", "P0", "blocked")]
        {
            issues.push(
                app.create(
                    "issues",
                    json!({"repo": r("Repo", &c.repo), "title": title, "type": ty, "priority": priority, "status": status}),
                )
                .await,
            );
        }
        let elsewhere = app.create("issues", json!({"repo": r("Repo", &public), "title": "d", "type": "bug"})).await;
        let ids = |list: &[&Value]| list.iter().map(|o| id(o).to_string()).collect::<Vec<_>>();
        assert_eq!(app.ids("issues?type=bug").await, ids(&[&elsewhere, &issues[2], &issues[1]]), "{store}");
        assert_eq!(app.ids("issues?priority=P0").await, ids(&[&issues[3], &issues[1]]), "{store}");
        assert_eq!(app.ids("issues?status=planned&type=bug").await, ids(&[&elsewhere, &issues[2]]), "{store}");
        assert_eq!(app.ids(&format!("issues?repo_id={}", id(&public))).await, ids(&[&elsewhere]), "{store}");
        assert_eq!(app.ids(&format!("issues?repo_id={}&type=ops", id(&c.repo))).await, ids(&[&issues[3]]));
        assert_eq!(app.ids("issues?limit=2").await, ids(&[&elsewhere, &issues[3]]), "{store}");
        assert_eq!(app.ids("issues?limit=2&offset=2").await, ids(&[&issues[2], &issues[1]]), "{store}");
        assert_eq!(app.ids("issues?offset=10").await, Vec::<String>::new(), "{store}");

        let run2 = app
            .create(
                "runs",
                json!({"for_issue": r("Issue", &elsewhere), "repo": r("Repo", &public), "mode": "system",
                       "status": "running", "executor": {"actor": {"actor_kind": "system", "actor_id": "jct"},
                       "runtime": "ci"}}),
            )
            .await;
        assert_eq!(app.ids("runs?mode=system").await, ids(&[&run2]), "{store}");
        assert_eq!(app.ids("runs?mode=agent").await, ids(&[&c.run]), "{store}");
        assert_eq!(app.ids("runs?status=running").await, ids(&[&run2]), "{store}");
        assert_eq!(app.ids(&format!("runs?repo_id={}", id(&c.repo))).await, ids(&[&c.run]), "{store}");
        assert_eq!(app.ids(&format!("runs?issue_id={}&status=planned", id(&c.issue))).await, ids(&[&c.run]));

        let trace = app
            .create(
                "artifacts",
                json!({"produced_by": r("Run", &run2), "for_issue": r("Issue", &elsewhere), "type": "trace",
                       "title": "trace", "uri": "file:///logs/x"}),
            )
            .await;
        assert_eq!(app.ids("artifacts?type=trace").await, ids(&[&trace]), "{store}");
        assert_eq!(app.ids("artifacts?type=code_patch").await, ids(&[&c.artifact]), "{store}");
        assert_eq!(app.ids(&format!("artifacts?run_id={}", id(&run2))).await, ids(&[&trace]), "{store}");
        assert_eq!(app.ids(&format!("artifacts?issue_id={}", id(&c.issue))).await, ids(&[&c.artifact]));

        let heuristic = app
            .create("doctrine-refs", {
                let mut b = doctrine_body("ops", "pager", "1");
                b["type"] = json!("heuristic");
                b
            })
            .await;
        assert_eq!(app.ids("doctrine-refs?namespace=ops").await, ids(&[&heuristic]), "{store}");
        assert_eq!(app.ids("doctrine-refs?type=heuristic").await, ids(&[&heuristic]), "{store}");
        assert_eq!(app.ids("doctrine-refs?type=policy").await, ids(&[&c.doctrine]), "{store}");
        assert_eq!(app.ids("context-packets?limit=1").await, ids(&[&c.packet]), "{store}");
        assert_eq!(app.ids("constraint-snapshots").await, ids(&[&c.snapshot]), "{store}");

        for (query, mentions) in [
            ("issues?colour=red", "unknown filter \"colour\""),
            ("repos?status=done", "unknown filter \"status\""),
            ("context-packets?issue_id=x", "unknown filter \"issue_id\""),
            ("issues?status=closed", "status"),
            ("issues?priority=p1", "priority"),
            ("runs?mode=robot", "mode"),
            ("artifacts?type=zip", "type"),
            ("doctrine-refs?type=rule", "type"),
            ("repos?visibility=secret", "visibility"),
            ("issues?limit=0", "limit"),
            ("issues?limit=1001", "limit"),
            ("issues?offset=-1", "offset"),
        ] {
            let (code, body) = app.get(query).await;
            assert_error(code, &body, 422, "invalid_filter", mentions);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationships_are_rows_with_foreign_keys() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let counts = [
            ("cwom_issue_context_packets", 1),
            ("cwom_issue_doctrine_refs", 1),
            ("cwom_issue_constraints", 1),
            ("cwom_run_context_packets", 1),
            ("cwom_run_doctrine_refs", 1),
            ("cwom_packet_doctrine_refs", 1),
        ];
        let orphan = "INSERT INTO cwom_artifacts (id, run_id, issue_id, type, title, uri, created_at, updated_at) \
                      VALUES ('orphan', 'no-such-run', 'no-such-issue', 'log', 't', 'file:///x', \
                      '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')";
        match &app.db {
            TestDb::Sqlite(db) => {
                let conn = rusqlite::Connection::open(&db.path).unwrap();
                conn.pragma_update(None, "foreign_keys", "ON").unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                for (table, want) in counts {
                    let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap();
                    assert_eq!(n, want, "{store}: {table}");
                }
                let (issue_id, repo_id): (String, String) = conn
                    .query_row("SELECT issue_id, repo_id FROM cwom_runs", [], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap();
                assert_eq!((issue_id.as_str(), repo_id.as_str()), (id(&c.issue), id(&c.repo)), "{store}");
                let e = conn.execute(orphan, []).unwrap_err().to_string();
                assert!(e.contains("FOREIGN KEY"), "{store}: {e}");
            }
            TestDb::Postgres(db) => {
                let client = db.client().await;
                for (table, want) in counts {
                    let n: i64 = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
                    assert_eq!(n, want, "{store}: {table}");
                }
                let row = client.query_one("SELECT issue_id, repo_id FROM cwom_runs", &[]).await.unwrap();
                assert_eq!((row.get::<_, &str>(0), row.get::<_, &str>(1)), (id(&c.issue), id(&c.repo)), "{store}");
                let e = client.execute(orphan, &[]).await.unwrap_err();
                assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION), "{store}: {e}");
                let ty: String = client
                    .query_one(
                        "SELECT data_type FROM information_schema.columns \
                         WHERE table_name = 'cwom_runs' AND column_name = 'telemetry'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(ty, "jsonb", "{store}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_issue_all_land() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let issue_path = format!("issues/{}", id(&c.issue));
        let packets = (0..12).map(|n| {
            let body = json!({"for_issue": r("Issue", &c.issue), "version": format!("v{n}"), "summary": "s"});
            let app = &app;
            async move { app.create("context-packets", body).await }
        });
        let patches = (0..4).map(|n| {
            let app = &app;
            let path = issue_path.clone();
            async move {
                let (code, body) = app.patch(&path, &json!({"title": format!("title {n}")})).await;
                assert_eq!(code, 200, "{body}");
            }
        });
        let (created, _) =
            tokio::join!(futures_util::future::join_all(packets), futures_util::future::join_all(patches));
        let issue = app.read(&issue_path).await;
        let linked: BTreeSet<&str> =
            issue["context_packets"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        let mut want: BTreeSet<&str> = created.iter().map(id).collect();
        want.insert(id(&c.packet));
        assert_eq!(linked, want, "{store}: every packet is linked exactly once");
        assert_eq!(issue["context_packets"].as_array().unwrap().len(), 13, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_bridge_records_runs_and_trace_artifacts() {
    for store in STORES {
        let app = app(store).await;
        let c = chain(&app).await;
        let cwom = Cwom::new(app.backend.cwom());
        assert!(cwom.issue_exists(id(&c.issue)).await.unwrap(), "{store}");
        assert!(!cwom.issue_exists("no-such-issue").await.unwrap(), "{store}");
        assert!(!cwom.issue_exists(id(&c.repo)).await.unwrap(), "{store}: a Repo is not an Issue");

        let started_at = Utc::now() - chrono::Duration::seconds(2);
        let mut meta = serde_json::Map::new();
        meta.insert("jct".into(), json!({"task_id": "t-1"}));
        let run_id = cwom
            .start_run(StartRun {
                run_id: uuid::Uuid::now_v7().to_string(),
                issue_id: id(&c.issue).to_string(),
                executor_actor_id: "host:42:abcd".into(),
                runtime: "jct-worker".into(),
                started_at,
                meta,
            })
            .await
            .unwrap();
        let run = app.read(&format!("runs/{run_id}")).await;
        assert_eq!((&run["status"], &run["mode"]), (&json!("running"), &json!("system")), "{store}");
        assert_eq!(
            run["executor"],
            json!({"actor": {"actor_kind": "system", "actor_id": "host:42:abcd", "display": null},
                   "runtime": "jct-worker", "toolchain": []}),
            "{store}"
        );
        assert_eq!(time(&run["telemetry"]["started_at"]).timestamp_micros(), started_at.timestamp_micros());
        assert_eq!(run["repo"], answered("Repo", &c.repo), "{store}: the Issue's Repo");
        assert_eq!(
            run["inputs"],
            json!({"context_packets": [answered("ContextPacket", &c.packet)],
                   "doctrine_refs": [answered("DoctrineRef", &c.doctrine)],
                   "constraint_snapshot": answered("ConstraintSnapshot", &c.snapshot)}),
            "{store}: what the Issue held at the start is pinned"
        );
        assert_eq!(run["meta"], json!({"jct": {"task_id": "t-1"}}), "{store}");
        let issue = app.read(&format!("issues/{}", id(&c.issue))).await;
        assert!(issue["runs"].as_array().unwrap().contains(&json!({"kind": "Run", "id": run_id, "role": null})));

        let uri = "file:///app/logs/0192-task";
        let artifact_id = cwom.add_trace_artifact(&run_id, id(&c.issue), uri).await.unwrap();
        let artifact = app.read(&format!("artifacts/{artifact_id}")).await;
        assert_eq!((&artifact["type"], &artifact["uri"]), (&json!("trace"), &json!(uri)), "{store}");
        assert_eq!(artifact["produced_by"], json!({"kind": "Run", "id": run_id, "role": null}), "{store}");
        let ended_at = Utc::now();
        let done = cwom
            .finish_run(&run_id, true, Telemetry { ended_at: Some(ended_at), ..Telemetry::default() }, None)
            .await
            .unwrap();
        assert_eq!(done.status, Status::Done, "{store}");
        assert_eq!(done.failure, None, "{store}");
        let run = app.read(&format!("runs/{run_id}")).await;
        assert_eq!(run["status"], "done", "{store}");
        assert_eq!(
            run["outputs"]["artifacts"],
            json!([{"kind": "Artifact", "id": artifact_id, "role": null}]),
            "{store}"
        );
        let duration = run["telemetry"]["duration_s"].as_f64().unwrap();
        let want = (ended_at - started_at).num_microseconds().unwrap() as f64 / 1e6;
        assert!((duration - want).abs() < 1e-5, "{store}: {duration} vs {want}");
        let again = cwom.finish_run(&run_id, false, Telemetry::default(), None).await.unwrap_err();
        assert!(matches!(again, CwomError::FinalStatus { status: Status::Done, .. }), "{store}: {again}");

        // A failing run: the failure given, or `unknown` when the worker has none.
        let start = |issue: &Value| StartRun {
            run_id: uuid::Uuid::now_v7().to_string(),
            issue_id: id(issue).to_string(),
            executor_actor_id: "w".into(),
            runtime: "jct-worker".into(),
            started_at: Utc::now(),
            meta: Default::default(),
        };
        let failed_id = cwom.start_run(start(&c.issue)).await.unwrap();
        let failure = Failure { category: FailureCategory::Runtime, message: "handler panicked".into() };
        let failed = cwom.finish_run(&failed_id, false, Telemetry::default(), Some(failure.clone())).await.unwrap();
        assert_eq!((failed.status, failed.failure), (Status::Failed, Some(failure)), "{store}");
        let silent_id = cwom.start_run(start(&c.issue)).await.unwrap();
        let silent = cwom.finish_run(&silent_id, false, Telemetry::default(), None).await.unwrap();
        assert_eq!(silent.failure.map(|f| f.category), Some(FailureCategory::Unknown), "{store}");
        let ok_with_failure = cwom
            .finish_run(
                &cwom.start_run(start(&c.issue)).await.unwrap(),
                true,
                Telemetry::default(),
                Some(Failure { category: FailureCategory::Test, message: "x".into() }),
            )
            .await
            .unwrap_err();
        assert!(matches!(ok_with_failure, CwomError::Invalid(_)), "{store}: {ok_with_failure}");

        let missing = cwom.start_run(start(&json!({"id": "no-such-issue"}))).await.unwrap_err();
        assert!(matches!(missing, CwomError::NotFound { kind: ObjectKind::Issue, .. }), "{store}: {missing}");
        let orphan = cwom.add_trace_artifact("no-such-run", id(&c.issue), uri).await.unwrap_err();
        assert!(matches!(orphan, CwomError::InvalidRef(_)), "{store}: {orphan}");
        assert_eq!(app.ids(&format!("runs?issue_id={}", id(&c.issue))).await.len(), 5, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwom_routes_need_the_api_key_when_one_is_set() {
    for store in STORES {
        let app = app_with(store, &[("JCT_API_KEY", "s3cret")]).await;
        let res = http().get(format!("{}/cwom/repos", app.base)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{store}");
        let res = http().post(format!("{}/cwom/repos", app.base)).json(&repo_body()).send().await.unwrap();
        assert_eq!(res.status(), 401, "{store}");
        let res = http()
            .post(format!("{}/cwom/repos", app.base))
            .bearer_auth("s3cret")
            .json(&repo_body())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{store}");
        let res = http().get(format!("{}/cwom/repos", app.base)).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(res.status(), 200, "{store}");
        assert_eq!(res.json::<Value>().await.unwrap().as_array().unwrap().len(), 1, "{store}");
    }
}
