//! The store never sees what it would refuse: every body is checked against what both
//! stores can hold, and each store gives the same verdict (422 naming the field, or 201
//! with a value that reads back equal). Runs over HTTP against an in-process daemon on
//! each store.

use crate::support;

use crate::support::{http, start_in_process, TestDb};
use devops_control_tower::handlers::Registry;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

const STORES: [&str; 2] = ["sqlite", "postgres"];

struct App {
    db: TestDb,
    app: support::InProcess,
}

async fn app(kind: &str) -> App {
    let db = TestDb::new(kind).await;
    // No worker should run the tasks while a test reads them back.
    let app =
        start_in_process(&db.backend().await, &db.url(), &[("JCT_POLL_INTERVAL_MS", "3600000")], Registry::builtin())
            .await;
    App { db, app }
}

async fn post(base: &str, path: &str, body: &Value, headers: HeaderMap) -> (u16, Value) {
    let res = http().post(format!("{base}{path}")).headers(headers).json(body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn stored(db: &TestDb) -> usize {
    let filter = devops_control_tower::task::TaskFilter { limit: 1000, ..Default::default() };
    db.store().await.list(&filter).await.unwrap().len()
}

/// (body, the field the 422 must name)
fn refused_enqueues() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"type": "echo", "payload": {"s": "a\u{0}b"}}), "/payload/s"),
        (json!({"type": "echo", "payload": {"a": [1, {"deep": ["x", "\u{0}"]}]}}), "/payload/a/1/deep/1"),
        (json!({"type": "echo", "payload": {"k\u{0}ey": 1}}), "/payload/k\\u0000ey"),
        (json!({"type": "echo", "payload": "\u{0}"}), "/payload"),
        (json!({"type": "echo", "queue": "q\u{0}"}), "/queue"),
        (json!({"type": "echo", "idempotency_key": "\u{0}k"}), "/idempotency_key"),
        (json!({"type": "ec\u{0}ho"}), "/type"),
        (json!({"type": "echo", "cwom_issue_id": "i\u{0}"}), "/cwom_issue_id"),
        (json!({"type": "echo", "run_at": "0000-06-01T00:00:00Z"}), "run_at"),
        (json!({"type": "echo", "run_at": "+10000-01-01T00:00:00Z"}), "run_at"),
        (json!({"type": "echo", "run_at": "-0001-01-01T00:00:00Z"}), "run_at"),
        (json!({"type": "echo", "priority": 2_147_483_648i64}), "priority"),
        (json!({"type": "echo", "priority": -2_147_483_649i64}), "priority"),
        (json!({"type": "echo", "max_attempts": 4_294_967_296i64}), "max_attempts"),
        (json!({"type": "echo", "timeout_seconds": 1.5}), "timeout_seconds"),
        (json!({"type": "echo", "queue": "q".repeat(129)}), "queue"),
        (json!({"type": "echo", "idempotency_key": "k".repeat(257)}), "idempotency_key"),
        (json!({"type": "echo", "cwom_issue_id": "i".repeat(129)}), "cwom_issue_id"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_no_store_can_hold_is_a_422_naming_the_field_on_both_stores() {
    for kind in STORES {
        let App { db, app } = app(kind).await;
        for (body, field) in refused_enqueues() {
            let (status, answer) = post(&app.base, "/tasks/enqueue", &body, HeaderMap::new()).await;
            assert_eq!(status, 422, "{kind}: {body} answered {status}: {answer}");
            assert_eq!(answer["error"], "invalid_field", "{kind}: {body}: {answer}");
            let message = answer["message"].as_str().unwrap();
            let named = message.starts_with(field) || message.starts_with(field.trim_start_matches('/'));
            assert!(named, "{kind}: {body}: the message {message:?} does not name {field}");
        }
        assert_eq!(stored(&db).await, 0, "{kind}: a refused body stored nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_header_is_checked_like_a_field() {
    for kind in STORES {
        let App { db, app } = app(kind).await;
        let body = json!({"type": "echo"});
        for bad in [&b"a\tb"[..], &b"caf\xc3\xa9"[..], &[b'x'; 129][..]] {
            let mut headers = HeaderMap::new();
            headers.insert("x-trace-id", HeaderValue::from_bytes(bad).unwrap());
            let (status, answer) = post(&app.base, "/tasks/enqueue", &body, headers.clone()).await;
            assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_field")), "{kind}: {bad:?}: {answer}");
            assert!(answer["message"].as_str().unwrap().starts_with("X-Trace-Id"), "{kind}: {answer}");
            let (status, answer) = post(&app.base, "/tasks/enqueue_batch", &json!([body]), headers).await;
            assert_eq!(status, 422, "{kind}: batch with {bad:?}: {answer}");
        }
        // A content type that is not text is the client's mistake too, not a 500.
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_bytes(b"application/json\xff").unwrap());
        let res = http().post(format!("{}/tasks/enqueue", app.base)).headers(headers).body("{}").send().await.unwrap();
        assert_eq!(res.status(), 400, "{kind}");
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_header", "{kind}: {answer}");
        assert_eq!(stored(&db).await, 0, "{kind}");
        let mut headers = HeaderMap::new();
        headers.insert("x-trace-id", HeaderValue::from_static("trace 1-2~"));
        let (status, answer) = post(&app.base, "/tasks/enqueue", &body, headers).await;
        assert_eq!(status, 201, "{kind}: {answer}");
        assert_eq!(answer["trace_id"], "trace 1-2~", "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_at_the_edges_of_the_range_read_back_equal_to_the_microsecond() {
    let mut seen: Vec<Vec<Value>> = Vec::new();
    for kind in STORES {
        let App { db: _db, app } = app(kind).await;
        let mut got = Vec::new();
        for (sent, expect) in [
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
            ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
            ("1969-12-31T23:59:59.999999999Z", "1969-12-31T23:59:59.999999Z"),
            ("1899-06-01T12:00:00.000000500+01:00", "1899-06-01T11:00:00Z"),
            ("2026-03-04T05:06:07.123456789Z", "2026-03-04T05:06:07.123456Z"),
        ] {
            let (status, answer) =
                post(&app.base, "/tasks/enqueue", &json!({"type": "echo", "run_at": sent}), HeaderMap::new()).await;
            assert_eq!(status, 201, "{kind}: {sent}: {answer}");
            let id = answer["task_id"].as_str().unwrap();
            let task = support::get_task(&app.base, id).await;
            let read = chrono::DateTime::parse_from_rfc3339(task["run_at"].as_str().unwrap()).unwrap();
            let want = chrono::DateTime::parse_from_rfc3339(expect).unwrap();
            assert_eq!(read, want, "{kind}: sent {sent}, read back {}", task["run_at"]);
            assert_eq!(task["run_at"], answer["run_at"], "{kind}: the enqueue answer and a read agree");
            got.push(task["run_at"].clone());
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "both stores read the same times back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_names_the_bad_item_and_both_uses_of_a_repeated_key() {
    for kind in STORES {
        let App { db, app } = app(kind).await;
        let bad_item = json!([
            {"type": "echo"},
            {"type": "echo", "payload": {"ok": true}},
            {"type": "echo", "payload": {"s": ["\u{0}"]}},
        ]);
        let (status, answer) = post(&app.base, "/tasks/enqueue_batch", &bad_item, HeaderMap::new()).await;
        assert_eq!((status, answer["index"].as_u64()), (422, Some(2)), "{kind}: {answer}");
        assert_eq!(answer["error"], "invalid_field", "{kind}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("/payload/s/0"), "{kind}: {answer}");

        let repeated = json!([
            {"type": "echo", "idempotency_key": "k1"},
            {"type": "echo", "idempotency_key": "k2"},
            {"type": "echo", "idempotency_key": "k1"},
        ]);
        let (status, answer) = post(&app.base, "/tasks/enqueue_batch", &repeated, HeaderMap::new()).await;
        assert_eq!(status, 422, "{kind}: {answer}");
        assert_eq!(answer["error"], "duplicate_key_in_batch", "{kind}: {answer}");
        assert_eq!(answer["indexes"], json!([0, 2]), "{kind}: {answer}");
        assert_eq!(answer["index"], 2, "{kind}: {answer}");
        assert_eq!(stored(&db).await, 0, "{kind}: nothing of a refused batch is stored");

        // The same batch without the repeat goes in whole.
        let fine = json!([{"type": "echo", "idempotency_key": "k1"}, {"type": "echo", "idempotency_key": "k2"}]);
        let (status, answer) = post(&app.base, "/tasks/enqueue_batch", &fine, HeaderMap::new()).await;
        assert_eq!((status, answer["count"].as_u64()), (201, Some(2)), "{kind}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwom_bodies_are_checked_the_same_way() {
    for kind in STORES {
        let App { db: _db, app } = app(kind).await;
        let cases = [
            ("repos", json!({"name": "n\u{0}", "slug": "s", "source": {"system": "github"}}), "/name"),
            (
                "repos",
                json!({"name": "n", "slug": "s", "source": {"system": "github"}, "meta": {"a\u{0}": 1}}),
                "/meta/a",
            ),
            (
                "constraint-snapshots",
                json!({"scope": "personal", "owner": {"actor_kind": "human", "actor_id": "ann", "display": null},
                       "constraints": {"time": {"deadline": "0000-01-01T00:00:00Z"}}}),
                "constraints.time.deadline",
            ),
        ];
        for (path, body, field) in cases {
            let (status, answer) = post(&app.base, &format!("/cwom/{path}"), &body, HeaderMap::new()).await;
            assert_eq!(status, 422, "{kind}: {path} {body}: {answer}");
            assert_eq!(answer["error"], "invalid_field", "{kind}: {answer}");
            assert!(answer["message"].as_str().unwrap().starts_with(field), "{kind}: {answer} names {field}");
        }
        let fine = json!({"name": "n", "slug": "s", "source": {"system": "github"}, "meta": {"a": "\u{1}é😀"}});
        let (status, answer) = post(&app.base, "/cwom/repos", &fine, HeaderMap::new()).await;
        assert_eq!(status, 201, "{kind}: {answer}");
        assert_eq!(answer["meta"]["a"], "\u{1}é😀", "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_with_a_nul_get_the_same_answer_on_both_stores() {
    for kind in STORES {
        let App { db: _db, app } = app(kind).await;
        let get = |path: &str| http().get(format!("{}{path}", app.base)).send();
        for (path, status, code) in [
            ("/tasks?queue=a%00b", 422, "invalid_filter"),
            ("/tasks?type=%00", 422, "invalid_filter"),
            ("/cwom/issues?repo_id=r%00", 422, "invalid_filter"),
            ("/cwom/issues/i%00", 404, "object_not_found"),
        ] {
            let res = get(path).await.unwrap();
            let got = res.status().as_u16();
            let answer: Value = res.json().await.unwrap();
            assert_eq!((got, answer["error"].as_str()), (status, Some(code)), "{kind}: GET {path}: {answer}");
        }
        let res = http().patch(format!("{}/cwom/runs/r%00", app.base)).json(&json!({})).send().await.unwrap();
        assert_eq!(res.status(), 404, "{kind}: PATCH a run whose id holds a NUL");
    }
}
