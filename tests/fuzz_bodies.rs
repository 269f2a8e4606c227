//! Fuzzing the request-body path: raw bytes (random, and well-formed bodies with bytes
//! flipped, cut or spliced in) posted to every route that takes a body (enqueue, batch,
//! the bulk actions, each CWOM kind's create, the worker protocol's), over HTTP to a daemon on each store. Whatever the bytes: an
//! answer (no dropped connection, which is what a panic in a handler looks like), and
//! never a 5xx.
//!
//! `JCT_FUZZ_CASES` sets the number of cases: a small fixed number under `make test`,
//! 100,000 under `make fuzz`.

#[path = "support/strategies.rs"]
mod strategies;
mod support;

use devops_control_tower::handlers::Registry;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use strategies::{json_value, text, time_text};
use support::{http, start_in_process, InProcess, TestDb};

fn cases() -> u32 {
    std::env::var("JCT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
}

const ROUTES: [&str; 21] = [
    "/workers",
    "/workers/w-1/heartbeat",
    "/tasks/claim",
    "/tasks/00000000-0000-7000-8000-000000000000/heartbeat",
    "/tasks/00000000-0000-7000-8000-000000000000/log",
    "/tasks/00000000-0000-7000-8000-000000000000/artifacts",
    "/tasks/00000000-0000-7000-8000-000000000000/complete",
    "/tasks/00000000-0000-7000-8000-000000000000/fail",
    "/tasks/00000000-0000-7000-8000-000000000000/release",
    "/tasks/00000000-0000-7000-8000-000000000000/decision",
    "/tasks/enqueue",
    "/tasks/enqueue_batch",
    "/tasks/bulk/cancel",
    "/tasks/bulk/retry",
    "/cwom/repos",
    "/cwom/issues",
    "/cwom/context-packets",
    "/cwom/constraint-snapshots",
    "/cwom/doctrine-refs",
    "/cwom/runs",
    "/cwom/artifacts",
];

/// A body that is nearly right: the shape each route expects, with arbitrary values.
fn plausible() -> impl Strategy<Value = Value> {
    let task = (prop_oneof![Just("echo".to_string()), text()], json_value(), proptest::option::of(time_text()))
        .prop_map(|(ty, payload, run_at)| {
            let mut t = json!({"type": ty, "payload": payload});
            if let Some(r) = run_at {
                t["run_at"] = json!(r);
            }
            t
        })
        .boxed();
    prop_oneof![
        task.clone(),
        proptest::collection::vec(task, 0..4).prop_map(Value::Array),
        (text(), text(), json_value()).prop_map(|(name, slug, meta)| json!({
            "name": name, "slug": slug, "source": {"system": "github"}, "meta": meta
        })),
        (text(), json_value()).prop_map(|(title, v)| json!({
            "title": title, "repo": {"kind": "Repo", "id": "r"}, "type": "feature", "description": v
        })),
        (text(), text(), json_value()).prop_map(|(name, ty, labels)| json!({
            "name": name, "types": [ty], "max_slots": 2, "labels": labels
        })),
        (text(), json_value()).prop_map(|(token, result)| json!({
            "lease_token": token, "result": result, "seq": 1, "lines": [token], "worker_id": token,
            "error": {"message": token}, "name": "a.txt", "type": "log", "content_base64": "eA=="
        })),
        (text(), text(), json_value()).prop_map(|(status, queue, ids)| json!({
            "filter": {"status": status, "queue": queue}, "ids": ids
        })),
        (prop_oneof![Just("approve".to_string()), Just("reject".to_string()), text()], text(), json_value())
            .prop_map(|(decision, by, comment)| json!({ "decision": decision, "by": by, "comment": comment })),
        json_value(),
    ]
}

/// What a byte-level mutation does to a serialized body.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Splice(usize, Vec<u8>),
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let splice = prop_oneof![
        Just(b"\\u0000".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b"\\ud800".to_vec()),
        Just(b"99999999999999999999999".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec()),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    let mutation = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), splice).prop_map(|(i, s)| Mutation::Splice(i, s)),
    ];
    let mutated = (plausible(), proptest::collection::vec(mutation, 0..4)).prop_map(|(body, mutations)| {
        let mut bytes = serde_json::to_vec(&body).unwrap();
        for m in mutations {
            let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
            match m {
                Mutation::Flip(i, b) if !bytes.is_empty() => {
                    let i = at(i, bytes.len());
                    bytes[i] = b;
                }
                Mutation::Flip(..) => {}
                Mutation::Cut(i) => bytes.truncate(at(i, bytes.len() + 1)),
                Mutation::Splice(i, s) => {
                    let tail = bytes.split_off(at(i, bytes.len() + 1));
                    bytes.extend(s);
                    bytes.extend(tail);
                }
            }
        }
        bytes
    });
    prop_oneof![3 => mutated, 1 => proptest::collection::vec(any::<u8>(), 0..256)]
}

async fn post(app: &InProcess, kind: &str, route: &str, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(&bytes).into_owned();
    let res = http()
        .post(format!("{}{route}", app.base))
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("{kind}: POST {route} {shown:?}: no answer: {e}")))?;
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    prop_assert!(status < 500, "{}: POST {} {:?} answered {}: {}", kind, route, shown, status, text);
    let answer: Value = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("{kind}: POST {route}: not JSON ({e}): {text}")))?;
    prop_assert!(answer.is_object(), "{}: {}", kind, text);
    Ok(())
}

#[test]
fn no_request_body_makes_a_5xx_or_a_panic() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (apps, dbs) = rt.block_on(async {
        let mut apps = Vec::new();
        let mut dbs = Vec::new();
        for kind in ["sqlite", "postgres"] {
            let db = TestDb::new(kind).await;
            // Nothing runs the accepted tasks: only the intake is under test.
            let extra = [("JCT_POLL_INTERVAL_MS", "3600000")];
            apps.push((kind, start_in_process(&db.backend().await, &db.url(), &extra, Registry::builtin()).await));
            dbs.push(db);
        }
        (apps, dbs)
    });
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&(0..ROUTES.len(), bytes()), |(route, bytes)| {
        rt.block_on(async {
            for (kind, app) in &apps {
                post(app, kind, ROUTES[route], bytes.clone()).await?;
            }
            Ok(())
        })
    });
    drop(apps);
    drop(dbs);
    if let Err(e) = result {
        panic!("{e}");
    }
}
