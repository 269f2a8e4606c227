//! The dashboard in a real browser: Debian's Chromium, headless, against the real daemon
//! binary on PostgreSQL. Signs in with the key, loads every view, filters, watches a running
//! task's log grow without a reload (a remote worker posts the lines), cancels it with the
//! button, retries a failed task, enqueues from the form, runs bulk actions, checks that a
//! payload's markup is shown as text, that forged requests are refused, that the read-only
//! key sees no action, and that the pages work behind a proxy under a path prefix; on the
//! queues page, pauses, limits and resumes a queue with the buttons and the form; on a
//! workflow's page, follows a diamond's colours live as a worker runs it. Saves a
//! screenshot of every view under `target/ui-screenshots/`.

use crate::browser;
use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{PgDb, Spawn};
use browser::Browser;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

const KEY: &str = "ui-full-key";
const READ_KEY: &str = "ui-read-key";

fn screenshots() -> PathBuf {
    // <target>/debug/devops-control-tower → <target>/ui-screenshots
    PathBuf::from(support::BIN).parent().unwrap().parent().unwrap().join("ui-screenshots")
}

/// An API client with the full key.
fn api() -> reqwest::Client {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap());
    reqwest::Client::builder().default_headers(h).timeout(Duration::from_secs(30)).build().unwrap()
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let res = api().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, path: &str) -> Value {
    let res = api().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

async fn enqueue(base: &str, body: Value) -> String {
    let (status, task) = post(base, "/tasks/enqueue", body).await;
    assert_eq!(status, 201, "{task}");
    task["task_id"].as_str().unwrap().to_string()
}

async fn wait_status(base: &str, id: &str, status: &str) -> Value {
    support::wait_for(&format!("task {id} to be {status}"), Duration::from_secs(20), || async {
        let t = get(base, &format!("/tasks/{id}")).await;
        (t["status"] == status).then_some(t)
    })
    .await
}

/// A proxy that mounts the daemon under `/jct/` (strips the prefix, forwards the rest), as
/// a reverse proxy in front of the dashboard would.
async fn prefix_proxy(upstream: String) -> (String, tokio::task::JoinHandle<()>) {
    use warp::Filter;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let route = warp::path("jct")
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::bytes())
        .then(move |tail: warp::path::Tail, method, headers: HeaderMap, query: String, body| {
            let (client, upstream) = (client.clone(), upstream.clone());
            async move {
                let q = if query.is_empty() { String::new() } else { format!("?{query}") };
                let body: Vec<u8> = <_ as AsRef<[u8]>>::as_ref(&body).to_vec();
                let mut req = client.request(method, format!("{upstream}/{}{q}", tail.as_str())).body(body);
                for (k, v) in headers.iter() {
                    if !matches!(k.as_str(), "host" | "content-length" | "connection") {
                        req = req.header(k, v);
                    }
                }
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                let res_headers = res.headers().clone();
                let bytes = res.bytes().await.unwrap().to_vec();
                let mut out = warp::reply::Response::new(bytes.into());
                *out.status_mut() = warp::http::StatusCode::from_u16(status).unwrap();
                for (k, v) in res_headers.iter() {
                    if !matches!(k.as_str(), "content-length" | "transfer-encoding" | "connection") {
                        out.headers_mut().append(k.clone(), v.clone());
                    }
                }
                out
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/jct"), server)
}

/// A page on another origin that posts a form to `target` as soon as it loads: the classic
/// cross-site request forgery.
async fn attacker_site(target: String) -> (String, tokio::task::JoinHandle<()>) {
    use warp::Filter;
    let page = format!(
        "<!doctype html><html><body><form method=\"post\" action=\"{target}\"></form>\
         <script>document.forms[0].submit()</script></body></html>"
    );
    let route = warp::any().map(move || warp::reply::html(page.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(warp::serve(route).incoming(listener).run());
    // `localhost`, not 127.0.0.1: another site for the browser, so SameSite applies too.
    (format!("http://localhost:{}/", addr.port()), server)
}

/// A `serve` daemon on `db` with both API keys and two slots.
/// Signs in on the dashboard with the full key and waits for the overview.
async fn sign_in(b: &Browser, base: &str) {
    b.goto(&format!("{base}/ui")).await;
    b.type_into("#key", KEY).await;
    b.click("#login-submit").await;
    b.wait("#status-counts").await;
}

/// Signs out, then in again with the read-only key.
async fn sign_in_again_read_only(b: &Browser) {
    b.click("header .logout button").await;
    b.wait("#login").await;
    b.type_into("#key", READ_KEY).await;
    b.click("#login-submit").await;
    b.wait("#readonly").await;
}

fn dashboard_daemon(db: &PgDb) -> Spawn<'static> {
    Spawn::new()
        .env("DATABASE_URL", db.url.clone())
        .env("JCT_API_KEY", KEY)
        .env("JCT_READONLY_API_KEY", READ_KEY)
        .env("JCT_WORKERS", "2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let db = PgDb::new().await;
    let daemon = dashboard_daemon(&db).env("JCT_RETRY_BASE_MS", "50").start();
    let base = daemon.url("");
    let shots = screenshots();

    // Data to look at: a completed task whose payload holds markup, a failed one, and a
    // CWOM Issue with a context packet and a linked, completed task (a Run).
    let xss =
        enqueue(&base, json!({"type": "echo", "payload": {"note": "<script>window.__xss = 1</script><b>bold</b>"}}))
            .await;
    let failed =
        enqueue(&base, json!({"type": "fail", "payload": {"message": "it broke <i>here</i>"}, "max_attempts": 1}))
            .await;
    let (s, repo) =
        post(&base, "/cwom/repos", json!({"name": "Control Tower", "slug": "jct-ui", "source": {"system": "github"}}))
            .await;
    assert_eq!(s, 201, "{repo}");
    let (s, issue) = post(
        &base,
        "/cwom/issues",
        json!({"repo": {"kind": "Repo", "id": repo["id"]}, "title": "Show the queue", "type": "feature"}),
    )
    .await;
    assert_eq!(s, 201, "{issue}");
    let issue_id = issue["id"].as_str().unwrap().to_string();
    let (s, packet) = post(
        &base,
        "/cwom/context-packets",
        json!({"for_issue": {"kind": "Issue", "id": issue_id}, "version": "1", "summary": "Operators want a dashboard"}),
    )
    .await;
    assert_eq!(s, 201, "{packet}");
    let linked = enqueue(&base, json!({"type": "echo", "payload": {"for": "issue"}, "cwom_issue_id": issue_id})).await;
    wait_status(&base, &xss, "completed").await;
    wait_status(&base, &failed, "failed").await;
    wait_status(&base, &linked, "completed").await;

    let b = Browser::start().await;

    // Signing in: the key is asked for once; a wrong one is refused.
    b.goto(&format!("{base}/ui")).await;
    b.wait("#login").await;
    b.type_into("#key", "wrong").await;
    b.click("#login-submit").await;
    b.wait_text("#login-error", "not valid", Duration::from_secs(10)).await;
    b.type_into("#key", KEY).await;
    b.click("#login-submit").await;
    b.wait("#status-counts").await;
    let cookie_visible = b.js("return document.cookie.includes('jct_session')", json!([])).await;
    assert_eq!(cookie_visible, false, "the session cookie is HttpOnly");

    // Overview: counts by status, the chart, queues, workers.
    assert_eq!(b.text("#count-completed .n").await, "2");
    assert_eq!(b.text("#count-failed .n").await, "1");
    assert_eq!(b.text("#chart-completed").await, "2");
    assert_eq!(b.text("#chart-failed").await, "1");
    assert!(b.count("#chart rect.c").await >= 1, "the chart has a bar");

    // Tasks: the list, then the status filter through the form.
    b.goto(&format!("{base}/ui/tasks")).await;
    b.wait("#tasks").await;
    assert_eq!(b.count("#tasks tbody tr[data-id]").await, 3);
    b.js("document.getElementById('f-status').value = 'failed'", json!([])).await;
    b.click("#f-apply").await;
    support::wait_for("the filtered page", Duration::from_secs(10), || async {
        b.url().await.contains("status=failed").then_some(())
    })
    .await;
    b.wait("#tasks").await;
    assert_eq!(b.count("#tasks tbody tr[data-id]").await, 1);
    assert!(b.find(&format!("tr[data-id='{failed}']")).await.is_some());
    assert_eq!(b.text("#tasks .err").await, "it broke <i>here</i>", "the error is shown as text");
    b.screenshot(&shots.join("tasks.png")).await;

    // A payload with markup is shown as text and never runs.
    b.goto(&format!("{base}/ui/tasks/{xss}")).await;
    let payload = b.wait_text("#payload", "<script>", Duration::from_secs(5)).await;
    assert!(payload.contains("<b>bold</b>"), "{payload}");
    assert_eq!(b.js("return window.__xss === undefined", json!([])).await, true, "the payload's script did not run");
    assert_eq!(b.count("main script, main b").await, 0, "no markup from the payload in the page");
    assert!(b.text("#output").await.contains("\"status\": \"completed\""), "output.json is shown");
    assert!(b.text("#input").await.contains(&xss), "input.json is shown");

    // Retry a failed task with the button: it runs again (and fails again).
    b.goto(&format!("{base}/ui/tasks/{failed}")).await;
    let before = get(&base, &format!("/tasks/{failed}")).await;
    b.click("#retry").await;
    b.wait_text("#flash", "queued again", Duration::from_secs(10)).await;
    support::wait_for("the retried task to run again", Duration::from_secs(20), || async {
        let t = get(&base, &format!("/tasks/{failed}")).await;
        (t["status"] == "failed" && t["finished_at"] != before["finished_at"]).then_some(())
    })
    .await;

    // The CWOM Issue with its packet, its run and the task's link to both.
    b.goto(&format!("{base}/ui/tasks/{linked}")).await;
    b.click("#issue-link").await;
    b.wait_text("#issue-title", "Show the queue", Duration::from_secs(10)).await;
    assert!(b.text("#packets").await.contains("Operators want a dashboard"));
    assert!(b.text("#runs").await.contains(&linked), "the run links its task");
    assert!(b.count("#runs li.artifact").await >= 1, "the run's trace artifact is listed");
    b.screenshot(&shots.join("issue.png")).await;

    // Live log: a remote worker holds a task and posts lines while the page is open.
    let (s, worker) = post(&base, "/workers", json!({"name": "ui-remote", "types": ["ui-job"], "max_slots": 2})).await;
    assert_eq!(s, 201, "{worker}");
    let worker_id = worker["worker_id"].as_str().unwrap().to_string();
    let live = enqueue(&base, json!({"type": "ui-job", "payload": {"step": 1}})).await;
    let (s, claimed) = post(&base, "/tasks/claim", json!({"worker_id": worker_id, "max": 1, "wait_ms": 5000})).await;
    assert_eq!(s, 200, "{claimed}");
    let token = claimed["tasks"][0]["lease_token"].clone();
    assert_eq!(claimed["tasks"][0]["task_id"], live.as_str());
    let log = |seq: u64, line: &str| {
        let (base, live, token, line) = (base.clone(), live.clone(), token.clone(), line.to_string());
        async move {
            let (s, body) =
                post(&base, &format!("/tasks/{live}/log"), json!({"lease_token": token, "seq": seq, "lines": [line]}))
                    .await;
            assert_eq!(s, 200, "{body}");
        }
    };
    log(1, "first line from the worker").await;
    b.goto(&format!("{base}/ui/tasks/{live}")).await;
    b.wait_text("#log", "first line from the worker", Duration::from_secs(10)).await;
    b.js("window.__same_page = true", json!([])).await;
    log(2, "second line, <em>later</em>").await;
    b.wait_text("#log", "second line, <em>later</em>", Duration::from_secs(10)).await;
    assert_eq!(b.js("return window.__same_page === true", json!([])).await, true, "no reload: the line arrived live");

    // The workers view shows the remote worker holding the task.
    b.goto(&format!("{base}/ui/workers")).await;
    let row = b.wait_text("#workers", "ui-remote", Duration::from_secs(10)).await;
    assert!(row.contains("ui-job") && row.contains("1/2"), "{row}");
    assert!(b.text("#workers").await.contains(&live[..13]), "the running task is listed");
    b.screenshot(&shots.join("workers.png")).await;

    // Cancel the running task with the button and see its status change.
    b.goto(&format!("{base}/ui/tasks/{live}")).await;
    b.wait_text("#log", "second line", Duration::from_secs(10)).await;
    b.screenshot(&shots.join("task.png")).await;
    b.click("#cancel").await;
    b.wait_text("#status", "cancelled", Duration::from_secs(10)).await;
    wait_status(&base, &live, "cancelled").await;

    // Enqueue from the form: the page refuses a payload that is not JSON, the server a type
    // nobody serves; a good one lands on the new task's page.
    b.goto(&format!("{base}/ui/tasks")).await;
    b.click("#enqueue-box summary").await;
    b.type_into("#e-type", "echo").await;
    b.type_into("#e-payload", "{not json").await;
    b.click("#e-submit").await;
    b.wait_text("#e-error", "not valid JSON", Duration::from_secs(5)).await;
    b.type_into("#e-type", "no-such-type").await;
    b.type_into("#e-payload", "{}").await;
    b.click("#e-submit").await;
    b.wait_text("#e-error", "unknown task type", Duration::from_secs(5)).await;
    b.type_into("#e-type", "echo").await;
    b.type_into("#e-payload", "{\"from\": \"the form\"}").await;
    b.click("#e-submit").await;
    b.wait("#task-id").await;
    let new_id = b.text("#task-id").await;
    let t = wait_status(&base, &new_id, "completed").await;
    assert_eq!(t["payload"], json!({"from": "the form"}));

    // Bulk: cancel the selected tasks, then retry every task matching the filter.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let mut bulk_ids = Vec::new();
    for _ in 0..3 {
        bulk_ids.push(enqueue(&base, json!({"type": "echo", "queue": "bulkq", "run_at": later})).await);
    }
    b.goto(&format!("{base}/ui/tasks?queue=bulkq")).await;
    b.wait("#tasks").await;
    assert_eq!(b.count("#tasks tbody tr[data-id]").await, 3);
    b.click("#select-all").await;
    b.click("#bulk-cancel-selected").await;
    b.wait_text("#flash", "Cancelled 3 of 3", Duration::from_secs(10)).await;
    for id in &bulk_ids {
        wait_status(&base, id, "cancelled").await;
    }
    b.goto(&format!("{base}/ui/tasks?queue=bulkq&status=cancelled")).await;
    b.click("#bulk-retry-filter").await;
    b.wait_text("#bulk-retry-filter", "Click again", Duration::from_secs(5)).await;
    b.click("#bulk-retry-filter").await;
    b.wait_text("#flash", "Queued again 3 of 3", Duration::from_secs(10)).await;
    for id in &bulk_ids {
        // A retry runs the task now, whatever its first run_at was.
        wait_status(&base, id, "completed").await;
    }

    // Forged requests: the page's own script without the CSRF token is refused, and a form
    // posted from another site changes nothing.
    let victim = &enqueue(&base, json!({"type": "echo", "queue": "bulkq", "run_at": later})).await;
    let forged = b
        .js_async(
            "const done = arguments[arguments.length - 1];\
             fetch(document.body.dataset.root + 'tasks/' + arguments[0] + '/cancel', {method: 'POST', credentials: 'same-origin'})\
               .then(r => r.json().then(j => done([r.status, j.error])));",
            json!([victim]),
        )
        .await;
    assert_eq!(forged, json!([403, "csrf_rejected"]));
    let (evil, evil_server) = attacker_site(format!("{base}/tasks/{victim}/cancel")).await;
    b.goto(&evil).await;
    support::wait_for("the forged form to be answered", Duration::from_secs(10), || async {
        (!b.url().await.starts_with("http://localhost")).then_some(())
    })
    .await;
    let body = b.text("body").await;
    assert!(body.contains("cross_origin") || body.contains("unauthorized"), "refused: {body}");
    assert_eq!(get(&base, &format!("/tasks/{victim}")).await["status"], "queued", "the forged cancel changed nothing");
    evil_server.abort();

    // Behind a proxy under /jct/: pages, their styles and their links work.
    let (proxied, proxy_server) = prefix_proxy(base.clone()).await;
    b.goto(&format!("{proxied}/ui/tasks?queue=bulkq")).await;
    b.wait("#tasks").await;
    let styled = b.js("return getComputedStyle(document.querySelector('header')).display", json!([])).await;
    assert_eq!(styled, "flex", "the stylesheet loads through the prefix");
    b.click(&format!("a[href$='ui/tasks/{victim}']")).await;
    b.wait("#task-id").await;
    assert!(b.url().await.starts_with(&format!("{proxied}/ui/tasks/{victim}")), "{}", b.url().await);
    b.click("header nav a[href$='ui/workers']").await;
    b.wait("#workers").await;
    assert!(b.url().await.starts_with(&format!("{proxied}/ui/workers")));
    proxy_server.abort();

    // The overview again, with all of the above in it.
    b.goto(&format!("{base}/ui")).await;
    b.wait_text("#count-cancelled", "1", Duration::from_secs(10)).await;
    assert_eq!(b.text("#workers-alive").await, "1");
    b.screenshot(&shots.join("overview.png")).await;

    // The read-only key: sign out, sign in with it; no action is offered and the API refuses
    // one even with the session's token.
    sign_in_again_read_only(&b).await;
    b.goto(&format!("{base}/ui/tasks")).await;
    b.wait("#tasks").await;
    assert_eq!(b.count("#bulk, #enqueue, input.sel").await, 0, "no actions for the read-only key");
    b.goto(&format!("{base}/ui/tasks/{victim}")).await;
    b.wait("#task-id").await;
    assert_eq!(b.count("#cancel, #retry").await, 0);
    let refused = b
        .js_async(
            "const done = arguments[arguments.length - 1];\
             fetch(document.body.dataset.root + 'tasks/' + arguments[0] + '/cancel', {method: 'POST', credentials: 'same-origin',\
               headers: {'X-CSRF-Token': document.body.dataset.csrf}})\
               .then(r => r.json().then(j => done([r.status, j.error])));",
            json!([victim]),
        )
        .await;
    assert_eq!(refused, json!([403, "read_only_key"]));
    assert_eq!(get(&base, &format!("/tasks/{victim}")).await["status"], "queued");
    b.screenshot(&shots.join("readonly-task.png")).await;
    for view in ["overview", "tasks", "task", "workers", "issue", "readonly-task"] {
        let png = std::fs::read(shots.join(format!("{view}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{view}.png is a real screenshot");
    }
}

/// The queues page in Chromium: a click on Pause pauses the queue (seen through the API),
/// the limits form sets and removes limits, Resume lets the held task run, and the
/// read-only key sees the queue without any control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_page_pauses_resumes_and_limits_in_a_real_browser() {
    let db = PgDb::new().await;
    let daemon = dashboard_daemon(&db).start();
    let base = daemon.url("");
    let shots = screenshots();
    // A queue with a task waiting for its run_at, so that the queue is listed.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    enqueue(&base, json!({"type": "echo", "queue": "browser.q", "run_at": later})).await;

    let b = Browser::start().await;
    sign_in(&b, &base).await;
    b.click("header nav a[href$='ui/queues']").await;
    let row = "tr.queue[data-name='browser.q']";
    b.wait(row).await;
    assert_eq!(b.text(&format!("{row} td.queued")).await, "1");

    // Pause with the button: the API sees it, and the page (reloaded) offers Resume.
    b.click(&format!("{row} button[data-queue-action='pause']")).await;
    b.wait_text("#flash", "browser.q paused", Duration::from_secs(10)).await;
    assert_eq!(get(&base, "/queues/browser.q").await["paused"], true);
    b.wait(&format!("{row}[data-paused='true'] button[data-queue-action='resume']")).await;
    // Paused: a due task of the queue stays queued.
    let held = enqueue(&base, json!({"type": "echo", "queue": "browser.q"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&base, &format!("/tasks/{held}")).await["status"], "queued");
    b.goto(&format!("{base}/ui/tasks/{held}")).await;
    b.wait_text("#held-back", "held back: queue browser.q is paused", Duration::from_secs(10)).await;

    // Limits through the form; an empty field sends null.
    b.goto(&format!("{base}/ui/queues")).await;
    b.click(&format!("{row} details.limits summary")).await;
    let form = format!("{row} form.queue-limits");
    b.type_into(&format!("{form} input[name='concurrency']"), "3").await;
    b.type_into(&format!("{form} input[name='rate_limit']"), "20").await;
    b.type_into(&format!("{form} input[name='rate_per_s']"), "60").await;
    b.click(&format!("{form} button[type='submit']")).await;
    b.wait_text("#flash", "limits saved", Duration::from_secs(10)).await;
    let q = get(&base, "/queues/browser.q").await;
    assert_eq!(
        (&q["concurrency"], &q["key_concurrency"], &q["rate"]),
        (&json!(3), &Value::Null, &json!({"limit": 20, "per_s": 60.0}))
    );
    b.wait_text(&format!("{row} td.concurrency"), "3", Duration::from_secs(10)).await;
    b.screenshot(&shots.join("queues.png")).await;
    // A rate with one number of two is refused by the page before anything is sent.
    b.click(&format!("{row} details.limits summary")).await;
    b.type_into(&format!("{form} input[name='rate_per_s']"), "").await;
    b.click(&format!("{form} button[type='submit']")).await;
    b.wait_text(&format!("{form} .error"), "needs both", Duration::from_secs(5)).await;
    assert_eq!(get(&base, "/queues/browser.q").await["rate"], json!({"limit": 20, "per_s": 60.0}));

    // Resume with the button: the held task runs.
    b.goto(&format!("{base}/ui/queues")).await;
    b.click(&format!("{row} button[data-queue-action='resume']")).await;
    b.wait_text("#flash", "browser.q resumed", Duration::from_secs(10)).await;
    assert_eq!(get(&base, "/queues/browser.q").await["paused"], false);
    wait_status(&base, &held, "completed").await;

    // The read-only key: the queue, no control.
    sign_in_again_read_only(&b).await;
    b.goto(&format!("{base}/ui/queues")).await;
    b.wait(row).await;
    assert_eq!(b.count("button[data-queue-action], form.queue-limits, #queue-new").await, 0, "no controls");
    let png = std::fs::read(shots.join("queues.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "queues.png is a real screenshot");
}

/// The schedules page in Chromium: Trigger now fires the schedule once (the task carries
/// its name, and the page then links it as the last fire), Pause and Resume change it
/// (seen through the API), and the read-only key sees the schedule without any control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_page_triggers_pauses_and_resumes_in_a_real_browser() {
    let db = PgDb::new().await;
    let daemon = dashboard_daemon(&db).start();
    let base = daemon.url("");
    let shots = screenshots();
    // A yearly tick: nothing fires by itself while the test runs.
    let (status, created) = post(
        &base,
        "/schedules",
        json!({"name": "browser.yearly", "cron": "0 0 1 1 *", "timezone": "Europe/Berlin",
               "task": {"type": "echo", "payload": {"from": "schedule"}}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");

    let b = Browser::start().await;
    sign_in(&b, &base).await;
    b.click("header nav a[href$='ui/schedules']").await;
    let row = "tr.schedule[data-name='browser.yearly']";
    b.wait(row).await;
    assert!(b.text(row).await.contains("Europe/Berlin"), "{}", b.text(row).await);
    assert!(b.text(row).await.contains("never"), "no fire yet: {}", b.text(row).await);

    // Trigger now: one task, named for the schedule, and the page (reloaded) links it.
    b.click(&format!("{row} button[data-schedule-action='trigger']")).await;
    let said = b.wait_text("#flash", "Fired browser.yearly: task ", Duration::from_secs(10)).await;
    let task_id = said.trim_end_matches('.').rsplit(' ').next().unwrap().to_string();
    let task = get(&base, &format!("/tasks/{task_id}")).await;
    assert_eq!(task["schedule_name"], "browser.yearly", "{task}");
    wait_status(&base, &task_id, "completed").await;
    b.wait(&format!("{row} a[href$='ui/tasks/{task_id}']")).await;
    b.screenshot(&shots.join("schedules.png")).await;

    // Pause, then Resume, with the buttons.
    b.click(&format!("{row} button[data-schedule-action='pause']")).await;
    b.wait_text("#flash", "Schedule browser.yearly paused.", Duration::from_secs(10)).await;
    assert_eq!(get(&base, "/schedules/browser.yearly").await["paused"], true);
    b.click(&format!("{row} button[data-schedule-action='resume']")).await;
    b.wait_text("#flash", "Schedule browser.yearly resumed.", Duration::from_secs(10)).await;
    assert_eq!(get(&base, "/schedules/browser.yearly").await["paused"], false);

    // The read-only key: the schedule, no control.
    sign_in_again_read_only(&b).await;
    b.goto(&format!("{base}/ui/schedules")).await;
    b.wait(row).await;
    assert_eq!(b.count("button[data-schedule-action]").await, 0, "no controls");
    let png = std::fs::read(shots.join("schedules.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "schedules.png is a real screenshot");
}

/// A workflow's page in Chromium: a diamond whose steps a remote worker runs, drawn as four
/// nodes coloured by status; as the worker ends each step the nodes, the table and the
/// workflow's status change without a reload; a node links its task page, which names the
/// step's workflow and parents. The list shows the workflow; the read-only key sees no
/// control; Cancel workflow ends every unfinished step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_is_drawn_and_followed_live_in_a_real_browser() {
    let db = PgDb::new().await;
    let daemon = dashboard_daemon(&db).start();
    let base = daemon.url("");
    let shots = screenshots();
    // The worker first: its types are known types from then on.
    let (s, worker) = post(&base, "/workers", json!({"name": "wf-remote", "types": ["ui-step"], "max_slots": 4})).await;
    assert_eq!(s, 201, "{worker}");
    let worker_id = worker["worker_id"].as_str().unwrap().to_string();
    let (s, created) = post(
        &base,
        "/workflows",
        json!({"name": "browser-diamond", "steps": [
            {"key": "a", "type": "ui-step"},
            {"key": "b", "type": "ui-step", "depends_on": ["a"]},
            {"key": "c", "type": "ui-step", "depends_on": ["a"]},
            {"key": "d", "type": "ui-step", "depends_on": ["b", "c"]}]}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let wf = created["workflow_id"].as_str().unwrap().to_string();
    let task_of = |key: &str| {
        created["steps"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Claims every queued step, and returns them (task id, lease token) by key.
    let claim = |want: usize| {
        let (base, worker_id) = (base.clone(), worker_id.clone());
        async move {
            let mut held = std::collections::HashMap::new();
            while held.len() < want {
                let (s, claimed) =
                    post(&base, "/tasks/claim", json!({"worker_id": worker_id, "max": want, "wait_ms": 5000})).await;
                assert_eq!(s, 200, "{claimed}");
                for t in claimed["tasks"].as_array().unwrap() {
                    let key = t["step_key"].as_str().unwrap().to_string();
                    held.insert(key, (t["task_id"].as_str().unwrap().to_string(), t["lease_token"].clone()));
                }
            }
            held
        }
    };
    let complete = |id: String, token: Value| {
        let base = base.clone();
        async move {
            let (s, body) =
                post(&base, &format!("/tasks/{id}/complete"), json!({"lease_token": token, "result": {}})).await;
            assert_eq!(s, 200, "{body}");
        }
    };
    fn node(key: &str) -> String {
        format!("#graph a.node[data-key='{key}']")
    }
    async fn class_of(b: &Browser, key: &str) -> Value {
        b.js("return document.querySelector(arguments[0]).getAttribute('class')", json!([node(key)])).await
    }
    // The colour a node is painted (its box's fill).
    async fn fill(b: &Browser, key: &str) -> Value {
        let css = format!("{} rect", node(key));
        b.js("return getComputedStyle(document.querySelector(arguments[0])).fill", json!([css])).await
    }

    let b = Browser::start().await;
    sign_in(&b, &base).await;
    b.click("header nav a[href$='ui/workflows']").await;
    let row = format!("tr.workflow[data-id='{wf}']");
    b.wait(&row).await;
    assert!(b.text(&row).await.contains("browser-diamond"), "{}", b.text(&row).await);
    b.click(&format!("{row} a")).await;
    b.wait("#graph").await;
    assert_eq!(b.count("#graph a.node").await, 4);
    assert_eq!(b.count("#graph path.edge").await, 4);
    assert_eq!(class_of(&b, "a").await, "node s-queued");
    for key in ["b", "c", "d"] {
        assert_eq!(class_of(&b, key).await, "node s-waiting", "{key}");
    }
    let href = b.js("return document.querySelector(arguments[0]).getAttribute('href')", json!([node("a")])).await;
    assert_eq!(href, format!("../../ui/tasks/{}", task_of("a")));
    b.js("window.__same_page = true", json!([])).await;

    // The worker runs a: running, then completed, and b and c queued, all on the same page.
    let held = claim(1).await;
    b.wait("#graph a.node.s-running[data-key='a']").await;
    let (id, token) = held["a"].clone();
    complete(id, token).await;
    b.wait("#graph a.node.s-completed[data-key='a']").await;
    b.wait("#graph a.node.s-queued[data-key='b']").await;
    b.wait("#graph a.node.s-queued[data-key='c']").await;
    b.wait_text("#steps tr[data-key='a'] td.st", "completed", Duration::from_secs(10)).await;
    let finished = b.text("#steps tr[data-key='a'] td.finished").await;
    assert!(finished.starts_with("20") && finished.ends_with('Z'), "the row's times follow too: {finished}");
    assert_eq!(b.text("#graph a.node[data-key='a'] text.st").await, "completed");
    // The colour is the status's: completed green, queued amber, waiting purple.
    assert_eq!(fill(&b, "a").await, "rgb(220, 243, 227)");
    assert_eq!(fill(&b, "b").await, "rgb(251, 244, 217)");
    assert_eq!(fill(&b, "d").await, "rgb(241, 234, 249)");
    b.screenshot(&shots.join("workflow.png")).await;

    // b, c, then d: the workflow ends completed, still on the same page.
    let held = claim(2).await;
    for key in ["b", "c"] {
        let (id, token) = held[key].clone();
        complete(id, token).await;
    }
    b.wait("#graph a.node.s-queued[data-key='d']").await;
    let held = claim(1).await;
    let (id, token) = held["d"].clone();
    complete(id, token).await;
    b.wait_text("#wf-status", "completed", Duration::from_secs(10)).await;
    assert_eq!(b.count("#graph a.node.s-completed").await, 4);
    b.wait_text("#wf-live", "ended", Duration::from_secs(5)).await;
    assert_eq!(b.count("#wf-cancel").await, 0, "an ended workflow offers no cancel");
    assert!(b.text("#wf-counts").await.contains("4 completed"), "{}", b.text("#wf-counts").await);
    assert_eq!(b.js("return window.__same_page === true", json!([])).await, true, "no reload: the colours came live");

    // A node is a link to its task page, which names the workflow and the step's parents.
    b.click(&node("d")).await;
    b.wait("#workflow-step").await;
    assert!(b.url().await.ends_with(&format!("/ui/tasks/{}", task_of("d"))), "{}", b.url().await);
    assert_eq!(b.text("#workflow-link").await, "browser-diamond");
    assert_eq!(b.count("#step-parents li[data-key]").await, 2);
    assert!(b.text("#step-parents").await.contains("completed"));
    b.screenshot(&shots.join("workflow-step.png")).await;
    b.click("#workflow-link").await;
    b.wait("#graph").await;
    assert!(b.url().await.ends_with(&format!("/ui/workflows/{wf}")));

    // Cancel workflow on a second one: every unfinished step ends cancelled.
    let (s, second) = post(
        &base,
        "/workflows",
        json!({"name": "browser-cancel", "steps": [{"key": "x", "type": "ui-step"}, {"key": "y", "type": "ui-step", "depends_on": ["x"]}]}),
    )
    .await;
    assert_eq!(s, 201, "{second}");
    let second = second["workflow_id"].as_str().unwrap().to_string();
    b.goto(&format!("{base}/ui/workflows/{second}")).await;
    b.click("#wf-cancel").await;
    b.wait_text("#flash", "Workflow cancelled: 2 steps ended.", Duration::from_secs(10)).await;
    assert_eq!(get(&base, &format!("/workflows/{second}")).await["status"], "cancelled");
    b.wait("#wf-retry").await;

    // The read-only key: the graph, no control.
    sign_in_again_read_only(&b).await;
    b.goto(&format!("{base}/ui/workflows/{second}")).await;
    b.wait("#graph").await;
    assert_eq!(b.count("button[data-workflow-action]").await, 0, "no controls");
    let png = std::fs::read(shots.join("workflow.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "workflow.png is a real screenshot");
}

/// An approval step's task page in Chromium: its prompt and, once its parent is done, the
/// Approve and Reject buttons; Approve with a comment and a name completes it (its
/// dependant runs), Reject fails another; without a session's CSRF token the decision is
/// refused; the read-only key sees the prompt and no button, and the API refuses its
/// decision even with the session's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_decided_from_its_task_page_in_a_real_browser() {
    let db = PgDb::new().await;
    let daemon = dashboard_daemon(&db).start();
    let base = daemon.url("");
    let shots = screenshots();
    let (status, created) = post(
        &base,
        "/workflows",
        json!({ "name": "browser-gates", "steps": [
            { "key": "build", "type": "echo" },
            { "key": "gate", "type": "approval", "payload": { "prompt": "Ship release 1.2?", "expires_after_s": 3600 }, "depends_on": ["build"] },
            { "key": "ship", "type": "echo", "depends_on": ["gate"] },
            { "key": "other", "type": "approval", "payload": { "prompt": "Also <b>this</b>?" } },
            { "key": "third", "type": "approval", "payload": { "prompt": "And a third?" } },
        ]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let step = |key: &str| {
        created["steps"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (build, gate, ship, other, third) = (step("build"), step("gate"), step("ship"), step("other"), step("third"));
    wait_status(&base, &build, "completed").await;

    let b = Browser::start().await;
    sign_in(&b, &base).await;
    b.goto(&format!("{base}/ui/tasks/{gate}")).await;
    b.wait_text("#approval-prompt", "Ship release 1.2?", Duration::from_secs(10)).await;
    assert!(b.text("#approval-expiry").await.contains("3600 s"), "{}", b.text("#approval-expiry").await);
    b.wait("#approval-awaiting").await;
    b.type_into("#decision-comment", "release notes checked").await;
    b.type_into("#decision-by", "ana").await;
    b.screenshot(&shots.join("approval.png")).await;
    b.click("#approve").await;
    b.wait_text("#flash", "Approved.", Duration::from_secs(10)).await;
    b.wait_text("#status", "completed", Duration::from_secs(10)).await;
    let decided = get(&base, &format!("/tasks/{gate}")).await;
    assert_eq!(decided["status"], "completed", "{decided}");
    assert_eq!(
        (
            decided["result"]["decision"].as_str(),
            decided["result"]["comment"].as_str(),
            decided["result"]["by"].as_str()
        ),
        (Some("approve"), Some("release notes checked"), Some("ana")),
        "{decided}"
    );
    wait_status(&base, &ship, "completed").await;
    // Reloaded: decided, so no buttons any more.
    b.goto(&format!("{base}/ui/tasks/{gate}")).await;
    b.wait("#approval-prompt").await;
    assert_eq!(b.count("#approve, #reject, #approval-awaiting").await, 0);

    // Reject, without a comment; the prompt's markup is text.
    b.goto(&format!("{base}/ui/tasks/{other}")).await;
    b.wait_text("#approval-prompt", "Also <b>this</b>?", Duration::from_secs(10)).await;
    assert_eq!(b.count("#approval-prompt b").await, 0, "the prompt is shown as text");
    b.click("#reject").await;
    b.wait_text("#status", "failed", Duration::from_secs(10)).await;
    let rejected = get(&base, &format!("/tasks/{other}")).await;
    assert_eq!(
        (rejected["status"].as_str(), rejected["last_error"].as_str()),
        (Some("failed"), Some("approval_rejected"))
    );

    // The session without its CSRF token is refused.
    b.goto(&format!("{base}/ui/tasks/{third}")).await;
    b.wait("#approve").await;
    let forged = b
        .js_async(
            "const done = arguments[arguments.length - 1];\
             fetch(document.body.dataset.root + 'tasks/' + arguments[0] + '/decision', {method: 'POST', credentials: 'same-origin',\
               headers: {'Content-Type': 'application/json'}, body: JSON.stringify({decision: 'approve'})})\
               .then(r => r.json().then(j => done([r.status, j.error])));",
            json!([third]),
        )
        .await;
    assert_eq!(forged, json!([403, "csrf_rejected"]));

    // The read-only key: the prompt, no button; its decision is refused even with the token.
    sign_in_again_read_only(&b).await;
    b.goto(&format!("{base}/ui/tasks/{third}")).await;
    b.wait_text("#approval-prompt", "And a third?", Duration::from_secs(10)).await;
    b.wait("#approval-awaiting").await;
    assert_eq!(b.count("#approve, #reject, #decision").await, 0, "no decision for the read-only key");
    let refused = b
        .js_async(
            "const done = arguments[arguments.length - 1];\
             fetch(document.body.dataset.root + 'tasks/' + arguments[0] + '/decision', {method: 'POST', credentials: 'same-origin',\
               headers: {'X-CSRF-Token': document.body.dataset.csrf, 'Content-Type': 'application/json'},\
               body: JSON.stringify({decision: 'approve'})})\
               .then(r => r.json().then(j => done([r.status, j.error])));",
            json!([third]),
        )
        .await;
    assert_eq!(refused, json!([403, "read_only_key"]));
    assert_eq!(get(&base, &format!("/tasks/{third}")).await["status"], "waiting", "nothing refused changed it");
    let png = std::fs::read(shots.join("approval.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "approval.png is a real screenshot");
}
