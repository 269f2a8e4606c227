//! Property tests: arbitrary enqueue bodies (JSON of any shape, strings with NUL and odd
//! Unicode, numbers at every edge, times across and beyond the representable range, odd
//! trace headers) sent over HTTP to a daemon on each store. Whatever the body: never a 5xx,
//! the same verdict from both stores, and what is accepted reads back equal on both
//! (payload, strings, numbers, times to the microsecond).
//!
//! `JCT_PROPTEST_CASES` sets the number of cases (default 96, so `make test` stays fast).

use crate::strategies;
use crate::support;

use crate::support::{http, start_in_process, InProcess, TestDb};
use chrono::{DateTime, SubsecRound, Utc};
use devops_control_tower::handlers::Registry;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use strategies::{json_value, number, text, time_text};

fn cases() -> u32 {
    std::env::var("JCT_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
}

/// An enqueue body: mostly well-formed fields with arbitrary values, sometimes out of
/// range, of the wrong type, or unknown.
fn body() -> impl Strategy<Value = Value> {
    let task_type = prop_oneof![8 => Just("echo".to_string()), 1 => Just("fail".to_string()), 1 => text()];
    // Mostly in range, sometimes past i32, of another JSON type, or text.
    let int = |valid: std::ops::RangeInclusive<i64>| {
        prop_oneof![
            6 => valid.prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => number(),
            1 => text().prop_map(Value::String),
        ]
    };
    let queue = prop_oneof![4 => "[a-z]{1,10}", 1 => text()];
    use proptest::option::weighted as opt;
    (
        task_type,
        opt(0.8, json_value()),
        opt(0.3, queue),
        opt(0.3, int(-1000..=1000)),
        opt(0.3, time_text()),
        opt(0.3, int(1..=100)),
        opt(0.3, int(1..=3600)),
        opt(0.3, text()),
        proptest::option::weighted(0.05, (text(), json_value())),
    )
        .prop_map(|(ty, payload, queue, priority, run_at, max_attempts, timeout, key, extra)| {
            let mut m = Map::new();
            m.insert("type".into(), Value::String(ty));
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            };
            put("payload", payload);
            put("queue", queue.map(Value::String));
            put("priority", priority);
            put("run_at", run_at.map(Value::String));
            put("max_attempts", max_attempts);
            put("timeout_seconds", timeout);
            put("idempotency_key", key.map(|k| Value::String(format!("{k}-{}", uuid::Uuid::new_v4()))));
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

/// An `X-Trace-Id` header: usually none or plain, sometimes control characters, bytes past
/// ASCII or too long.
fn trace_header() -> impl Strategy<Value = Option<Vec<u8>>> {
    let byte = prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff];
    proptest::option::of(proptest::collection::vec(byte, 0..140))
}

struct Stores {
    // Field order: the daemons stop before their databases go.
    apps: Vec<(&'static str, InProcess)>,
    _dbs: Vec<TestDb>,
}

async fn stores() -> Stores {
    let mut apps = Vec::new();
    let mut dbs = Vec::new();
    for kind in ["sqlite", "postgres"] {
        let db = TestDb::new(kind).await;
        let app = start_in_process(&db.backend().await, &db.url(), &[("JCT_WORKERS", "1")], Registry::builtin()).await;
        apps.push((kind, app));
        dbs.push(db);
    }
    Stores { apps, _dbs: dbs }
}

/// Cases both stores accepted: the read-back comparison ran for these.
static ACCEPTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The fields a client sent, as the two stores read them back.
const COMPARED: [&str; 9] = [
    "type",
    "payload",
    "queue",
    "priority",
    "max_attempts",
    "timeout_seconds",
    "idempotency_key",
    "trace_id",
    "run_at",
];

async fn check(stores: &Stores, body: Value, trace: Option<Vec<u8>>) -> Result<(), TestCaseError> {
    let mut answers = Vec::new();
    for (kind, app) in &stores.apps {
        let mut req = http().post(format!("{}/tasks/enqueue", app.base)).json(&body);
        if let Some(t) = &trace {
            if let Ok(v) = reqwest::header::HeaderValue::from_bytes(t) {
                req = req.header("x-trace-id", v);
            }
        }
        let res = req.send().await.map_err(|e| TestCaseError::fail(format!("{kind}: {e}")))?;
        let status = res.status().as_u16();
        let answer: Value = res.json().await.unwrap_or(Value::Null);
        prop_assert!(status < 500, "{}: {} answered {}: {}", kind, body, status, answer);
        let stored = if status == 201 {
            let id = answer["task_id"].as_str().unwrap();
            Some(support::get_task(&app.base, id).await)
        } else {
            None
        };
        answers.push((status, answer["error"].clone(), stored));
    }
    let (a, b) = (&answers[0], &answers[1]);
    prop_assert_eq!((a.0, &a.1), (b.0, &b.1), "the stores disagree about {}", body);
    if a.2.is_some() {
        ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if let (Some(x), Some(y)) = (&a.2, &b.2) {
        for field in COMPARED {
            if (field == "run_at" && body.get("run_at").is_none()) || (field == "trace_id" && trace.is_none()) {
                continue; // made by the server: "now" by each store's clock, a new trace id
            }
            prop_assert!(same(&x[field], &y[field]), "{} differs for {}: {} vs {}", field, body, x[field], y[field]);
        }
        // An absent or null payload is the default, `{}`.
        let sent = body.get("payload").filter(|p| !p.is_null()).cloned().unwrap_or(json!({}));
        prop_assert!(same(&x["payload"], &sent), "payload read back as {} for {}", x["payload"], sent);
        if let Some(sent) = body["run_at"].as_str() {
            let sent = DateTime::parse_from_rfc3339(sent).unwrap().with_timezone(&Utc).trunc_subsecs(6);
            let read = DateTime::parse_from_rfc3339(x["run_at"].as_str().unwrap()).unwrap();
            prop_assert_eq!(read, sent, "run_at read back to the microsecond");
        }
    }
    Ok(())
}

/// JSON equality where numbers are equal when they are the same number: PostgreSQL's
/// `jsonb` keeps numbers as decimals and writes an integral one without an exponent
/// (`1e16` comes back as `10000000000000000`), SQLite keeps the text that was sent.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(i), Some(j), _, _) => i == j,
            (_, _, Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn arbitrary_enqueues_never_5xx_and_read_back_equal_on_both_stores() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stores = rt.block_on(stores());
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&(body(), trace_header()), |(body, trace)| rt.block_on(check(&stores, body, trace)));
    drop(stores);
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must reach the stores, not only the validation: a good share of the
    // cases are accepted and read back. About a quarter are (23-31 of 96 in four runs), and the
    // seed is new each run: a bound of a fifth failed once (17 of 96), so it sits at a tenth,
    // well below that spread; a generator that stopped reaching the stores still fails it.
    let accepted = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{accepted} of {} cases accepted by both stores", cases());
    assert!(accepted * 10 >= cases() as usize, "only {accepted} of {} cases were accepted", cases());
}
