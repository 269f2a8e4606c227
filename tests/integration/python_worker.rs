//! The example worker in `examples/python/jct_worker.py` (standard library only) against
//! the real daemon binary: it registers, long-polls, streams log lines, posts an artifact,
//! completes a task, fails one, and notices a cancel through its heartbeat.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{http, wait_for, Spawn};
use serde_json::{json, Value};

fn python() -> String {
    let found = Command::new("python3").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "python3 is missing: `make test` installs it (apt-get install python3); install it to run this test"
    );
    "python3".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_worker_runs_completes_fails_and_notices_a_cancel() {
    let python = python();
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Spawn::new()
        .env("DATABASE_URL", format!("sqlite://{}", tmp.path().join("jct.db").display()))
        .env("JCT_API_KEY", "py-key")
        .env("JCT_TASK_TYPES", "py-echo,py-sleep,py-fail")
        .start();
    let base = format!("http://{}", daemon.addr);
    let authed = |body: Value| {
        let base = base.clone();
        async move {
            let res =
                http().post(format!("{base}/tasks/enqueue")).bearer_auth("py-key").json(&body).send().await.unwrap();
            assert_eq!(res.status(), 201);
            res.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_string()
        }
    };
    let echo = authed(json!({ "type": "py-echo", "payload": { "a": 1, "b": [2] } })).await;
    let fail = authed(json!({ "type": "py-fail", "payload": { "message": "no such file" }, "max_attempts": 3 })).await;
    let sleep = authed(json!({ "type": "py-sleep", "payload": { "seconds": 60 } })).await;

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/jct_worker.py");
    let out_path = tmp.path().join("worker.out");
    let mut worker = Command::new(python)
        .arg(&script)
        .args(["--server", &base, "--wait-ms", "1000", "--exit-when-idle"])
        .env("JCT_API_KEY", "py-key")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the python worker");

    // The sleeping task is running: cancel it; the worker notices through its heartbeat.
    let get = |id: String| {
        let base = base.clone();
        async move {
            let res = http().get(format!("{base}/tasks/{id}")).bearer_auth("py-key").send().await.unwrap();
            res.json::<Value>().await.unwrap()
        }
    };
    // Running, and its first progress line is in the log (read through the API).
    wait_for("the sleep task to log its first step", Duration::from_secs(30), || {
        let (base, sleep) = (base.clone(), sleep.clone());
        async move {
            let res = http().get(format!("{base}/tasks/{sleep}/log")).bearer_auth("py-key").send().await.ok()?;
            res.text().await.ok()?.contains("working, step 1").then_some(())
        }
    })
    .await;
    assert_eq!(get(sleep.clone()).await["status"], "running");
    let res = http().post(format!("{base}/tasks/{sleep}/cancel")).bearer_auth("py-key").send().await.unwrap();
    assert_eq!(res.status(), 200);
    wait_for("the worker to exit", Duration::from_secs(30), || {
        let done = worker.try_wait().unwrap();
        async move { done }
    })
    .await;
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert!(out.contains(&format!("completed {echo}")), "{out}");
    assert!(out.contains(&format!("failed {fail}")), "{out}");
    assert!(out.contains(&format!("cancelled {sleep}")), "{out}");
    assert!(out.contains("deregistered"), "{out}");

    let echoed = get(echo.clone()).await;
    assert_eq!(
        (echoed["status"].as_str(), &echoed["result"]),
        (Some("completed"), &json!({ "echo": { "a": 1, "b": [2] } }))
    );
    let failed = get(fail.clone()).await;
    assert_eq!(failed["status"], "failed", "retryable: false ends it at once: {failed}");
    assert!(failed["last_error"].as_str().unwrap().contains("no such file"), "{failed}");
    assert_eq!(get(sleep.clone()).await["status"], "cancelled");

    // The daemon wrote the remote task's trace folder: input, the streamed log, the artifact, output.
    let folder = daemon.trace_dir.join(&echo);
    let log = std::fs::read_to_string(folder.join("log.txt")).unwrap();
    assert!(log.contains("hello from python") && log.contains("payload has 2 keys"), "{log}");
    let artifact: Value = serde_json::from_slice(&std::fs::read(folder.join("artifacts/echo.json")).unwrap()).unwrap();
    assert_eq!(artifact, json!({ "a": 1, "b": [2] }));
    let output: Value = serde_json::from_slice(&std::fs::read(folder.join("output.json")).unwrap()).unwrap();
    assert_eq!(output["status"], "completed");
    let sleep_log = std::fs::read_to_string(daemon.trace_dir.join(&sleep).join("log.txt")).unwrap();
    assert!(sleep_log.contains("working, step 1"), "{sleep_log}");
    let res = http().get(format!("{base}/workers")).bearer_auth("py-key").send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]), "the worker deregistered on its way out");
}
