//! The sandbox (`JCT_SANDBOX=bwrap`) and the limits against the real daemon binary: each
//! test is an attack a hostile program would try, which must fail for the program and leave
//! the daemon healthy; in the same daemon an ordinary command and an agent (a stand-in
//! script that commits in its worktree) still work. The processes that escape their group
//! (double fork, `setsid`, SIGTERM ignored) are gone after a timeout, a cancel and a SIGTERM
//! to the daemon, with the sandbox and without it.
//!
//! These tests need bubblewrap (`make test` installs it: tests/support/ensure-bwrap.sh);
//! without it they fail saying so.

use crate::support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{wait_for, DaemonProcess, Spawn};
use serde_json::{json, Value};

const KEY: &str = "sandbox-secret-key-0815";

fn need_bwrap() {
    let found = std::env::var("PATH").unwrap_or_default().split(':').any(|d| Path::new(d).join("bwrap").is_file());
    assert!(
        found,
        "bubblewrap (bwrap) is not installed: these tests need it; run `make test` \
         (tests/support/ensure-bwrap.sh installs it) or apt-get install bubblewrap"
    );
}

struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        need_bwrap();
        let s = Setup { tmp: tempfile::tempdir().unwrap() };
        // The port the stand-in agent tries; a profile grants the file read-only.
        std::fs::write(s.port_file(), "1").unwrap();
        s
    }

    fn port_file(&self) -> PathBuf {
        self.path("agent-port.txt")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn db_file(&self) -> PathBuf {
        self.path("jct.db")
    }

    /// A daemon with `sandbox` (`bwrap` or `none`): its database, workspace and home all
    /// under this setup's directory.
    fn daemon(&self, sandbox: &str, extra: &[(&'static str, String)]) -> DaemonProcess {
        std::fs::create_dir_all(self.path("repos")).unwrap();
        let mut spawn = Spawn::new()
            .env("DATABASE_URL", format!("sqlite://{}", self.db_file().display()))
            .env("JCT_API_KEY", KEY)
            .env("JCT_SANDBOX", sandbox)
            .env("JCT_WORKSPACE_DIR", self.path("ws").display().to_string())
            .env("JCT_COMMAND_ALLOW", format!("sh,perl,{}", self.path("fake-agent").display()))
            .env("JCT_ALLOWED_REPO_PREFIXES", self.path("repos").display().to_string())
            .env("JCT_AGENT_PROFILES", self.profiles().display().to_string())
            .env("JCT_KILL_GRACE_SECONDS", "1")
            .env("JCT_POLL_INTERVAL_MS", "50")
            .env("JCT_WORKERS", "4")
            .env("HOME", self.tmp.path().display().to_string());
        for (k, v) in extra {
            spawn = spawn.env(k, v.clone());
        }
        spawn.start()
    }

    /// The stand-in agent: edits the README, commits that itself with git inside the
    /// sandbox, copies the credential file its profile grants, looks around, and reports
    /// like `claude -p --output-format stream-json`. It tries the port in `agent-port.txt`.
    fn profiles(&self) -> PathBuf {
        let script = self.path("fake-agent");
        let cred = self.path("agent-credential.txt");
        std::fs::write(&cred, "granted-credential-7f3a\n").unwrap();
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
set -e
[ "$(pwd)" = "$2" ] || {{ echo "not started in the worktree" >&2; exit 9; }}
printf '%s\n' "$1" >> README.md
git add README.md
git -c user.name=agent -c user.email=agent@example.com commit --quiet -m "the agent's own commit"
cp {cred} credential-copy.txt
sleep 2
ls "$(dirname "$2")" > worktrees-seen.txt
port=$(cat {port})
if perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => "127.0.0.1:'"$port"'", Timeout => 3) or exit 1'; then echo NET-CONNECTED; else echo NET-REFUSED; fi
echo '{{"type":"result","subtype":"success","is_error":false,"num_turns":1,"session_id":"s-1","result":"done"}}'
"#,
                cred = cred.display(),
                port = self.port_file().display()
            ),
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&script).status().unwrap();
        let file = self.path("profiles.toml");
        let profile = |name: &str, network: bool| {
            format!(
                "[profiles.{name}]\nprogram = \"{}\"\nargs = [\"{{prompt}}\", \"{{workdir}}\"]\nreport = \"claude\"\nnetwork = {network}\nro_paths = [\"{}\", \"{}\"]\n",
                script.display(),
                cred.display(),
                self.port_file().display()
            )
        };
        std::fs::write(&file, format!("{}{}", profile("fake", false), profile("online", true))).unwrap();
        file
    }

    fn repo(&self, name: &str) -> (PathBuf, String) {
        let dir = self.path("repos").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(dir.join("README.md"), "# demo\n").unwrap();
        git(&dir, &["add", "."]);
        git(&dir, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "first"]);
        let head = git(&dir, &["rev-parse", "HEAD"]);
        (dir, head)
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn post(d: &DaemonProcess, path: &str, body: Value) -> (u16, Value) {
    let res = client().post(d.url(path)).bearer_auth(KEY).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

async fn get(d: &DaemonProcess, path: &str) -> Value {
    let res = client().get(d.url(path)).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

async fn enqueue(d: &DaemonProcess, body: Value) -> String {
    let (status, task) = post(d, "/tasks/enqueue", body).await;
    assert_eq!(status, 201, "{task}");
    task["task_id"].as_str().unwrap().to_string()
}

async fn wait_status(d: &DaemonProcess, id: &str, status: &str, secs: u64) -> Value {
    wait_for(&format!("task {id} to be {status}"), Duration::from_secs(secs), || async {
        let t = get(d, &format!("/tasks/{id}")).await;
        (t["status"] == status).then_some(t)
    })
    .await
}

/// Runs `script` with `sh -c` and returns its stdout tail once it completed.
async fn run_sh(d: &DaemonProcess, script: &str) -> String {
    let id = enqueue(d, json!({"type": "command", "max_attempts": 1, "payload": {"argv": ["sh", "-c", script]}})).await;
    let task = wait_status(d, &id, "completed", 30).await;
    task["result"]["stdout_tail"].as_str().unwrap().to_string()
}

/// Runs `argv` with `limits` and returns the failed task's `last_error`.
async fn fails_with(d: &DaemonProcess, argv: Value, limits: Value) -> String {
    let id =
        enqueue(d, json!({"type": "command", "max_attempts": 1, "payload": {"argv": argv, "limits": limits}})).await;
    let task = wait_status(d, &id, "failed", 60).await;
    task["last_error"].as_str().unwrap().to_string()
}

async fn healthy(d: &DaemonProcess) {
    let res = client().get(d.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the daemon answers after the attack");
    assert_eq!(run_sh(d, "echo still-fine").await, "still-fine", "and still runs programs");
}

/// Live processes whose command line holds `marker`.
fn with_marker(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let zombie = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("Z");
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) && pid != std::process::id() as i32 {
            found.push(pid);
        }
    }
    found
}

/// A program whose grandchild double-forks, calls `setsid` and ignores SIGTERM, looping
/// with `marker` on its command line; the program itself just waits.
fn escaping(marker: &str) -> Value {
    let inner = format!("trap '' TERM; while :; do sleep 0.2; done; : {marker}");
    let script = format!("( setsid sh -c \"{inner}\" & ) ; while :; do sleep 1; done");
    json!(["sh", "-c", script])
}

async fn wait_started(marker: &str) {
    wait_for("the escaping grandchild to run", Duration::from_secs(20), || async {
        (!with_marker(marker).is_empty()).then_some(())
    })
    .await;
}

async fn wait_gone(marker: &str, after: &str) {
    wait_for(&format!("the escaping grandchild to be gone after {after}"), Duration::from_secs(20), || async {
        with_marker(marker).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_fail_in_the_sandbox_and_ordinary_tasks_still_pass() {
    let s = Setup::new();
    let (repo, base) = s.repo("app");
    let d = s.daemon("bwrap", &[]);
    assert!(d.stderr().contains("programs run in a bubblewrap sandbox"), "{}", d.stderr());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(s.port_file(), port.to_string()).unwrap();

    // An ordinary command: output, exit code, its workspace.
    let id =
        enqueue(&d, json!({"type": "command", "payload": {"argv": ["sh", "-c", "echo hello; pwd; touch made-here"]}}))
            .await;
    let task = wait_status(&d, &id, "completed", 30).await;
    let tail = task["result"]["stdout_tail"].as_str().unwrap();
    assert!(tail.starts_with("hello") && tail.contains(&format!("commands/{id}-1")), "{tail}");

    // Another task's input and the daemon's database are there, outside.
    let secret = enqueue(&d, json!({"type": "echo", "payload": {"secret": "other-task-secret-42"}})).await;
    wait_status(&d, &secret, "completed", 20).await;
    let input = d.trace_dir.join(&secret).join("input.json");
    assert!(std::fs::read_to_string(&input).unwrap().contains("other-task-secret-42"));
    assert!(s.db_file().is_file());

    // A neighbour that runs meanwhile: its workspace exists outside.
    let neighbour =
        enqueue(&d, json!({"type": "command", "payload": {"argv": ["sh", "-c", "sleep 8; echo neighbour-done"]}}))
            .await;
    let neighbour_ws = s.path("ws").join("commands").join(format!("{neighbour}-1"));
    wait_for("the neighbour's workspace", Duration::from_secs(10), || async { neighbour_ws.exists().then_some(()) })
        .await;

    let script = format!(
        r#"
        if cat {db} >/dev/null 2>&1; then echo LEAK-db; else echo SAFE-db; fi
        if cat {input} 2>/dev/null | grep -q other-task-secret; then echo LEAK-input; else echo SAFE-input; fi
        if ls {commands} | grep -q {neighbour}; then echo LEAK-workspaces; else echo SAFE-workspaces; fi
        if echo x > /usr/pwned 2>/dev/null; then echo LEAK-usr; else echo SAFE-usr; fi
        if echo x > /etc/pwned 2>/dev/null; then echo LEAK-etc; else echo SAFE-etc; fi
        if cat /etc/shadow >/dev/null 2>&1; then echo LEAK-shadow; else echo SAFE-shadow; fi
        echo x > {home}/pwned-home 2>/dev/null; echo x > {commands}/pwned-parent 2>/dev/null; echo x > /tmp/pwned-tmp
        if perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => "127.0.0.1:{port}", Timeout => 3) or exit 1'; then echo LEAK-net; else echo SAFE-net; fi
        echo done
        "#,
        db = s.db_file().display(),
        input = input.display(),
        commands = s.path("ws").join("commands").display(),
        neighbour = neighbour,
        home = s.tmp.path().display(),
    );
    let out = run_sh(&d, &script).await;
    for what in ["db", "input", "workspaces", "usr", "etc", "shadow", "net"] {
        assert!(out.contains(&format!("SAFE-{what}")) && !out.contains(&format!("LEAK-{what}")), "{what}: {out}");
    }
    assert!(!s.path("pwned-home").exists(), "the daemon's home was written to");
    assert!(!s.path("ws").join("commands").join("pwned-parent").exists(), "the workspaces' folder was written to");
    assert!(!Path::new("/tmp/pwned-tmp").exists(), "the machine's /tmp was written to");
    assert!(listener.accept().is_err(), "a connection reached the test's port with the network off");

    // `kill -9 -1` inside kills only what is in its own sandbox.
    let out = run_sh(&d, "sleep 30 & kill -9 -1; echo after-kill").await;
    assert_eq!(out, "after-kill");
    let t = wait_status(&d, &neighbour, "completed", 30).await;
    assert_eq!(t["result"]["stdout_tail"], "neighbour-done", "the neighbour survived kill -9 -1: {t}");
    healthy(&d).await;

    // Limits: lower than the daemon's, each failure names its limit.
    let err =
        fails_with(&d, json!(["perl", "-e", "$x = 'x' x (256 << 20); print length $x"]), json!({"memory_mb": 64}))
            .await;
    assert!(err.starts_with("memory limit (payload.limits.memory_mb=64; JCT_TASK_MEMORY_MB=4096) reached"), "{err}");
    let err = fails_with(&d, json!(["sh", "-c", "head -c 3000000 /dev/zero > big.bin"]), json!({"file_mb": 1})).await;
    assert!(err.starts_with("file size limit (payload.limits.file_mb=1; JCT_TASK_FILE_MB=1024) reached"), "{err}");
    let bounded = "i=0; while [ $i -lt 200 ]; do sleep 20 & i=$((i+1)); done; echo all-forked";
    let err = fails_with(&d, json!(["sh", "-c", bounded]), json!({"pids": 32})).await;
    assert!(err.starts_with("pids limit (payload.limits.pids=32; JCT_TASK_PIDS=1024) reached"), "{err}");
    // Only once the bounded one was held: a real fork bomb.
    let err = fails_with(&d, json!(["sh", "-c", "f() { f | f & }; f; sleep 3; exit 7"]), json!({"pids": 64})).await;
    assert!(err.contains("pids limit") || err.contains("exit code 7"), "{err}");
    healthy(&d).await;

    // Two agents at once: each commits inside the sandbox, reads the file its profile
    // grants, sees only its own worktree; the network only for the profile that grants it.
    let body = |profile: &str| json!({"type": "agent", "payload": {"repo": repo.display().to_string(), "prompt": "Improve the README", "profile": profile}});
    let offline = enqueue(&d, body("fake")).await;
    let online = enqueue(&d, body("online")).await;
    let caches = s.path("ws").join("repos");
    for id in [&offline, &online] {
        let task = wait_status(&d, id, "completed", 60).await;
        assert_eq!(task["result"]["base_sha"], base.as_str(), "{task}");
        let cache = std::fs::read_dir(&caches).unwrap().flatten().next().unwrap().path();
        let log = git(&cache, &["log", "--format=%s", &format!("jct/{id}")]);
        assert!(log.contains("the agent's own commit"), "git commit worked inside the sandbox: {log}");
        let patch = std::fs::read_to_string(d.trace_dir.join(id).join("artifacts").join("changes.patch")).unwrap();
        assert!(patch.contains("+granted-credential-7f3a"), "the profile's ro_paths file was readable: {patch}");
        let seen: Vec<&str> = patch
            .lines()
            .skip_while(|l| !l.contains("worktrees-seen.txt"))
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .collect();
        assert_eq!(seen, vec![format!("+{id}-1")], "only its own worktree: {patch}");
    }
    let offline_log = std::fs::read_to_string(d.trace_dir.join(&offline).join("log.txt")).unwrap();
    assert!(offline_log.contains("stdout: NET-REFUSED"), "no network for a profile without it: {offline_log}");
    let online_log = std::fs::read_to_string(d.trace_dir.join(&online).join("log.txt")).unwrap();
    assert!(online_log.contains("stdout: NET-CONNECTED"), "network = true reaches the port: {online_log}");
    let accepted = listener.accept();
    assert!(accepted.is_ok(), "the test's port saw the connection: {accepted:?}");
    assert!(listener.accept().is_err(), "and only one");
    healthy(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_above_the_maximum_are_refused_at_intake_naming_the_field() {
    let s = Setup::new();
    let d = s.daemon("bwrap", &[("JCT_TASK_MEMORY_MB", "512".to_string())]);
    let repo = s.path("repos/a").display().to_string();
    let cases = [
        (
            json!({"type": "command", "payload": {"argv": ["sh"], "limits": {"memory_mb": 513}}}),
            "payload.limits.memory_mb",
        ),
        (json!({"type": "command", "payload": {"argv": ["sh"], "limits": {"pids": 5000}}}), "payload.limits.pids"),
        (json!({"type": "command", "payload": {"argv": ["sh"], "limits": {"file_mb": 0}}}), "payload.limits.file_mb"),
        (json!({"type": "command", "payload": {"argv": ["sh"], "limits": {"pids": "many"}}}), "limits"),
        (json!({"type": "command", "payload": {"argv": ["sh"], "limits": {"cpu": 1}}}), "cpu"),
        (
            json!({"type": "agent", "payload": {"repo": repo, "prompt": "x", "profile": "fake", "limits": {"memory_mb": 4096}}}),
            "payload.limits.memory_mb",
        ),
    ];
    for (body, names) in &cases {
        let (status, answer) = post(&d, "/tasks/enqueue", body.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_field")), "{body}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(names), "{body}: {answer}");
    }
    assert_eq!(get(&d, "/tasks").await.as_array().unwrap().len(), 0, "nothing stored");
}

#[test]
fn bwrap_required_and_missing_stops_start_up_auto_warns_once() {
    let s = Setup::new();
    let empty = s.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let mut child = Command::new(support::BIN)
        .env_clear()
        .env("PATH", &empty)
        .env("DATABASE_URL", format!("sqlite://{}", s.db_file().display()))
        .env("JCT_BIND", "127.0.0.1:0")
        .env("JCT_COMMAND_ALLOW", "sh")
        .env("JCT_SANDBOX", "bwrap")
        .env("JCT_WORKSPACE_DIR", s.path("ws"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("JCT_SANDBOX=bwrap without bubblewrap started anyway");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without bubblewrap: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("JCT_SANDBOX=bwrap") && stderr.contains("bwrap"), "{stderr}");

    let mut d = Spawn::new()
        .env("PATH", empty.display().to_string())
        .env("DATABASE_URL", format!("sqlite://{}", s.path("auto.db").display()))
        .env("JCT_COMMAND_ALLOW", "sh")
        .env("JCT_WORKSPACE_DIR", s.path("ws").display().to_string())
        .start();
    let warnings: Vec<String> =
        d.stderr().lines().filter(|l| l.contains("JCT_SANDBOX=auto")).map(String::from).collect();
    assert_eq!(warnings.len(), 1, "one warning line: {}", d.stderr());
    assert!(warnings[0].contains("WARN") && warnings[0].contains("without a sandbox"), "{warnings:?}");
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(20));
}

/// The escaping grandchild, after a timeout, a cancel and a SIGTERM to the daemon.
/// `cgroups: "off"` leaves finding it to the process tree alone (a machine that delegates
/// no cgroup).
async fn escapes_are_stopped(sandbox: &str, cgroups: &str) {
    let s = Setup::new();
    let d = s.daemon(sandbox, &[("JCT_TASK_CGROUPS", cgroups.to_string())]);
    let marker = format!("jct-escape-{}", uuid::Uuid::new_v4().simple());

    let timed = format!("{marker}-timeout");
    let id = enqueue(
        &d,
        json!({"type": "command", "timeout_seconds": 2, "max_attempts": 1, "payload": {"argv": escaping(&timed)}}),
    )
    .await;
    wait_started(&timed).await;
    let task = wait_status(&d, &id, "failed", 30).await;
    assert!(task["last_error"].as_str().unwrap().contains("timed out"), "{task}");
    wait_gone(&timed, "a timeout").await;

    let cancelled = format!("{marker}-cancel");
    let id = enqueue(&d, json!({"type": "command", "payload": {"argv": escaping(&cancelled)}})).await;
    wait_started(&cancelled).await;
    let (status, _) = post(&d, &format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    wait_gone(&cancelled, "a cancel").await;
    wait_status(&d, &id, "cancelled", 20).await;

    // The program exits on its own after the grandchild escaped: it goes too.
    let finished = format!("{marker}-exit");
    let script = format!(
        "( setsid sh -c \"trap '' TERM; while :; do sleep 0.2; done; : {finished}\" & ) ; sleep 2; echo leaving"
    );
    let id = enqueue(&d, json!({"type": "command", "payload": {"argv": ["sh", "-c", script]}})).await;
    wait_started(&finished).await;
    wait_status(&d, &id, "completed", 30).await;
    wait_gone(&finished, "the program's own exit").await;

    drop(d);
    let mut d = s
        .daemon(sandbox, &[("JCT_SHUTDOWN_GRACE_SECONDS", "1".to_string()), ("JCT_TASK_CGROUPS", cgroups.to_string())]);
    let stopped = format!("{marker}-sigterm");
    enqueue(&d, json!({"type": "command", "payload": {"argv": escaping(&stopped)}})).await;
    wait_started(&stopped).await;
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(30)).success(), "{}", d.stderr());
    wait_gone(&stopped, "SIGTERM to the daemon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaping_grandchild_is_stopped_in_the_sandbox() {
    escapes_are_stopped("bwrap", "off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaping_grandchild_is_stopped_without_the_sandbox() {
    escapes_are_stopped("none", "off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaping_grandchild_is_stopped_without_the_sandbox_by_its_cgroup() {
    escapes_are_stopped("none", "on").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_runs_programs_in_its_sandbox() {
    let s = Setup::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Spawn::new()
        .arg("api")
        .env("DATABASE_URL", format!("sqlite://{}", s.db_file().display()))
        .env("JCT_API_KEY", KEY)
        .env("JCT_COMMAND_ALLOW", "sh,perl")
        .env("JCT_SANDBOX", "none")
        .start();
    let worker_home = s.path("worker-home");
    std::fs::create_dir_all(&worker_home).unwrap();
    std::fs::write(worker_home.join("id_ed25519"), "worker-ssh-key-secret").unwrap();
    let _worker = Spawn::new()
        .arg("worker")
        .arg("--server")
        .arg(Box::leak(format!("http://{}", server.addr).into_boxed_str()))
        .env("JCT_API_KEY", KEY)
        .env("JCT_SANDBOX", "bwrap")
        .env("JCT_SANDBOX_NETWORK", "on")
        .env("JCT_WORKSPACE_DIR", s.path("remote-ws").display().to_string())
        .env("JCT_COMMAND_ALLOW", "sh,perl")
        .env("HOME", worker_home.display().to_string())
        .until_line("registered")
        .no_api()
        .start();
    let script = format!(
        r#"if cat $HOME/id_ed25519 2>/dev/null; then echo LEAK-home; else echo SAFE-home; fi
        if perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => "127.0.0.1:{port}", Timeout => 3) or exit 1'; then echo NET-ON; else echo NET-OFF; fi"#
    );
    let id = enqueue(&server, json!({"type": "command", "payload": {"argv": ["sh", "-c", script]}})).await;
    let task = wait_status(&server, &id, "completed", 30).await;
    let out = task["result"]["stdout_tail"].as_str().unwrap();
    assert!(out.contains("SAFE-home") && !out.contains("worker-ssh-key-secret"), "{out}");
    assert!(out.contains("NET-ON"), "JCT_SANDBOX_NETWORK=on lets programs reach the network: {out}");
    assert!(listener.accept().is_ok(), "the connection reached the test's port");
}
