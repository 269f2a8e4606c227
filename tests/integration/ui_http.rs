//! The dashboard and the bulk routes over real HTTP, on both stores: the bulk routes'
//! answers and refusals, the read-only key, sessions with their CSRF token and the `Origin`
//! check, and what every page promises (relative links only, escaped user text, the
//! security headers); the schedules and queues pages with their controls. The browser test (`tests/integration/ui_browser.rs`) drives the same pages in
//! Chromium.

use crate::support;

use std::time::Duration;

use crate::support::{start_in_process, wait_status, InProcess, TestDb};
use devops_control_tower::handlers::Registry;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "k-full";
const READ_KEY: &str = "k-read";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn assert_error(got: (StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error"], code, "{}", got.1);
    assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

async fn keyed_app(db: &TestDb) -> InProcess {
    start_in_process(
        &db.backend().await,
        &db.url(),
        &[("JCT_API_KEY", KEY), ("JCT_READONLY_API_KEY", READ_KEY)],
        Registry::builtin(),
    )
    .await
}

async fn enqueue(base: &str, body: Value) -> String {
    let (status, task) = send(client().post(format!("{base}/tasks/enqueue")).bearer_auth(KEY).json(&body)).await;
    assert_eq!(status, 201, "{task}");
    task["task_id"].as_str().unwrap().to_string()
}

async fn task_status(base: &str, id: &str) -> String {
    let (_, t) = send(client().get(format!("{base}/tasks/{id}")).bearer_auth(KEY)).await;
    t["status"].as_str().unwrap().to_string()
}

/// Signs in through the form; returns the cookie pair and the page's CSRF token.
async fn sign_in(base: &str, key: &str) -> (String, String) {
    let res = client().post(format!("{base}/ui/login")).form(&[("key", key)]).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "../ui", "a relative redirect");
    let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = client().get(format!("{base}/ui/tasks")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = html.split("data-csrf=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert_eq!(csrf.len(), 64, "a token in the page");
    (cookie, csrf)
}

async fn bulk_routes(kind: &str) {
    let db = TestDb::new(kind).await;
    let app = keyed_app(&db).await;
    let base = app.base.clone();
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(enqueue(&base, json!({"type": "echo", "queue": "q7", "run_at": later})).await);
    }
    let other = enqueue(&base, json!({"type": "echo", "queue": "elsewhere", "run_at": later})).await;
    let bulk =
        |action: &str, body: Value| client().post(format!("{base}/tasks/bulk/{action}")).bearer_auth(KEY).json(&body);

    let (s, r) = send(bulk("cancel", json!({"ids": [ids[0], ids[1], ids[1]]}))).await;
    assert_eq!(
        (s.as_u16(), r),
        (200, json!({"action": "cancel", "matched": 2, "changed": 2})),
        "duplicates count once"
    );
    let (s, r) = send(bulk("cancel", json!({"filter": {"queue": "q7"}}))).await;
    assert_eq!((s.as_u16(), r), (200, json!({"action": "cancel", "matched": 7, "changed": 5})));
    assert_eq!(task_status(&base, &other).await, "queued", "the filter kept to its queue");
    let (s, r) = send(bulk("retry", json!({"filter": {"queue": "q7", "status": "cancelled"}}))).await;
    assert_eq!((s.as_u16(), r), (200, json!({"action": "retry", "matched": 7, "changed": 7})));
    for id in &ids {
        support::wait_for("a retried task to run", Duration::from_secs(20), || async {
            (task_status(&base, id).await == "completed").then_some(())
        })
        .await;
    }

    assert_error(send(bulk("cancel", json!({}))).await, 422, "invalid_bulk");
    assert_error(send(bulk("cancel", json!({"ids": [], "filter": {}}))).await, 422, "invalid_bulk");
    assert_error(send(bulk("cancel", json!({"ids": ["nope"]}))).await, 400, "invalid_id");
    assert_error(send(bulk("cancel", json!({"filter": {"status": "done"}}))).await, 422, "invalid_filter");
    assert_error(send(bulk("cancel", json!({"filter": {"limit": "5"}}))).await, 422, "invalid_filter");
    assert_error(send(bulk("retry", json!({"idz": []}))).await, 422, "invalid_field");
    assert_error(send(bulk("retry", json!([1]))).await, 422, "invalid_bulk");
    let too_many: Vec<String> = (0..10_001).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    assert_error(send(bulk("retry", json!({ "ids": too_many }))).await, 422, "invalid_bulk");
    let raw = client()
        .post(format!("{base}/tasks/bulk/cancel"))
        .bearer_auth(KEY)
        .body("{\"ids\": [")
        .header("content-type", "application/json");
    assert_error(send(raw).await, 400, "malformed_json");
    let text = client().post(format!("{base}/tasks/bulk/cancel")).bearer_auth(KEY).body("{}");
    assert_error(send(text).await, 415, "unsupported_media_type");
    assert_error(send(bulk("delete", json!({}))).await, 404, "not_found");
    let anonymous = client().post(format!("{base}/tasks/bulk/cancel")).json(&json!({"ids": []}));
    assert_error(send(anonymous).await, 401, "unauthorized");
    let read_only =
        client().post(format!("{base}/tasks/bulk/cancel")).bearer_auth(READ_KEY).json(&json!({"ids": [other]}));
    assert_error(send(read_only).await, 403, "read_only_key");
    assert_eq!(task_status(&base, &other).await, "queued");

    // The list's new filters: keyset paging and the CWOM Issue.
    let (_, page) = send(client().get(format!("{base}/tasks?queue=q7&limit=3")).bearer_auth(READ_KEY)).await;
    let page: Vec<String> = page.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(page, vec![ids[6].clone(), ids[5].clone(), ids[4].clone()]);
    let (_, next) =
        send(client().get(format!("{base}/tasks?queue=q7&limit=3&before={}", ids[4])).bearer_auth(KEY)).await;
    assert_eq!(next[0]["id"], ids[3].as_str());
    assert_error(send(client().get(format!("{base}/tasks?before=x")).bearer_auth(KEY)).await, 422, "invalid_filter");
    let (s, repo) = send(
        client()
            .post(format!("{base}/cwom/repos"))
            .bearer_auth(KEY)
            .json(&json!({"name": "R", "slug": "r-ui", "source": {"system": "github"}})),
    )
    .await;
    assert_eq!(s, 201, "{repo}");
    let (s, issue) = send(
        client()
            .post(format!("{base}/cwom/issues"))
            .bearer_auth(KEY)
            .json(&json!({"repo": {"kind": "Repo", "id": repo["id"]}, "title": "T", "type": "feature"})),
    )
    .await;
    assert_eq!(s, 201, "{issue}");
    let linked = enqueue(&base, json!({"type": "echo", "cwom_issue_id": issue["id"]})).await;
    let (_, of_issue) =
        send(client().get(format!("{base}/tasks?cwom_issue_id={}", issue["id"].as_str().unwrap())).bearer_auth(KEY))
            .await;
    assert_eq!(of_issue.as_array().unwrap().len(), 1);
    assert_eq!(of_issue[0]["id"], linked.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_routes_on_sqlite() {
    bulk_routes("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_routes_on_postgres() {
    bulk_routes("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_origin_and_the_read_only_key() {
    let db = TestDb::new("sqlite").await;
    let app = keyed_app(&db).await;
    let base = app.base.clone();
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let id = enqueue(&base, json!({"type": "echo", "run_at": later})).await;
    let cancel = format!("{base}/tasks/{id}/cancel");

    // Without a key or session: every page is the sign-in form (401), the API says 401.
    let res = client().get(format!("{base}/ui/tasks")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("id=\"login\""));
    let res = client().post(format!("{base}/ui/login")).form(&[("key", "wrong")]).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("set-cookie").is_none());
    let evil_login =
        client().post(format!("{base}/ui/login")).header("origin", "http://evil.example").form(&[("key", KEY)]);
    assert_error(send(evil_login).await, 403, "cross_origin");

    // A session: reads with the cookie alone; changes need its token and the right Origin.
    let (cookie, csrf) = sign_in(&base, KEY).await;
    let (s, _) = send(client().get(format!("{base}/tasks/{id}")).header("cookie", &cookie)).await;
    assert_eq!(s, 200);
    assert_error(send(client().post(&cancel).header("cookie", &cookie)).await, 403, "csrf_rejected");
    let wrong = client().post(&cancel).header("cookie", &cookie).header("x-csrf-token", "0".repeat(64));
    assert_error(send(wrong).await, 403, "csrf_rejected");
    let host = base.trim_start_matches("http://").to_string();
    let cross = client()
        .post(&cancel)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", "http://evil.example");
    assert_error(send(cross).await, 403, "cross_origin");
    let bearer_cross = client().post(&cancel).bearer_auth(KEY).header("origin", "null");
    assert_error(send(bearer_cross).await, 403, "cross_origin");
    assert_eq!(task_status(&base, &id).await, "queued", "nothing forged went through");
    let ok = client()
        .post(&cancel)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", format!("http://{host}"));
    let (s, t) = send(ok).await;
    assert_eq!((s.as_u16(), t["status"].as_str()), (200, Some("cancelled")));
    let tampered = cookie.replace("full.", "read.");
    assert_error(
        send(client().get(format!("{base}/tasks/{id}")).header("cookie", tampered)).await,
        401,
        "unauthorized",
    );

    // The read-only key: GET works, anything else is 403 with a JSON error; its pages show
    // no action.
    let (s, _) = send(client().get(format!("{base}/tasks")).bearer_auth(READ_KEY)).await;
    assert_eq!(s, 200);
    assert_error(
        send(client().post(format!("{base}/tasks/{id}/retry")).bearer_auth(READ_KEY)).await,
        403,
        "read_only_key",
    );
    let enq = client().post(format!("{base}/tasks/enqueue")).bearer_auth(READ_KEY).json(&json!({"type": "echo"}));
    assert_error(send(enq).await, 403, "read_only_key");
    let reg =
        client().post(format!("{base}/workers")).bearer_auth(READ_KEY).json(&json!({"name": "w", "types": ["x"]}));
    assert_error(send(reg).await, 403, "read_only_key");
    let cwom = client().post(format!("{base}/cwom/repos")).bearer_auth(READ_KEY).json(&json!({}));
    assert_error(send(cwom).await, 403, "read_only_key");
    let (ro_cookie, ro_csrf) = sign_in(&base, READ_KEY).await;
    let with_token =
        client().post(format!("{base}/tasks/{id}/retry")).header("cookie", &ro_cookie).header("x-csrf-token", &ro_csrf);
    assert_error(send(with_token).await, 403, "read_only_key");
    for path in ["/ui", "/ui/tasks", &format!("/ui/tasks/{id}")] {
        let html = client()
            .get(format!("{base}{path}"))
            .header("cookie", &ro_cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("id=\"readonly\""), "{path}");
        for action in ["id=\"bulk\"", "id=\"enqueue\"", "data-action=", "class=\"sel\""] {
            assert!(!html.contains(action), "{path} offers {action} to the read-only key");
        }
    }
    assert_eq!(task_status(&base, &id).await, "cancelled");

    // Signing out forgets the cookie.
    let res = client().post(format!("{base}/ui/logout")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

/// Every `href`, `src` and `action` value in `html`.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\"", "action=\""] {
        for part in html.split(attr).skip(1) {
            out.push(part.split('"').next().unwrap().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_escape_user_text_and_link_relatively() {
    let db = TestDb::new("postgres").await;
    let app = start_in_process(&db.backend().await, &db.url(), &[], Registry::builtin()).await;
    let base = app.base.clone();
    let evil = "<script>alert('x')</script>\"><img src=x>";
    let id = support::enqueue(
        &base,
        json!({"type": "fail", "queue": evil, "payload": {"message": evil}, "max_attempts": 1}),
    )
    .await;
    wait_status(&base, &id, "failed", Duration::from_secs(10)).await;

    let pages = [
        "/ui".to_string(),
        "/ui/".to_string(),
        "/ui/tasks".to_string(),
        format!("/ui/tasks?queue={}", "%3Cscript%3E"),
        format!("/ui/tasks/{id}"),
        "/ui/workers".to_string(),
        "/ui/schedules".to_string(),
        "/ui/queues".to_string(),
    ];
    for path in &pages {
        let res = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(h["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
        assert_eq!(h["x-frame-options"], "DENY");
        let html = res.text().await.unwrap();
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x>"), "{path} shows user text as markup");
        // Behind a proxy at any prefix: every link resolves under it.
        let page_url = reqwest::Url::parse(&format!("http://proxy.example/some/prefix{path}")).unwrap();
        for link in links(&html) {
            assert!(!link.starts_with('/') && !link.contains("://"), "{path}: {link:?} is not relative");
            let resolved = page_url.join(&link).unwrap();
            assert!(resolved.path().starts_with("/some/prefix/"), "{path}: {link:?} leaves the prefix: {resolved}");
            if link.contains("ui/") && !link.contains("download") {
                let upstream = resolved.path().trim_start_matches("/some/prefix");
                let query = resolved.query().map(|q| format!("?{q}")).unwrap_or_default();
                let res = client().get(format!("{base}{upstream}{query}")).send().await.unwrap();
                assert!(
                    res.status() == 200 || res.status() == 405,
                    "{path}: {link} → {upstream} answers {}",
                    res.status()
                );
            }
        }
    }
    let detail = client().get(format!("{base}/ui/tasks/{id}")).send().await.unwrap().text().await.unwrap();
    // maud escapes `&`, `<`, `>` and `"`; a `'` needs no escaping in text or in a double-quoted attribute.
    assert!(detail.contains("&lt;script&gt;alert('x')&lt;/script&gt;"), "the payload is there, escaped");

    let res = client().get(format!("{base}/ui/tasks/{}", uuid::Uuid::now_v7())).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("id=\"page-error\""));
    let res = client().get(format!("{base}/ui/tasks/not-a-uuid")).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let res = client().get(format!("{base}/ui/tasks?status=done")).send().await.unwrap();
    assert_eq!(res.status(), 422);
    let res = client().get(format!("{base}/ui/issues/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = client().get(format!("{base}/ui/assets/app.js")).send().await.unwrap();
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    // Open (no key): the sign-in page is not needed, and says so by sending to the overview.
    let res = client().get(format!("{base}/ui/login")).send().await.unwrap();
    assert_eq!(res.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_page_shows_each_schedule_and_its_last_fire() {
    let db = TestDb::new("sqlite").await;
    let app = keyed_app(&db).await;
    let base = app.base.clone();
    let body = json!({ "name": "nightly.deps", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
                       "task": { "type": "echo" } });
    let (status, created) = send(client().post(format!("{base}/schedules")).bearer_auth(KEY).json(&body)).await;
    assert_eq!(status, 201, "{created}");
    let (status, fired) = send(client().post(format!("{base}/schedules/nightly.deps/trigger")).bearer_auth(KEY)).await;
    assert_eq!(status, 201, "{fired}");
    let task_id = fired["task_id"].as_str().unwrap().to_string();

    let page = |key: &'static str| {
        let base = base.clone();
        async move {
            let res = client().get(format!("{base}/ui/schedules")).bearer_auth(key).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.text().await.unwrap()
        }
    };
    let html = page(KEY).await;
    assert!(html.contains("href=\"../ui/schedules\" class=\"active\""), "the nav links the page");
    assert!(html.contains("nightly.deps") && html.contains("Europe/Berlin") && html.contains("30 2 * * *"));
    let words = created["cron_description"].as_str().unwrap();
    assert!(!words.is_empty() && html.contains(words), "the pattern in words: {words}");
    let next = created["upcoming"][0].as_str().unwrap();
    assert!(html.contains(&next[..16].replace('T', " ")), "the next fire {next} is shown");
    assert!(html.contains(&format!("ui/tasks/{task_id}")), "the last fire links its task");
    for action in ["pause", "trigger"] {
        assert!(html.contains(&format!("data-schedule-action=\"{action}\" data-name=\"nightly.deps\"")), "{action}");
    }
    // The read-only key sees the schedule and no button.
    let html = page(READ_KEY).await;
    assert!(html.contains("nightly.deps"));
    assert!(!html.contains("data-schedule-action"), "no buttons for the read-only key");
    // Paused: the button resumes.
    send(client().post(format!("{base}/schedules/nightly.deps/pause")).bearer_auth(KEY)).await;
    assert!(page(KEY).await.contains("data-schedule-action=\"resume\""));
}

/// `/ui/queues` (and a task's page) as the full and the read-only key see them.
async fn ui_page(base: &str, path: &str, key: &str) -> String {
    let res = client().get(format!("{base}{path}")).bearer_auth(key).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.text().await.unwrap()
}

async fn wait_done(base: &str, id: &str) {
    support::wait_for("the task to complete", Duration::from_secs(10), || async {
        (task_status(base, id).await == "completed").then_some(())
    })
    .await;
}

async fn queues_page(kind: &str) {
    let db = TestDb::new(kind).await;
    let app = keyed_app(&db).await;
    let base = app.base.clone();
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    // A queue whose name is markup, limited; a plain one, paused; tasks waiting in both.
    let evil = "<b>q</b>\"'&";
    let evil_path = devops_control_tower::url::encode(evil);
    let limited =
        enqueue(&base, json!({"type": "echo", "queue": evil, "run_at": later, "concurrency_key": "tenant<1>"})).await;
    let (s, q) = send(
        client()
            .put(format!("{base}/queues/{evil_path}"))
            .bearer_auth(KEY)
            .json(&json!({"concurrency": 2, "key_concurrency": 1, "rate": {"limit": 5, "per_s": 60}})),
    )
    .await;
    assert_eq!(s, 200, "{q}");
    // Paused first, so its task is due and yet never claimed.
    let (s, q) = send(client().post(format!("{base}/queues/held.q/pause")).bearer_auth(KEY)).await;
    assert_eq!((s.as_u16(), &q["paused"]), (200, &json!(true)), "{q}");
    let held = enqueue(&base, json!({"type": "echo", "queue": "held.q"})).await;
    let done = enqueue(&base, json!({"type": "echo", "queue": "plain"})).await;
    wait_done(&base, &done).await;

    let html = ui_page(&base, "/ui/queues", KEY).await;
    assert!(html.contains("href=\"../ui/queues\" class=\"active\""), "the nav links the page");
    let escaped = "&lt;b&gt;q&lt;/b&gt;&quot;'&amp;";
    assert!(!html.contains("<b>q</b>"), "the queue's name is shown as text");
    let row = html
        .split(&format!("<tr class=\"queue\" data-name=\"{escaped}\""))
        .nth(1)
        .expect("the row")
        .split("</tr>")
        .next()
        .unwrap();
    for cell in [
        "<td class=\"queued\">1</td>",
        "<td class=\"running\">0</td>",
        "<td class=\"concurrency\">2</td>",
        "<td class=\"key-concurrency\">1</td>",
        "<td class=\"rate\">5 per 60 s</td>",
    ] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    assert!(row.contains(&format!("data-queue-action=\"pause\" data-name=\"{escaped}\"")), "{row}");
    assert!(row.contains(&format!("class=\"queue-limits\" data-name=\"{escaped}\"")), "{row}");
    assert!(
        row.contains("name=\"concurrency\" type=\"number\" min=\"1\" max=\"1000000\" placeholder=\"none\" value=\"2\""),
        "{row}"
    );
    let paused_row = html
        .split("<tr class=\"queue\" data-name=\"held.q\"")
        .nth(1)
        .expect("the paused queue")
        .split("</tr>")
        .next()
        .unwrap();
    assert!(paused_row.contains("badge paused") && paused_row.contains("data-queue-action=\"resume\""), "{paused_row}");
    assert!(paused_row.contains("<td class=\"concurrency\">–</td>"), "no limit: {paused_row}");
    assert!(!html.contains("data-name=\"plain\""), "a queue without a setting or a live task is not listed");
    assert!(html.contains("id=\"queue-new\""), "a form for a queue not listed yet");

    // The read-only key: the same queues, no control.
    let html = ui_page(&base, "/ui/queues", READ_KEY).await;
    assert!(html.contains(escaped) && html.contains("data-name=\"held.q\""));
    for control in ["data-queue-action", "queue-limits", "queue-new"] {
        assert!(!html.contains(control), "the read-only key is offered {control}");
    }

    // A queued task's page says what holds it back, and shows its key (escaped).
    let page = ui_page(&base, &format!("/ui/tasks/{limited}"), READ_KEY).await;
    let note = page.split("id=\"held-back\">").nth(1).expect("a held-back note").split("</p>").next().unwrap();
    assert_eq!(
        note,
        format!(
            "queue {escaped} is limited (concurrency 2, key_concurrency 1, rate 5 per 60 s); 0 of its tasks running"
        )
    );
    assert!(page.contains("id=\"concurrency-key\">tenant&lt;1&gt;</span>"), "the key is shown");
    let page = ui_page(&base, &format!("/ui/tasks/{held}"), KEY).await;
    assert!(page.contains("id=\"held-back\">held back: queue held.q is paused</p>"), "the pause is named");
    let page = ui_page(&base, &format!("/ui/tasks/{done}"), KEY).await;
    assert!(!page.contains("held-back") && !page.contains("concurrency-key"), "nothing holds a finished task");

    // Resumed and its limits removed: the page follows.
    send(client().post(format!("{base}/queues/held.q/resume")).bearer_auth(KEY)).await;
    wait_done(&base, &held).await;
    let (s, _) = send(
        client()
            .put(format!("{base}/queues/{evil_path}"))
            .bearer_auth(KEY)
            .json(&json!({"concurrency": null, "key_concurrency": null, "rate": null})),
    )
    .await;
    assert_eq!(s, 200);
    let page = ui_page(&base, &format!("/ui/tasks/{limited}"), KEY).await;
    assert!(!page.contains("held-back"), "no limit, no note");
    let html = ui_page(&base, "/ui/queues", KEY).await;
    assert!(!html.contains("badge paused"), "resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_page_shows_counts_limits_and_controls_on_sqlite() {
    queues_page("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_page_shows_counts_limits_and_controls_on_postgres() {
    queues_page("postgres").await;
}

/// Starts a workflow through the API; its id and each step's task id by key.
async fn start_workflow(base: &str, body: Value) -> (String, std::collections::HashMap<String, String>) {
    let (status, created) = send(client().post(format!("{base}/workflows")).bearer_auth(KEY).json(&body)).await;
    assert_eq!(status, 201, "{created}");
    let steps = created["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["key"].as_str().unwrap().to_string(), s["task_id"].as_str().unwrap().to_string()))
        .collect();
    (created["workflow_id"].as_str().unwrap().to_string(), steps)
}

/// The part of `html` from `start` to the next `end`.
fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    html.split(start).nth(1).unwrap_or_else(|| panic!("{start} in {html}")).split(end).next().unwrap()
}

async fn workflow_pages(kind: &str) {
    let db = TestDb::new(kind).await;
    // `nobody-serves`: a type no handler runs, so its steps stay queued.
    let app = start_in_process(
        &db.backend().await,
        &db.url(),
        &[("JCT_API_KEY", KEY), ("JCT_READONLY_API_KEY", READ_KEY), ("JCT_TASK_TYPES", "nobody-serves")],
        Registry::builtin(),
    )
    .await;
    let base = app.base.clone();
    // A diamond of echo steps that runs to its end; a workflow named in markup whose first
    // step nobody serves (running, its second step waiting); one of 260 steps, too many to draw.
    let (diamond, d) = start_workflow(
        &base,
        json!({"name": "ui-diamond", "steps": [
            {"key": "a", "type": "echo"},
            {"key": "b", "type": "echo", "depends_on": ["a"]},
            {"key": "c", "type": "echo", "depends_on": ["a"]},
            {"key": "d", "type": "echo", "depends_on": ["b", "c"]}]}),
    )
    .await;
    let evil = "<i>wf</i>";
    let (held, h) = start_workflow(
        &base,
        json!({"name": evil, "steps": [
            {"key": "first", "type": "nobody-serves"},
            {"key": "then", "type": "echo", "depends_on": ["first"], "on_parent_failure": "run"}]}),
    )
    .await;
    let mut steps = vec![json!({"key": "root", "type": "nobody-serves"})];
    steps.extend(
        (0..259).map(|i| json!({"key": format!("leaf-{i:03}"), "type": "nobody-serves", "depends_on": ["root"]})),
    );
    let (big, _) = start_workflow(&base, json!({"name": "ui-big", "steps": steps})).await;
    support::wait_for("the diamond to complete", Duration::from_secs(20), || async {
        let (_, wf) = send(client().get(format!("{base}/workflows/{diamond}")).bearer_auth(KEY)).await;
        (wf["status"] == "completed").then_some(())
    })
    .await;

    // The list: every workflow with its steps by status, newest first; the nav links it.
    let html = ui_page(&base, "/ui/workflows", KEY).await;
    assert!(html.contains("href=\"../ui/workflows\" class=\"active\""), "the nav links the page");
    let row = between(&html, &format!("<tr class=\"workflow\" data-id=\"{diamond}\">"), "</tr>");
    assert!(row.contains(&format!("href=\"../ui/workflows/{diamond}\">ui-diamond</a>")), "{row}");
    assert!(row.contains("<span class=\"status s-completed\">completed</span>"), "{row}");
    assert!(
        row.contains("<b>4</b>: <span class=\"count s-completed\" data-status=\"completed\"><b>4</b> completed</span>"),
        "{row}"
    );
    let row = between(&html, &format!("<tr class=\"workflow\" data-id=\"{held}\">"), "</tr>");
    assert!(row.contains("&lt;i&gt;wf&lt;/i&gt;") && !html.contains(evil), "the name is text: {row}");
    assert!(
        row.contains("<b>1</b> waiting</span> · <span class=\"count s-queued\" data-status=\"queued\"><b>1</b> queued"),
        "{row}"
    );
    let order: Vec<usize> =
        [&big, &held, &diamond].iter().map(|id| html.find(&format!("data-id=\"{id}\"")).unwrap()).collect();
    assert!(order[0] < order[1] && order[1] < order[2], "newest first");
    // Filters and paging as GET /workflows has them.
    let html = ui_page(&base, "/ui/workflows?status=completed&name=", KEY).await;
    assert!(html.contains(&diamond) && !html.contains(&held) && !html.contains(&big));
    assert!(html.contains("<option selected>completed</option>"), "the filter is shown");
    let html = ui_page(&base, &format!("/ui/workflows?name={}", devops_control_tower::url::encode(evil)), KEY).await;
    assert!(html.contains(&held) && !html.contains(&diamond));
    let html = ui_page(&base, "/ui/workflows?limit=1", KEY).await;
    assert!(html.contains(&big) && !html.contains(&held));
    let next = between(&html, "id=\"next-page\" href=\"", "\"").replace("&amp;", "&");
    assert_eq!(next, format!("../ui/workflows?limit=1&before={big}"));
    let html = ui_page(&base, &format!("/ui/workflows?limit=1&before={big}"), KEY).await;
    assert!(
        html.contains(&held) && !html.contains(&format!("data-id=\"{big}\"")) && html.contains("id=\"first-page\"")
    );
    let res = client().get(format!("{base}/ui/workflows?status=done")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("unknown workflow status"), "the page says why");

    // One workflow: every step drawn, coloured by its status and linking its task page.
    let html = ui_page(&base, &format!("/ui/workflows/{diamond}"), KEY).await;
    assert!(html.contains(&format!("data-workflow=\"{diamond}\" data-wf-status=\"completed\"")), "the script's data");
    assert_eq!(html.matches("<a class=\"node s-completed\"").count(), 4, "{html}");
    assert_eq!(html.matches("<path class=\"edge\"").count(), 4);
    for (key, task) in &d {
        assert!(
            html.contains(&format!(
                "<a class=\"node s-completed\" href=\"../../ui/tasks/{task}\" data-step=\"{task}\" data-key=\"{key}\">"
            )),
            "{key}"
        );
        assert!(html.contains(&format!("<tr class=\"step\" data-step=\"{task}\" data-key=\"{key}\">")));
    }
    assert!(html.contains("data-from=\"b\" data-to=\"d\"") && html.contains("data-from=\"a\" data-to=\"c\""));
    assert!(!html.contains("graph-capped") && !html.contains("data-workflow-action"), "completed: nothing to do");
    let html = ui_page(&base, &format!("/ui/workflows/{held}"), KEY).await;
    assert!(html.contains("data-wf-status=\"running\" data-poll=\"2000\""), "a running workflow is read again");
    assert!(html.contains(&format!("data-workflow-action=\"cancel\" data-name=\"{held}\"")));
    assert!(html.contains("<a class=\"node s-queued\"") && html.contains("<a class=\"node s-waiting\""));
    assert!(html.contains("<span id=\"wf-name\">&lt;i&gt;wf&lt;/i&gt;</span>"));
    let html = ui_page(&base, &format!("/ui/workflows/{held}"), READ_KEY).await;
    assert!(!html.contains("data-workflow-action") && html.contains("data-workflow="), "read-only: no control");

    // 260 steps: the graph stops at 250 (and says so), the table pages.
    let html = ui_page(&base, &format!("/ui/workflows/{big}"), KEY).await;
    assert!(between(&html, "id=\"graph-capped\">", "</p>").contains("first 250 of 260 steps"), "{html}");
    assert_eq!(html.matches("<a class=\"node ").count(), 250);
    assert!(html.contains("data-poll=\"10000\""), "a large workflow is read less often");
    assert_eq!(html.matches("<tr class=\"step\"").count(), 250);
    assert_eq!(between(&html, "id=\"steps-next\" href=\"", "\""), format!("../../ui/workflows/{big}?offset=250"));
    let html = ui_page(&base, &format!("/ui/workflows/{big}?offset=250"), KEY).await;
    assert_eq!(html.matches("<tr class=\"step\"").count(), 10);
    assert!(
        html.contains("steps 251–260 of 260") && html.contains("id=\"steps-prev\"") && !html.contains("steps-next")
    );
    for (path, status) in [
        ("/ui/workflows/not-an-id".to_string(), 400),
        (format!("/ui/workflows/{}", uuid::Uuid::now_v7()), 404),
        (format!("/ui/workflows/{big}?offset=x"), 400),
    ] {
        let res = client().get(format!("{base}{path}")).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        assert!(res.text().await.unwrap().contains("id=\"page-error\""));
    }

    // A step's task page: its workflow, its parents and its dependants, each linked.
    let html = ui_page(&base, &format!("/ui/tasks/{}", d["d"]), READ_KEY).await;
    let section = between(&html, "<section id=\"workflow-step\">", "</section>");
    assert!(section.contains(&format!("href=\"../../ui/workflows/{diamond}\">ui-diamond</a>")), "{section}");
    let parents = between(section, "id=\"step-parents\">", "</ul>");
    for key in ["b", "c"] {
        assert!(parents.contains(&format!("href=\"../../ui/tasks/{}\"", d[key])), "{key}: {parents}");
    }
    assert!(parents.contains("s-completed") && !parents.contains(&d["a"]), "{parents}");
    assert!(between(section, "id=\"step-dependants\">", "</ul>").contains("None."), "{section}");
    let html = ui_page(&base, &format!("/ui/tasks/{}", d["a"]), KEY).await;
    let section = between(&html, "<section id=\"workflow-step\">", "</section>");
    assert!(between(section, "id=\"step-parents\">", "</ul>").contains("None: a root step."));
    let dependants = between(section, "id=\"step-dependants\">", "</ul>");
    assert!(dependants.contains(&d["b"]) && dependants.contains(&d["c"]) && !dependants.contains(&d["d"]));
    let html = ui_page(&base, &format!("/ui/tasks/{}", h["then"]), KEY).await;
    assert!(html.contains("id=\"on-parent-failure\">run</span>") && html.contains("s-waiting"));
    let plain = enqueue(&base, json!({"type": "echo"})).await;
    assert!(!ui_page(&base, &format!("/ui/tasks/{plain}"), KEY).await.contains("workflow-step"), "no step, no section");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_pages_list_draw_and_link_steps_on_sqlite() {
    workflow_pages("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_pages_list_draw_and_link_steps_on_postgres() {
    workflow_pages("postgres").await;
}

/// 10,000 steps (a root, 9,998 between, a sink waiting for them all): the workflow's page
/// draws 250 and pages its table, the sink's task page links 100 of its parents, and each
/// page answers within seconds (a layout or a list quadratic in the steps would not).
async fn ten_thousand_steps(kind: &str) {
    let db = TestDb::new(kind).await;
    let app = keyed_app(&db).await;
    let base = app.base.clone();
    // The root is due in 2999: nothing runs while the test looks.
    let mut steps = vec![json!({ "key": "root", "type": "echo", "run_at": "2999-01-01T00:00:00Z" })];
    let middle: Vec<String> = (0..9_998).map(|i| format!("m{i:04}")).collect();
    steps.extend(middle.iter().map(|k| json!({ "key": k, "type": "echo", "depends_on": ["root"] })));
    steps.push(json!({ "key": "sink", "type": "echo", "depends_on": middle }));
    let (id, tasks) = start_workflow(&base, json!({ "name": "wide", "steps": steps })).await;
    let timed = |path: String| {
        let base = base.clone();
        async move {
            let started = std::time::Instant::now();
            let html = ui_page(&base, &path, READ_KEY).await;
            let took = started.elapsed();
            assert!(took < Duration::from_secs(15), "{kind}: {path} took {took:?}");
            html
        }
    };
    let html = timed(format!("/ui/workflows/{id}")).await;
    assert!(between(&html, "id=\"graph-capped\">", "</p>").contains("first 250 of 10,000 steps"), "{kind}");
    assert_eq!(html.matches("<a class=\"node ").count(), 250, "{kind}");
    assert_eq!(html.matches("<path class=\"edge\"").count(), 249, "{kind}: root to each drawn step");
    assert!(!html.contains("data-key=\"sink\""), "{kind}: the last layer is not drawn");
    assert_eq!(html.matches("<tr class=\"step\"").count(), 250, "{kind}");
    assert!(html.contains("steps 1–250 of 10000") && html.contains("data-poll=\"10000\""), "{kind}");
    let html = timed(format!("/ui/workflows/{id}?offset=9750")).await;
    assert!(html.contains("<tr class=\"step\" data-step=") && html.contains("data-key=\"sink\""), "{kind}");
    assert!(html.contains("steps 9751–10000 of 10000") && !html.contains("steps-next"), "{kind}");
    let html = timed(format!("/ui/tasks/{}", tasks["sink"])).await;
    let parents = between(&html, "id=\"step-parents\">", "</ul>");
    assert_eq!(parents.matches("<li data-key=").count(), 100, "{kind}");
    assert!(parents.contains("and 9898 more: see"), "{kind}: {}", &parents[parents.len() - 300..]);
    let html = timed(format!("/ui/tasks/{}", tasks["root"])).await;
    assert!(between(&html, "id=\"step-dependants\">", "</ul>").contains("and 9898 more"), "{kind}");
    let html = timed("/ui/workflows".to_string()).await;
    assert!(
        html.contains(
            "<b>10,000</b>: <span class=\"count s-waiting\" data-status=\"waiting\"><b>9999</b> waiting</span>"
        ),
        "{kind}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_steps_are_drawn_capped_on_sqlite() {
    ten_thousand_steps("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_steps_are_drawn_capped_on_postgres() {
    ten_thousand_steps("postgres").await;
}
