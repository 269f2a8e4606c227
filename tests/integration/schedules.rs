//! Schedules with the real daemon binary (issue 26): the routes and their refusals, ticks
//! that fire once each and run, exactly one task per tick across three daemons on
//! PostgreSQL while they are killed and restarted, catch-up after every daemon stopped,
//! the overlap policies seen from the tasks, the schedules file, and schedules that start
//! a workflow each tick.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{http, DaemonProcess, PgDb, Spawn, SqliteDb};
use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Value};

const KEY: &str = "full-key";
const READ_KEY: &str = "read-key";

fn daemon(db_url: &str, extra: &[(&'static str, String)]) -> DaemonProcess {
    let mut spawn = Spawn::new()
        .arg("serve")
        .env("DATABASE_URL", db_url)
        .env("JCT_API_KEY", KEY)
        .env("JCT_READONLY_API_KEY", READ_KEY);
    for (k, v) in extra {
        spawn = spawn.env(k, v.clone());
    }
    spawn.start()
}

async fn call(d: &DaemonProcess, key: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = http().request(method.parse().unwrap(), d.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn api(d: &DaemonProcess, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(d, Some(KEY), method, path, body).await
}

/// Waits until the task reaches `status` (read with the key), and returns it.
async fn wait_task(d: &DaemonProcess, id: &str, status: &str) -> Value {
    support::wait_for(&format!("task {id} to be {status}"), Duration::from_secs(10), || async {
        let (code, t) = api(d, "GET", &format!("/tasks/{id}"), None).await;
        assert_eq!(code, 200, "{t}");
        (t["status"] == status).then_some(t)
    })
    .await
}

/// The tasks a schedule fired, by tick (several tasks of one tick would all be listed).
async fn tasks_of(d: &DaemonProcess, name: &str) -> BTreeMap<DateTime<Utc>, Vec<Value>> {
    let (status, list) = api(d, "GET", &format!("/tasks?schedule_name={name}&limit=1000"), None).await;
    assert_eq!(status, 200, "{list}");
    let mut by_tick: BTreeMap<DateTime<Utc>, Vec<Value>> = BTreeMap::new();
    for t in list.as_array().expect("a list") {
        assert_eq!(t["schedule_name"], name);
        let at: DateTime<Utc> = t["scheduled_for"].as_str().expect("scheduled_for").parse().unwrap();
        by_tick.entry(at).or_default().push(t.clone());
    }
    by_tick
}

fn every_second(name: &str, extra: Value) -> Value {
    let mut body = json!({ "name": name, "cron": "* * * * * *", "task": { "type": "echo", "payload": { "s": name } } });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_validate_name_the_field_and_follow_the_keys() {
    let db = SqliteDb::new();
    let d = daemon(&db.url(), &[]);
    let good =
        json!({ "name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin", "task": { "type": "echo" } });

    // 422 naming the field.
    let cases = [
        (json!({ "cron": "0 3 * * * * *" }), "cron"),
        (json!({ "cron": "61 * * * *" }), "cron"),
        (json!({ "cron": "@reboot" }), "cron"),
        (json!({ "timezone": "Europe/Atlantis" }), "timezone"),
        (json!({ "task": null }), "task"),
        (json!({ "workflow": { "name": "w", "steps": [] } }), "task"),
        (json!({ "task": null, "workflow": { "name": "w", "steps": [] } }), "workflow.steps"),
        (json!({ "task": null, "workflow": [] }), "workflow"),
        (
            json!({ "task": null, "workflow": { "name": "w", "steps": [{ "key": "a", "type": "no-such-type" }] } }),
            "workflow.steps[0].type",
        ),
        (
            json!({ "task": null, "workflow": { "name": "w", "steps": [{ "key": "a", "type": "echo", "depends_on": ["a"] }] } }),
            "workflow.steps",
        ),
        (json!({ "task": { "type": "no-such-type" } }), "task.type"),
        (json!({ "task": { "type": "echo", "run_at": "2030-01-01T00:00:00Z" } }), "task.run_at"),
        (json!({ "name": "bad name" }), "name"),
        (json!({ "overlap": "sometimes" }), "overlap"),
        (json!({ "catch_up": "never" }), "catch_up"),
    ];
    for (patch, field) in cases {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let (status, answer) = api(&d, "POST", "/schedules", Some(body.clone())).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["error"], "invalid_schedule", "{answer}");
        assert_eq!(answer["field"], field, "{body} → {answer}");
    }

    // Keys: none is 401, the read-only key reads and may not write.
    assert_eq!(call(&d, None, "GET", "/schedules", None).await.0, 401);
    assert_eq!(call(&d, Some(READ_KEY), "POST", "/schedules", Some(good.clone())).await.0, 403);

    // Create, 409 on the name again, read with the read-only key.
    let (status, created) = api(&d, "POST", "/schedules", Some(good.clone())).await;
    assert_eq!(status, 201, "{created}");
    let upcoming = created["upcoming"].as_array().unwrap();
    assert_eq!(upcoming.len(), 5);
    assert_eq!(created["next_fire_at"], upcoming[0]);
    let first: DateTime<Utc> = upcoming[0].as_str().unwrap().parse().unwrap();
    let hour = first.with_timezone(&chrono_tz::Europe::Berlin).hour();
    assert_eq!(hour, 3, "03:00 in Berlin");
    let (status, again) = api(&d, "POST", "/schedules", Some(good.clone())).await;
    assert_eq!((status, again["error"].as_str()), (409, Some("schedule_exists")));
    let (status, got) = call(&d, Some(READ_KEY), "GET", "/schedules/nightly", None).await;
    assert_eq!(status, 200);
    assert_eq!((got["last_fired_at"].clone(), got["last_task_id"].clone()), (Value::Null, Value::Null));
    assert_eq!(call(&d, Some(READ_KEY), "POST", "/schedules/nightly/trigger", None).await.0, 403);
    assert_eq!(api(&d, "GET", "/schedules/nope", None).await.0, 404);
    assert_eq!(api(&d, "POST", "/schedules/nope/pause", None).await.1["error"], "schedule_not_found");

    // PUT replaces; the body may leave the name out but not name another.
    let mut put = good.clone();
    put.as_object_mut().unwrap().remove("name");
    put["cron"] = json!("30 4 * * 1");
    let (status, replaced) = api(&d, "PUT", "/schedules/nightly", Some(put.clone())).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["cron"], "30 4 * * 1");
    put["name"] = json!("other");
    assert_eq!(api(&d, "PUT", "/schedules/nightly", Some(put)).await.1["field"], "name");

    // Pause, resume, trigger (fires now whatever the pattern), and the task carries the schedule.
    let (_, paused) = api(&d, "POST", "/schedules/nightly/pause", None).await;
    assert_eq!((paused["paused"].clone(), paused["next_fire_at"].clone()), (json!(true), Value::Null));
    let (_, resumed) = api(&d, "POST", "/schedules/nightly/resume", None).await;
    assert_eq!(resumed["paused"], false);
    let (status, fired) = api(&d, "POST", "/schedules/nightly/trigger", None).await;
    assert_eq!(status, 201, "{fired}");
    let task_id = fired["task_id"].as_str().unwrap().to_string();
    let task = wait_task(&d, &task_id, "completed").await;
    assert_eq!(task["schedule_name"], "nightly");
    assert!(task["scheduled_for"].is_string());
    let (_, got) = api(&d, "GET", "/schedules/nightly", None).await;
    assert_eq!(got["last_task_id"], task_id.as_str());

    // The list; delete; the fired task stays.
    let (_, list) = api(&d, "GET", "/schedules", None).await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(api(&d, "DELETE", "/schedules/nightly", None).await.0, 200);
    assert_eq!(api(&d, "DELETE", "/schedules/nightly", None).await.0, 404);
    assert_eq!(api(&d, "GET", &format!("/tasks/{task_id}"), None).await.1["schedule_name"], "nightly");
}

/// Ticks of an every-second schedule: each fires once, never early, and its task runs.
async fn every_second_fires_each_tick(db_url: &str) {
    let d = daemon(db_url, &[]);
    let (status, created) = api(&d, "POST", "/schedules", Some(every_second("tick", json!({})))).await;
    assert_eq!(status, 201, "{created}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(api(&d, "POST", "/schedules/tick/pause", None).await.0, 200);
    let by_tick = tasks_of(&d, "tick").await;
    assert!(by_tick.len() >= 4, "at least 4 ticks in 6 s: {:?}", by_tick.keys());
    let ticks: Vec<DateTime<Utc>> = by_tick.keys().copied().collect();
    for pair in ticks.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_milliseconds(), 1000, "no tick missing or doubled: {ticks:?}");
    }
    for (tick, tasks) in &by_tick {
        assert_eq!(tasks.len(), 1, "one task for {tick}");
        assert_eq!(tick.timestamp_subsec_micros(), 0, "ticks are whole seconds");
        let created: DateTime<Utc> = tasks[0]["created_at"].as_str().unwrap().parse().unwrap();
        assert!(created >= *tick, "fired at {created}, before its tick {tick}");
    }
    let last = by_tick.values().last().unwrap()[0]["task_id"].as_str().unwrap().to_string();
    wait_task(&d, &last, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_fires_each_tick_on_sqlite() {
    let db = SqliteDb::new();
    every_second_fires_each_tick(&db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_fires_each_tick_on_postgres() {
    let db = PgDb::new().await;
    every_second_fires_each_tick(&db.url).await;
}

/// How long the kill-and-restart run lasts, and how often a daemon is killed.
const KILL_RUN: Duration = Duration::from_secs(60);
const KILL_EVERY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_killed_in_turn_fire_each_tick_exactly_once() {
    let db = PgDb::new().await;
    let mut daemons: Vec<DaemonProcess> = (0..3).map(|_| daemon(&db.url, &[])).collect();
    // `all`: a tick is never lost, even one whose daemon died in its fire.
    let (status, created) =
        api(&daemons[0], "POST", "/schedules", Some(every_second("fleet", json!({ "catch_up": "all" })))).await;
    assert_eq!(status, 201, "{created}");
    let start = Instant::now();
    let mut victim = 0;
    while start.elapsed() < KILL_RUN {
        tokio::time::sleep(KILL_EVERY).await;
        daemons[victim].signal("KILL");
        daemons[victim].wait_exit(Duration::from_secs(10));
        daemons[victim] = daemon(&db.url, &[]);
        eprintln!("killed and restarted daemon {victim} after {:?}", start.elapsed());
        victim = (victim + 1) % daemons.len();
    }
    let survivor = &daemons[(victim + 1) % 3];
    assert_eq!(api(survivor, "POST", "/schedules/fleet/pause", None).await.0, 200);
    // A fire in flight when the pause landed commits before the pause's row lock is given.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = db.client().await;
    let rows = client
        .query("SELECT scheduled_for, count(*) FROM tasks WHERE schedule_name = 'fleet' GROUP BY 1 ORDER BY 1", &[])
        .await
        .unwrap();
    let ticks: Vec<(DateTime<Utc>, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(ticks.len() as u64 >= KILL_RUN.as_secs() - 5, "{} ticks in {KILL_RUN:?}", ticks.len());
    for (tick, n) in &ticks {
        assert_eq!(*n, 1, "tick {tick} fired {n} tasks");
    }
    for pair in ticks.windows(2) {
        assert_eq!((pair[1].0 - pair[0].0).num_milliseconds(), 1000, "a tick is missing between {pair:?}");
    }
    let keys: i64 = client
        .query_one("SELECT count(*) FROM schedule_fires WHERE schedule_name = 'fleet' AND kind = 'tick'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, ticks.len() as i64, "one key per fired tick");
    eprintln!("{} ticks, each fired once", ticks.len());
}

/// Waits until the wall clock's second is `second` modulo 10.
async fn at_second_mod_10(second: u32) {
    loop {
        if Utc::now().second() % 10 == second {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_after_every_daemon_stopped_follows_each_mode() {
    let db = PgDb::new().await;
    let mut d = daemon(&db.url, &[]);
    for mode in ["skip", "latest", "all"] {
        // `allow`: the catch-up's fires follow one another at once; under the default
        // `skip` the second would find the first still queued and be skipped.
        let body = json!({ "name": mode, "cron": "*/10 * * * * *", "catch_up": mode, "overlap": "allow",
                           "task": { "type": "echo" } });
        assert_eq!(api(&d, "POST", "/schedules", Some(body)).await.0, 201);
    }
    // Every mode fires on time while the daemon runs.
    let fired_before = support::wait_for("a first tick of every schedule", Duration::from_secs(25), || async {
        let mut last = BTreeMap::new();
        for mode in ["skip", "latest", "all"] {
            last.insert(mode, *tasks_of(&d, mode).await.keys().last()?);
        }
        Some(last)
    })
    .await;
    // Every daemon stops (SIGKILL) for at least 30 s (three or four ticks missed); the daemon
    // comes back 2 s after a tick, so the last missed tick is older than the on-time grace.
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(10));
    let stopped_at = Utc::now();
    drop(fired_before);
    // What fired before the stop, read from the database (the daemon is gone).
    let client = db.client().await;
    let mut fired_before = BTreeMap::new();
    for row in client.query("SELECT schedule_name, max(scheduled_for) FROM tasks GROUP BY 1", &[]).await.unwrap() {
        fired_before.insert(row.get::<_, String>(0), row.get::<_, DateTime<Utc>>(1));
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    at_second_mod_10(2).await;
    let restarted_at = Utc::now();
    eprintln!("stopped at {stopped_at}, restarted at {restarted_at}");
    assert!(restarted_at - stopped_at >= chrono::Duration::seconds(30), "every daemon stopped for 30 s at least");
    let d = daemon(&db.url, &[]);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let last_missed = restarted_at.with_nanosecond(0).unwrap() - chrono::Duration::seconds(2);
    for mode in ["skip", "latest", "all"] {
        let by_tick = tasks_of(&d, mode).await;
        assert!(by_tick.values().all(|t| t.len() == 1), "{mode}: a tick fired twice: {by_tick:?}");
        let before = fired_before[mode];
        let missed: Vec<DateTime<Utc>> =
            by_tick.keys().copied().filter(|t| *t > before && *t <= restarted_at).collect();
        let expected: Vec<DateTime<Utc>> = match mode {
            "skip" => Vec::new(),
            "latest" => vec![last_missed],
            _ => {
                let mut all = Vec::new();
                let mut t = before + chrono::Duration::seconds(10);
                while t <= last_missed {
                    all.push(t);
                    t += chrono::Duration::seconds(10);
                }
                all
            }
        };
        assert_eq!(missed, expected, "{mode}: the missed ticks fired after the restart");
        assert!(mode != "all" || expected.len() >= 3, "the stop missed at least three ticks");
    }
}

/// Intervals `[started_at, finished_at]` of a schedule's tasks that ran, in tick order.
fn runs(by_tick: &BTreeMap<DateTime<Utc>, Vec<Value>>) -> Vec<(DateTime<Utc>, DateTime<Utc>, String)> {
    by_tick
        .values()
        .flatten()
        .filter_map(|t| {
            let start: DateTime<Utc> = t["started_at"].as_str()?.parse().ok()?;
            let end: DateTime<Utc> = t["finished_at"].as_str()?.parse().ok()?;
            Some((start, end, t["status"].as_str().unwrap().to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_policies_seen_from_the_tasks() {
    let db = PgDb::new().await;
    let d = daemon(&db.url, &[("JCT_WORKERS", "8".into())]);
    // A task of 2.5 s every second: each policy meets a previous fire still running.
    for overlap in ["allow", "skip", "buffer_one", "cancel_other"] {
        let body = json!({ "name": overlap, "cron": "* * * * * *", "overlap": overlap,
                           "task": { "type": "sleep", "payload": { "ms": 2500 } } });
        assert_eq!(api(&d, "POST", "/schedules", Some(body)).await.0, 201);
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    for overlap in ["allow", "skip", "buffer_one", "cancel_other"] {
        assert_eq!(api(&d, "POST", &format!("/schedules/{overlap}/pause"), None).await.0, 200);
    }
    // Let the last ones finish (a buffered tick is released within the re-read period).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let overlapping =
        |runs: &[(DateTime<Utc>, DateTime<Utc>, String)]| runs.windows(2).filter(|w| w[1].0 < w[0].1).count();
    let allow = tasks_of(&d, "allow").await;
    assert!(allow.len() >= 5, "allow fires every tick: {}", allow.len());
    assert!(overlapping(&runs(&allow)) >= 2, "allow runs fires side by side");

    let skip = tasks_of(&d, "skip").await;
    assert!((2..=4).contains(&skip.len()), "skip: {} fires in 7 s of 2.5 s tasks", skip.len());
    assert_eq!(overlapping(&runs(&skip)), 0, "skip never runs two at once");

    let buffer = tasks_of(&d, "buffer_one").await;
    assert_eq!(overlapping(&runs(&buffer)), 0, "buffer_one never runs two at once");
    assert!(buffer.len() >= skip.len(), "buffer_one keeps one waiting where skip drops it");
    let client = db.client().await;
    let waiting: i64 = client
        .query_one(
            "SELECT count(*) FROM schedule_fires WHERE schedule_name = 'buffer_one' AND outcome = 'buffered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0, "every buffered tick was released");

    let cancel = tasks_of(&d, "cancel_other").await;
    assert!(cancel.len() >= 5, "cancel_other fires every tick: {}", cancel.len());
    let statuses: Vec<&str> = cancel.values().flatten().map(|t| t["status"].as_str().unwrap()).collect();
    let (last, earlier) = statuses.split_last().unwrap();
    assert!(earlier.iter().all(|s| *s == "cancelled"), "each fire cancels the previous: {statuses:?}");
    assert_ne!(*last, "cancelled", "the last fire is not cancelled: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_file_creates_updates_and_removes_its_own() {
    let db = SqliteDb::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.toml");
    std::fs::write(
        &file,
        r#"
[[schedule]]
name = "weekly-report"
cron = "@weekly"
timezone = "America/New_York"
[schedule.task]
type = "echo"
payload = { report = "weekly" }

[[schedule]]
name = "hourly-scan"
cron = "0 * * * *"
overlap = "allow"
[schedule.task]
type = "echo"
"#,
    )
    .unwrap();
    let env = [("JCT_SCHEDULES_FILE", file.display().to_string())];
    let mut d = daemon(&db.url(), &env);
    let (_, list) = api(&d, "GET", "/schedules", None).await;
    let names: Vec<&str> = list["schedules"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hourly-scan", "weekly-report"]);
    assert!(list["schedules"].as_array().unwrap().iter().all(|s| s["source"] == "file"));
    // One made through the API is left alone by the file.
    let api_made = json!({ "name": "api-made", "cron": "@daily", "task": { "type": "echo" } });
    assert_eq!(api(&d, "POST", "/schedules", Some(api_made)).await.0, 201);
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(30));

    // The file drops one and changes the other.
    std::fs::write(
        &file,
        "[[schedule]]\nname = \"weekly-report\"\ncron = \"0 9 * * 1\"\ntimezone = \"America/New_York\"\n\
         [schedule.task]\ntype = \"echo\"\n",
    )
    .unwrap();
    let mut d = daemon(&db.url(), &env);
    let (_, list) = api(&d, "GET", "/schedules", None).await;
    let by_name: BTreeMap<String, Value> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    assert_eq!(by_name.keys().collect::<Vec<_>>(), ["api-made", "weekly-report"]);
    assert_eq!(by_name["weekly-report"]["cron"], "0 9 * * 1");
    assert_eq!(by_name["api-made"]["source"], "api");
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(30));

    // A bad file: start-up fails with one line naming the file, the schedule and the field.
    std::fs::write(&file, "[[schedule]]\nname = \"broken\"\ncron = \"every day\"\n[schedule.task]\ntype = \"echo\"\n")
        .unwrap();
    let out = std::process::Command::new(support::BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("JCT_BIND", "127.0.0.1:0")
        .env("JCT_SCHEDULES_FILE", &file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("JCT_SCHEDULES_FILE")).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("broken") && lines[0].contains("cron"), "{}", lines[0]);
}

/// A two-step workflow (`a`, then `b` which runs whatever `a` did) that a schedule starts.
fn workflow_schedule(name: &str, overlap: &str, a_ms: u64) -> Value {
    json!({ "name": name, "cron": "* * * * * *", "overlap": overlap, "workflow": {
        "name": format!("wf-{name}"),
        "steps": [
            { "key": "a", "type": "sleep", "payload": { "ms": a_ms } },
            { "key": "b", "type": "echo", "depends_on": ["a"], "on_parent_failure": "run",
              "payload": { "a": { "$from": "a", "pointer": "" } } }
        ]
    } })
}

/// The workflows a schedule started, one per tick: every step carries the schedule and
/// the tick, and the steps of one tick are one workflow.
async fn workflows_by_tick(d: &DaemonProcess, name: &str) -> BTreeMap<DateTime<Utc>, String> {
    let mut by_tick = BTreeMap::new();
    for (tick, steps) in tasks_of(d, name).await {
        assert_eq!(steps.len(), 2, "one workflow of two steps for {tick}: {steps:?}");
        let wf = steps[0]["workflow_id"].as_str().expect("a step of a workflow").to_string();
        assert!(steps.iter().all(|t| t["workflow_id"] == wf.as_str()), "{steps:?}");
        let mut keys: Vec<&str> = steps.iter().map(|t| t["step_key"].as_str().unwrap()).collect();
        keys.sort();
        assert_eq!(keys, ["a", "b"]);
        by_tick.insert(tick, wf);
    }
    by_tick
}

async fn workflow_status(d: &DaemonProcess, id: &str) -> Value {
    let (status, wf) = api(d, "GET", &format!("/workflows/{id}"), None).await;
    assert_eq!(status, 200, "{wf}");
    wf
}

/// A schedule whose ticks start workflows: one per tick (exactly once, through the same
/// transaction as the tick's key), each run through; trigger starts one too.
async fn workflow_schedules_start_one_workflow_per_tick(db_url: &str) {
    let d = daemon(db_url, &[("JCT_WORKERS", "4".into())]);
    let (status, created) = api(&d, "POST", "/schedules", Some(workflow_schedule("flow", "allow", 10))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["workflow"]["steps"][1]["depends_on"], json!(["a"]), "{created}");
    assert!(created.get("task").is_none(), "{created}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(api(&d, "POST", "/schedules/flow/pause", None).await.0, 200);
    let by_tick = workflows_by_tick(&d, "flow").await;
    assert!(by_tick.len() >= 3, "at least 3 ticks in 5 s: {:?}", by_tick.keys());
    let ticks: Vec<DateTime<Utc>> = by_tick.keys().copied().collect();
    for pair in ticks.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_milliseconds(), 1000, "no tick missing or doubled: {ticks:?}");
    }
    let mut distinct: Vec<&String> = by_tick.values().collect();
    distinct.dedup();
    assert_eq!(distinct.len(), by_tick.len(), "a workflow per tick");
    for wf in by_tick.values() {
        let view = support::wait_for(&format!("workflow {wf} to complete"), Duration::from_secs(10), || async {
            let view = workflow_status(&d, wf).await;
            (view["status"] == "completed").then_some(view)
        })
        .await;
        assert_eq!(view["name"], "wf-flow");
    }
    let (_, got) = api(&d, "GET", "/schedules/flow", None).await;
    assert_eq!(got["last_workflow_id"], by_tick.values().last().unwrap().as_str(), "{got}");
    assert_eq!(got["last_task_id"], Value::Null, "{got}");
    // b read a's result through $from: the schedule's workflow is a workflow like any other.
    let last_b = tasks_of(&d, "flow").await.into_values().last().unwrap();
    let b = last_b.iter().find(|t| t["step_key"] == "b").unwrap();
    let b = wait_task(&d, b["task_id"].as_str().unwrap(), "completed").await;
    assert!(b["payload"]["a"].is_object(), "{b}");

    let (status, fired) = api(&d, "POST", "/schedules/flow/trigger", None).await;
    assert_eq!(status, 201, "{fired}");
    let wf = fired["workflow_id"].as_str().expect("a trigger of a workflow schedule starts a workflow");
    assert!(fired.get("task_id").is_none(), "{fired}");
    assert_eq!(workflow_status(&d, wf).await["steps"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_schedules_start_one_workflow_per_tick_on_sqlite() {
    let db = SqliteDb::new();
    workflow_schedules_start_one_workflow_per_tick(&db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_schedules_start_one_workflow_per_tick_on_postgres() {
    let db = PgDb::new().await;
    workflow_schedules_start_one_workflow_per_tick(&db.url).await;
}

/// Overlap for a workflow schedule: the previous fire is going while any of its steps is
/// waiting, queued or running. `skip` never has two workflows going at once;
/// `cancel_other` cancels every unfinished step of the previous one, its waiting `run`
/// step too (that step would otherwise run once its parent was cancelled).
async fn workflow_schedule_overlap(db_url: &str) {
    let d = daemon(db_url, &[("JCT_WORKERS", "8".into())]);
    for overlap in ["skip", "cancel_other"] {
        let body = workflow_schedule(overlap, overlap, 2500);
        assert_eq!(api(&d, "POST", "/schedules", Some(body)).await.0, 201);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    for overlap in ["skip", "cancel_other"] {
        assert_eq!(api(&d, "POST", &format!("/schedules/{overlap}/pause"), None).await.0, 200);
    }
    let skip = workflows_by_tick(&d, "skip").await;
    assert!((2..=3).contains(&skip.len()), "skip: {} workflows in 6 s of 2.5 s workflows", skip.len());
    let mut spans = Vec::new();
    for wf in skip.values() {
        let view = support::wait_for("the skip workflow to end", Duration::from_secs(10), || async {
            let view = workflow_status(&d, wf).await;
            (view["status"] == "completed").then_some(view)
        })
        .await;
        let steps = view["steps"].as_array().unwrap();
        let start: DateTime<Utc> =
            steps.iter().map(|s| s["created_at"].as_str().unwrap().parse().unwrap()).min().unwrap();
        let end: DateTime<Utc> =
            steps.iter().map(|s| s["finished_at"].as_str().unwrap().parse().unwrap()).max().unwrap();
        spans.push((start, end));
    }
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "skip started a workflow while the previous was going: {spans:?}");
    }

    let cancel = workflows_by_tick(&d, "cancel_other").await;
    assert!(cancel.len() >= 4, "cancel_other fires every tick: {}", cancel.len());
    let (last, earlier) =
        cancel.values().collect::<Vec<_>>().split_last().map(|(l, e)| (l.to_string(), e.to_vec())).unwrap();
    for wf in earlier {
        let view = workflow_status(&d, wf).await;
        assert_eq!(view["status"], "cancelled", "{view}");
        for step in view["steps"].as_array().unwrap() {
            assert_eq!(step["status"], "cancelled", "every step of a replaced workflow, b (run) too: {view}");
        }
    }
    assert_ne!(workflow_status(&d, &last).await["status"], "cancelled", "the last fire is not cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_schedule_overlap_on_sqlite() {
    let db = SqliteDb::new();
    workflow_schedule_overlap(&db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_schedule_overlap_on_postgres() {
    let db = PgDb::new().await;
    workflow_schedule_overlap(&db.url).await;
}
