//! Queue controls with real parts (issue 27): daemons as processes on a real PostgreSQL (and
//! a SQLite file), HTTP workers over real sockets, daemons and worker processes killed with
//! SIGKILL. The limits are read back from the table itself, sampled every 10 ms while the
//! fleet runs, and from the test's own HTTP workers' logs of what they held. The wake-ups of
//! a resume and of a freed slot are measured with the others, in `tests/wakeups.rs`.

use crate::support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::remote::{call, get, post, Worker};
use crate::support::{wait_for, DaemonProcess, PgDb, Spawn, SqliteDb};
use serde_json::{json, Value};

const QUEUE: &str = "fleet";

async fn put(base: &str, path: &str, body: Value) -> (u16, Value) {
    call(reqwest::Method::PUT, base, path, Some(body)).await
}

fn daemon(db_url: &str, role: &str, extra: &[(&'static str, &str)]) -> DaemonProcess {
    let mut spawn = Spawn::new().arg(role).env("DATABASE_URL", db_url).env("JCT_TRACE", "off");
    for (k, v) in extra {
        spawn = spawn.env(k, *v);
    }
    spawn.start()
}

/// Enqueues `n` sleep tasks of `ms` into `queue`, key `k{i % keys}`, in batches.
async fn enqueue_keyed(base: &str, queue: &str, n: usize, keys: usize, ms: u64) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let tasks: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({ "type": "sleep", "payload": { "ms": ms }, "queue": queue,
                             "concurrency_key": format!("k{}", i % keys) })
            })
            .collect();
        let (status, body) = post(base, "/tasks/enqueue_batch", json!(tasks)).await;
        assert_eq!(status, 201, "{body}");
    }
}

/// The most running tasks of the queue, and the most of one key, seen in the table.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    running: i64,
    per_key: i64,
    samples: u64,
}

/// Samples the table every 10 ms until `stop` is set.
fn sample_pg(db: &PgDb, stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<Peak> {
    let url = db.url.clone();
    tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let mut peak = Peak::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let row = client
                .query_one(
                    "SELECT coalesce(sum(n), 0)::int8, coalesce(max(n), 0)::int8 FROM ( \
                       SELECT concurrency_key, count(*) AS n FROM tasks \
                       WHERE queue = $1 AND status = 'running' GROUP BY 1) per_key",
                    &[&QUEUE],
                )
                .await
                .unwrap();
            peak.running = peak.running.max(row.get(0));
            peak.per_key = peak.per_key.max(row.get(1));
            peak.samples += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    })
}

/// What one test HTTP worker held: key, from the claim's answer to the moment it sent the
/// completion (inside the task's time as `running` in the table).
type HeldLog = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

/// An HTTP worker that claims `sleep` tasks through `base`, holds each for its `ms`, and
/// completes it, logging what it held, until `stop` is set.
fn http_worker(base: String, log: HeldLog, stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let w = Worker::register(&base, &["sleep"], 2).await;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (status, body) =
                post(&base, "/tasks/claim", json!({ "worker_id": w.id, "max": 2, "wait_ms": 200 })).await;
            if status != 200 {
                continue; // a daemon this worker talks to may be restarting
            }
            for t in body["tasks"].as_array().unwrap() {
                let claimed = Instant::now();
                let ms = t["payload"]["ms"].as_u64().unwrap();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let sent = Instant::now();
                let (status, body) = w.op(t, "complete", json!({ "result": {} })).await;
                assert_eq!(status, 200, "{body}");
                log.lock().unwrap().push((t["concurrency_key"].as_str().unwrap().to_string(), claimed, sent));
            }
        }
    })
}

/// The most intervals of the log open at one instant, overall and for one key.
fn log_peaks(log: &[(String, Instant, Instant)]) -> (usize, usize) {
    let mut events: Vec<(Instant, i32, &str)> = Vec::new();
    for (key, from, to) in log {
        events.push((*from, 1, key));
        events.push((*to, -1, key));
    }
    // Ends before starts at the same instant: touching intervals do not overlap.
    events.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut peak, mut per_key, mut peak_key) = (0i32, 0i32, HashMap::<&str, i32>::new(), 0i32);
    for (_, d, key) in events {
        open += d;
        peak = peak.max(open);
        let k = per_key.entry(key).or_default();
        *k += d;
        peak_key = peak_key.max(*k);
    }
    (peak as usize, peak_key as usize)
}

async fn count(db: &PgDb, status: &str) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM tasks WHERE queue = $1 AND status = $2", &[&QUEUE, &status])
        .await
        .unwrap()
        .get(0)
}

/// The ids of the queue's tasks running under worker `id`.
async fn held_by(db: &PgDb, id: &str) -> Vec<uuid::Uuid> {
    let rows = db
        .client()
        .await
        .query("SELECT id FROM tasks WHERE queue = $1 AND status = 'running' AND locked_by = $2", &[&QUEUE, &id])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Four `serve` daemons (four slots each) and four HTTP workers, one on each daemon, share
/// 20,000 tasks over 500 keys, `key_concurrency` 1 and `concurrency` 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_daemons_and_four_http_workers_never_exceed_either_limit() {
    const TASKS: usize = 20_000;
    let db = PgDb::new().await;
    let daemons: Vec<DaemonProcess> = (0..4).map(|_| daemon(&db.url, "serve", &[])).collect();
    let base = daemons[0].url("");
    let (status, body) =
        put(&base, &format!("/queues/{QUEUE}"), json!({ "concurrency": 8, "key_concurrency": 1 })).await;
    assert_eq!(
        (status, body["concurrency"].as_i64(), body["key_concurrency"].as_i64()),
        (200, Some(8), Some(1)),
        "{body}"
    );
    enqueue_keyed(&base, QUEUE, TASKS, 500, 2).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_pg(&db, stop.clone());
    let log: HeldLog = Arc::default();
    let workers: Vec<_> = daemons.iter().map(|d| http_worker(d.url(""), log.clone(), stop.clone())).collect();
    let started = Instant::now();
    wait_for("every task to complete", Duration::from_secs(240), || async {
        (count(&db, "completed").await == TASKS as i64).then_some(())
    })
    .await;
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    let (held, held_per_key) = log_peaks(&log);
    eprintln!(
        "{TASKS} tasks in {took:?}; table: at most {} running, {} of one key ({} samples); HTTP workers ran {} and \
         held at most {held} at once, {held_per_key} of one key",
        peak.running,
        peak.per_key,
        peak.samples,
        log.len()
    );
    assert!(peak.samples > 100, "the table was sampled ({} samples)", peak.samples);
    assert!(peak.running <= 8, "{} running at once against concurrency 8", peak.running);
    assert!(peak.per_key <= 1, "{} of one key running at once against key_concurrency 1", peak.per_key);
    assert!(peak.running >= 2, "the limit, not a lack of work, held the fleet back (peak {})", peak.running);
    assert!(!log.is_empty(), "the HTTP workers took part");
    assert!(held <= 8 && held_per_key <= 1, "the workers' own logs: {held} at once, {held_per_key} of one key");
    assert_eq!(count(&db, "failed").await + count(&db, "queued").await + count(&db, "running").await, 0);
}

/// The same limits while `worker --server` processes and a daemon are killed with SIGKILL
/// mid-task: their tasks keep their slots until the lease runs out, then are rescued, and
/// every task completes without either limit being exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_workers_mid_task_leaks_no_slot_and_exceeds_no_limit() {
    const TASKS: usize = 1_500;
    let db = PgDb::new().await;
    let lease = [("JCT_LEASE_SECONDS", "2")];
    let mut daemons: Vec<DaemonProcess> = (0..2).map(|_| daemon(&db.url, "serve", &lease)).collect();
    let base = daemons[0].url("");
    let (status, body) =
        put(&base, &format!("/queues/{QUEUE}"), json!({ "concurrency": 6, "key_concurrency": 1 })).await;
    assert_eq!(status, 200, "{body}");
    // 60 ms tasks: at most six at a time, so the backlog outlasts the kills below.
    enqueue_keyed(&base, QUEUE, TASKS, 50, 60).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_pg(&db, stop.clone());
    let server = |d: &DaemonProcess| -> &'static str { Box::leak(d.url("").into_boxed_str()) };
    let remote = |url: &'static str| {
        Spawn::new()
            .arg("worker")
            .arg("--server")
            .arg(url)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("JCT_WORKERS", "3")
            .until_line("registered")
            .no_api()
            .start()
    };
    // Kill remote workers while they hold tasks, on each daemon in turn: two, and more until
    // one died holding a task (a task can end between the look and the kill, so what a worker
    // held is read after its death: its lease keeps those rows running).
    let mut remotes = Vec::new();
    let mut orphaned: Vec<uuid::Uuid> = Vec::new();
    for round in 0.. {
        if round >= 2 && !orphaned.is_empty() {
            break;
        }
        assert!(round < 6, "six remote workers killed, none of them holding a task at its death");
        let mut victim = remote(server(&daemons[round % 2]));
        let id: String = db
            .client()
            .await
            .query_one("SELECT id FROM workers ORDER BY registered_at DESC LIMIT 1", &[])
            .await
            .unwrap()
            .get(0);
        wait_for("a task running on the remote worker", Duration::from_secs(30), || async {
            (!held_by(&db, &id).await.is_empty()).then_some(())
        })
        .await;
        victim.signal("KILL");
        victim.wait_exit(Duration::from_secs(10));
        // An end the worker sent just before its death may still be on its way through the
        // daemon's ends lane; a quarter second settles it, well inside the 2 s lease.
        tokio::time::sleep(Duration::from_millis(250)).await;
        orphaned.extend(held_by(&db, &id).await);
        remotes.push(victim);
    }
    daemons[1].signal("KILL");
    daemons[1].wait_exit(Duration::from_secs(10));
    daemons.truncate(1);
    remotes.push(remote(server(&daemons[0])));
    wait_for("every task to complete", Duration::from_secs(240), || async {
        (count(&db, "completed").await == TASKS as i64).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    eprintln!(
        "kill -9 run: at most {} running, {} of one key ({} samples); {} remote workers killed holding {} tasks",
        peak.running,
        peak.per_key,
        peak.samples,
        remotes.len() - 1,
        orphaned.len()
    );
    assert!(peak.running <= 6 && peak.per_key <= 1, "{peak:?}");
    assert!(peak.running >= 2, "{peak:?}");
    assert!(!orphaned.is_empty(), "the killed remote workers held no task at their death");
    let rescued: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM tasks WHERE id = ANY($1) AND attempts > 1 AND status = 'completed'",
            &[&orphaned],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rescued, orphaned.len() as i64, "the killed workers' tasks ran again after their lease ran out");
}

/// A rate of 50 starts per second holds in every one-second window of a 10 s run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_of_50_per_second_holds_over_10_s() {
    let db = PgDb::new().await;
    let d = daemon(&db.url, "serve", &[("JCT_WORKERS", "16")]);
    let base = d.url("");
    let (status, body) = put(&base, "/queues/calls", json!({ "rate": { "limit": 50, "per_s": 1 } })).await;
    assert_eq!((status, body["rate"]["limit"].as_i64()), (200, Some(50)), "{body}");
    let tasks: Vec<Value> = (0..2_000).map(|_| json!({ "type": "echo", "queue": "calls" })).collect();
    assert_eq!(post(&base, "/tasks/enqueue_batch", json!(tasks)).await.0, 201);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, _) = post(&base, "/queues/calls/pause", json!({})).await;
    assert_eq!(status, 200);
    let client = db.client().await;
    // Every start's window [start, start + 1 s) holds at most 50 starts.
    let row = client
        .query_one(
            "SELECT count(*), (SELECT max(n) FROM (SELECT (SELECT count(*) FROM tasks b WHERE b.queue = 'calls' \
               AND b.started_at >= a.started_at AND b.started_at < a.started_at + interval '1 second') AS n \
               FROM tasks a WHERE a.queue = 'calls' AND a.started_at IS NOT NULL) w), \
               extract(epoch FROM max(started_at) - min(started_at))::float8 \
             FROM tasks WHERE queue = 'calls' AND started_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let (started, worst, span): (i64, i64, f64) = (row.get(0), row.get(1), row.get(2));
    eprintln!("rate 50/s: {started} starts over {span:.2} s, at most {worst} in one second");
    assert!(worst <= 50, "{worst} starts in one second against a rate of 50");
    // 10 s of a 50/s budget, give or take the first and last window.
    assert!((450..=551).contains(&started), "{started} starts in about 10 s at 50 per second");
}

/// A pause under load claims nothing more (running tasks go on); a resume drains the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_under_load_claims_nothing_more() {
    let db = PgDb::new().await;
    let daemons: Vec<DaemonProcess> = (0..2).map(|_| daemon(&db.url, "serve", &[])).collect();
    let base = daemons[0].url("");
    enqueue_keyed(&base, QUEUE, 2_000, 2_000, 30).await;
    wait_for("tasks to be running", Duration::from_secs(20), || async {
        (count(&db, "completed").await > 50).then_some(())
    })
    .await;
    let (status, body) = post(&daemons[1].url(""), &format!("/queues/{QUEUE}/pause"), json!({})).await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(true)), "{body}");
    let client = db.client().await;
    let paused_at: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await.unwrap().get(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late: i64 = client
        .query_one("SELECT count(*) FROM tasks WHERE queue = $1 AND started_at > $2", &[&QUEUE, &paused_at])
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 0, "no task of the paused queue started after the pause answered");
    assert_eq!(count(&db, "running").await, 0, "the running tasks went on and finished");
    let queued = count(&db, "queued").await;
    assert!(queued > 0, "work was left when the pause came");
    let (_, view) = get(&base, &format!("/queues/{QUEUE}")).await;
    assert_eq!((view["paused"].as_bool(), view["queued"].as_i64()), (Some(true), Some(queued)), "{view}");
    assert_eq!(post(&base, &format!("/queues/{QUEUE}/resume"), json!({})).await.0, 200);
    wait_for("the rest to complete after the resume", Duration::from_secs(120), || async {
        (count(&db, "completed").await == 2_000).then_some(())
    })
    .await;
}

/// Bad names and bodies get 422 `invalid_queue` naming the field, the same on both stores;
/// a queue nobody configured answers its defaults; `concurrency_key` is checked at intake.
async fn routes_validate_and_name_the_field(db_url: &str) {
    let d = daemon(db_url, "api", &[]);
    let base = d.url("");
    let (status, q) = get(&base, "/queues/fresh").await;
    assert_eq!(status, 200, "{q}");
    assert_eq!(
        q,
        json!({ "name": "fresh", "paused": false, "concurrency": null, "key_concurrency": null,
                          "rate": null, "queued": 0, "running": 0, "waiting": 0 })
    );
    for (body, field) in [
        (json!({ "concurrency": 0 }), "concurrency"),
        (json!({ "key_concurrency": "one" }), "key_concurrency"),
        (json!({ "rate": { "limit": 5 } }), "rate.per_s"),
        (json!({ "rate": { "limit": 0, "per_s": 1 } }), "rate.limit"),
        (json!({ "paused": true }), "paused"),
    ] {
        let (status, e) = put(&base, "/queues/q", body.clone()).await;
        assert_eq!(
            (status, e["error"].as_str(), e["field"].as_str()),
            (422, Some("invalid_queue"), Some(field)),
            "{body}: {e}"
        );
    }
    let long = "x".repeat(129);
    let (status, e) = put(&base, &format!("/queues/{long}"), json!({ "concurrency": 1 })).await;
    assert_eq!((status, e["field"].as_str()), (422, Some("name")), "{e}");
    let (status, e) = post(&base, "/queues/q/explode", json!({})).await;
    assert_eq!(status, 404, "{e}");
    // Nothing was stored by the refused changes.
    assert_eq!(get(&base, "/queues/q").await.1["concurrency"], Value::Null);
    let (status, q) = put(&base, "/queues/q", json!({ "concurrency": 2, "rate": { "limit": 10, "per_s": 0.5 } })).await;
    assert_eq!((status, q["concurrency"].as_i64(), q["rate"]["per_s"].as_f64()), (200, Some(2), Some(0.5)), "{q}");
    let (status, q) = post(&base, "/queues/q/pause", json!({})).await;
    assert_eq!((status, q["paused"].as_bool(), q["concurrency"].as_i64()), (200, Some(true), Some(2)), "{q}");
    let (_, all) = get(&base, "/queues").await;
    assert_eq!(all["queues"].as_array().unwrap().iter().filter(|q| q["name"] == "q").count(), 1, "{all}");

    let (status, e) =
        post(&base, "/tasks/enqueue", json!({ "type": "echo", "concurrency_key": "k".repeat(257) })).await;
    assert_eq!((status, e["error"].as_str()), (422, Some("invalid_field")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("concurrency_key"), "{e}");
    let id = support::remote::enqueue(&base, json!({ "type": "echo", "concurrency_key": "repo-1" })).await;
    assert_eq!(support::remote::task(&base, &id).await["concurrency_key"], "repo-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_validate_and_name_the_field_on_sqlite() {
    let db = SqliteDb::new();
    routes_validate_and_name_the_field(&db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_validate_and_name_the_field_on_postgres() {
    let db = PgDb::new().await;
    routes_validate_and_name_the_field(&db.url).await;
}

/// The embedded store under the same load, one daemon and two HTTP workers: the claim's
/// one immediate transaction holds both limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sqlite_daemon_and_two_http_workers_never_exceed_either_limit() {
    const TASKS: usize = 2_000;
    let db = SqliteDb::new();
    let d = daemon(&db.url(), "serve", &[]);
    let base = d.url("");
    assert_eq!(put(&base, &format!("/queues/{QUEUE}"), json!({ "concurrency": 4, "key_concurrency": 1 })).await.0, 200);
    enqueue_keyed(&base, QUEUE, TASKS, 100, 2).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log: HeldLog = Arc::default();
    let workers: Vec<_> = (0..2).map(|_| http_worker(base.clone(), log.clone(), stop.clone())).collect();
    let mut peak = Peak::default();
    let path = db.path.clone();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let path = path.clone();
        let (done, running, per_key) = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.query_row(
                "SELECT (SELECT count(*) FROM tasks WHERE queue = ?1 AND status = 'completed'), \
                        coalesce((SELECT sum(n) FROM (SELECT count(*) AS n FROM tasks WHERE queue = ?1 \
                                  AND status = 'running' GROUP BY concurrency_key)), 0), \
                        coalesce((SELECT max(n) FROM (SELECT count(*) AS n FROM tasks WHERE queue = ?1 \
                                  AND status = 'running' GROUP BY concurrency_key)), 0)",
                [QUEUE],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
            )
            .unwrap()
        })
        .await
        .unwrap();
        peak.running = peak.running.max(running);
        peak.per_key = peak.per_key.max(per_key);
        peak.samples += 1;
        if done == TASKS as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {TASKS} completed in 240 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    let (held, held_per_key) = log_peaks(&log);
    eprintln!("sqlite: {peak:?}; HTTP workers ran {}, held at most {held}, {held_per_key} of one key", log.len());
    assert!(peak.samples > 20 && peak.running <= 4 && peak.per_key <= 1, "{peak:?}");
    assert!(!log.is_empty() && held <= 4 && held_per_key <= 1, "{held} {held_per_key}");
}
