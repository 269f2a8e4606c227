//! The `command` and `agent` executors against the real daemon binary: real processes,
//! real signals, a real git repository made here. The coding agent is stood in for by a
//! shell script profile that edits a file, adds two (one binary) and prints stream-json
//! lines as `claude -p --output-format stream-json` does.
//!
//! These daemons run with `JCT_SANDBOX=none`: the process rules (group, stop, environment)
//! hold without a sandbox, and the tests look at the programs' pids from outside.
//! `tests/integration/sandbox.rs` runs the same kinds of tasks in the sandbox, and attacks it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{wait_for, DaemonProcess, Spawn};
use serde_json::{json, Value};

const KEY: &str = "exec-secret-key-4711";

pub(crate) struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        Setup { tmp: tempfile::tempdir().unwrap() }
    }

    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn db(&self) -> String {
        format!("sqlite://{}", self.path("jct.db").display())
    }

    /// A daemon whose executors may run `sh`, `env` and the fake agent, on repositories
    /// under this setup's `repos/`.
    pub(crate) fn daemon(&self, extra: &[(&'static str, String)]) -> DaemonProcess {
        std::fs::create_dir_all(self.path("repos")).unwrap();
        let mut spawn = Spawn::new()
            .env("DATABASE_URL", self.db())
            .env("JCT_API_KEY", KEY)
            .env("JCT_SANDBOX", "none")
            .env("JCT_WORKSPACE_DIR", self.path("ws").display().to_string())
            .env("JCT_COMMAND_ALLOW", format!("sh,env,{}", self.path("fake-agent").display()))
            .env("JCT_ALLOWED_REPO_PREFIXES", self.path("repos").display().to_string())
            .env("JCT_AGENT_PROFILES", self.profiles().display().to_string())
            .env("JCT_KILL_GRACE_SECONDS", "1")
            .env("JCT_POLL_INTERVAL_MS", "50")
            .env("HOME", self.tmp.path().display().to_string())
            .env("JCT_COMMAND_ENV_ALLOW", "SHARED_SETTING")
            .env("SHARED_SETTING", "visible-to-children");
        for (k, v) in extra {
            spawn = spawn.env(k, v.clone());
        }
        spawn.start()
    }

    /// The profile file with the fake agent (a script that acts like `claude -p`).
    fn profiles(&self) -> PathBuf {
        let script = self.path("fake-agent");
        std::fs::write(
            &script,
            r#"#!/bin/sh
# $1: the prompt, $2: the worktree (the current directory too)
set -e
[ "$(pwd)" = "$2" ] || { echo "not started in the worktree" >&2; exit 9; }
echo '{"type":"system","subtype":"init","session_id":"fake-session-1"}'
printf '%s\n' "$1" >> README.md
printf 'a new file\n' > added.txt
printf '\000\001\002\377' > blob.bin
echo "progress on stderr" >&2
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"edited"}]}}'
echo '{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.0123,"num_turns":3,"session_id":"fake-session-1","duration_ms":42,"result":"done"}'
"#,
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&script).status().unwrap();
        let file = self.path("profiles.toml");
        std::fs::write(
            &file,
            format!(
                "[profiles.fake]\nprogram = \"{}\"\nargs = [\"{{prompt}}\", \"{{workdir}}\"]\nreport = \"claude\"\n",
                script.display()
            ),
        )
        .unwrap();
        file
    }

    /// A git repository under `repos/` with one commit; returns its path and head.
    pub(crate) fn repo(&self, name: &str) -> (PathBuf, String) {
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

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

pub(crate) async fn post(d: &DaemonProcess, path: &str, body: Value) -> (u16, Value) {
    let res = client().post(d.url(path)).bearer_auth(KEY).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn get(d: &DaemonProcess, path: &str) -> Value {
    let res = client().get(d.url(path)).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

async fn enqueue(d: &DaemonProcess, body: Value) -> String {
    let (status, task) = post(d, "/tasks/enqueue", body).await;
    assert_eq!(status, 201, "{task}");
    task["task_id"].as_str().unwrap().to_string()
}

pub(crate) async fn wait_status(d: &DaemonProcess, id: &str, status: &str, secs: u64) -> Value {
    wait_for(&format!("task {id} to be {status}"), Duration::from_secs(secs), || async {
        let t = get(d, &format!("/tasks/{id}")).await;
        (t["status"] == status).then_some(t)
    })
    .await
}

fn d_output(trace_dir: &Path, id: &str) -> Value {
    serde_json::from_str(&read(trace_dir.join(id).join("output.json"))).unwrap()
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Live (not zombie) processes in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2].parse::<i32>() == Ok(pgid) {
            found.push(pid);
        }
    }
    found
}

/// Waits for the pid file a command writes (its own pid, the group's id) and its child's.
async fn pids(file: &Path) -> (i32, i32) {
    wait_for("the command to write its pids", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(file).ok()?;
        let mut it = text.split_whitespace().filter_map(|s| s.parse::<i32>().ok());
        Some((it.next()?, it.next()?))
    })
    .await
}

/// A shell that starts a background grandchild ignoring SIGTERM, writes both pids, and
/// waits: stopping it needs the whole group, and SIGKILL.
fn stubborn(pidfile: &Path) -> Value {
    let script = format!(
        "trap '' TERM; (trap '' TERM; sleep 300) & echo $$ $! > {}; while true; do sleep 1; done",
        pidfile.display()
    );
    json!(["sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_streams_its_output_and_completes_with_its_tail() {
    let s = Setup::new();
    let d = s.daemon(&[]);
    let id = enqueue(
        &d,
        json!({"type": "command", "payload": {
            "argv": ["sh", "-c", "echo one; echo two >&2; cat; pwd; echo three"],
            "stdin": "from stdin",
            "cwd": "sub/dir"
        }}),
    )
    .await;
    let task = wait_status(&d, &id, "completed", 20).await;
    assert_eq!(task["result"]["exit_code"], 0, "{task}");
    let tail = task["result"]["stdout_tail"].as_str().unwrap();
    assert!(tail.contains("one") && tail.contains("from stdin") && tail.ends_with("three"), "{tail}");
    assert!(tail.contains(&format!("commands/{id}-1/sub/dir")), "ran in a fresh workspace: {tail}");
    assert!(task["result"]["duration_ms"].as_f64().unwrap() > 0.0);
    let log = read(d.trace_dir.join(&id).join("log.txt"));
    assert!(log.contains("stdout: one") && log.contains("stderr: two") && log.contains("stdout: three"), "{log}");
    assert!(!s.path("ws").join("commands").join(format!("{id}-1")).exists(), "the workspace is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_cap_is_counted_not_stored() {
    let s = Setup::new();
    let d = s.daemon(&[]);
    // 40,000 lines of 63 bytes + newline: 2.56 MB, past the 1 MiB cap; then a last line
    // that the tail still shows.
    let script = "i=0; while [ $i -lt 40000 ]; do echo 0123456789012345678901234567890123456789012345678901234567890ab; i=$((i+1)); done; echo the-end";
    let id = enqueue(&d, json!({"type": "command", "payload": {"argv": ["sh", "-c", script]}})).await;
    let task = wait_status(&d, &id, "completed", 60).await;
    assert!(task["result"]["stdout_tail"].as_str().unwrap().ends_with("the-end"), "the tail is kept past the cap");
    let log = read(d.trace_dir.join(&id).join("log.txt"));
    let stored = log.lines().filter(|l| l.contains("stdout: 0123")).count();
    assert!((16_000..=16_384).contains(&stored), "about 1 MiB of 64-byte lines stored: {stored}");
    let note = log.lines().find(|l| l.contains("output cap of 1048576 bytes reached")).expect("the cap is noted");
    let dropped = 40_001 - stored;
    assert!(note.contains(&format!("{dropped} more lines")), "{note}");
    assert!(!log.contains("stdout: the-end"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_with_its_exit_code_and_stderr() {
    let s = Setup::new();
    let d = s.daemon(&[]);
    let id = enqueue(
        &d,
        json!({"type": "command", "max_attempts": 2, "payload": {"argv": ["sh", "-c", "echo broken build >&2; exit 3"]}}),
    )
    .await;
    let task = wait_status(&d, &id, "failed", 30).await;
    assert_eq!(task["attempts"], 2, "retried per max_attempts: {task}");
    let error = task["last_error"].as_str().unwrap();
    assert!(error.contains("exit code 3") && error.contains("broken build"), "{error}");
    let id =
        enqueue(&d, json!({"type": "command", "max_attempts": 1, "payload": {"argv": ["sh", "-c", "kill -SEGV $$"]}}))
            .await;
    let task = wait_status(&d, &id, "failed", 20).await;
    assert!(task["last_error"].as_str().unwrap().contains("signal 11"), "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_secrets_never_reach_the_program() {
    let s = Setup::new();
    let d = s.daemon(&[("OTHER_SETTING", "not-listed".to_string())]);
    let id =
        enqueue(&d, json!({"type": "command", "payload": {"argv": ["env"], "env": {"FROM_PAYLOAD": "yes"}}})).await;
    let task = wait_status(&d, &id, "completed", 20).await;
    let env = task["result"]["stdout_tail"].as_str().unwrap();
    assert!(env.contains("SHARED_SETTING=visible-to-children"), "{env}");
    assert!(env.contains("FROM_PAYLOAD=yes") && env.contains("PATH="), "{env}");
    assert!(!env.contains(KEY) && !env.contains("JCT_API_KEY"), "the API key leaked: {env}");
    assert!(!env.contains("DATABASE_URL") && !env.contains("jct.db"), "the database leaked: {env}");
    assert!(!env.contains("OTHER_SETTING"), "an unlisted variable leaked: {env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_programs_and_repositories_are_refused_and_nothing_is_stored() {
    let s = Setup::new();
    let d = s.daemon(&[]);
    let cases = [
        (json!({"type": "command", "payload": {"argv": ["rm", "-rf", "/"]}}), "command_not_allowed"),
        (json!({"type": "command", "payload": {"argv": ["/usr/bin/env"]}}), "command_not_allowed"),
        (json!({"type": "command", "payload": {"argv": []}}), "invalid_field"),
        (json!({"type": "command", "payload": {"argv": ["sh"], "cwd": "../out"}}), "invalid_field"),
        (json!({"type": "command", "payload": {"argv": ["sh"], "shell": true}}), "invalid_field"),
        (json!({"type": "agent", "payload": {"repo": "/etc", "prompt": "x", "profile": "fake"}}), "repo_not_allowed"),
        (
            json!({"type": "agent", "payload": {"repo": format!("{}/../x", s.path("repos").display()), "prompt": "x", "profile": "fake"}}),
            "repo_not_allowed",
        ),
        (
            json!({"type": "agent", "payload": {"repo": s.path("repos/a").display().to_string(), "prompt": "x"}}),
            "command_not_allowed",
        ),
        (
            json!({"type": "agent", "payload": {"repo": s.path("repos/a").display().to_string(), "prompt": "x", "profile": "nope"}}),
            "invalid_field",
        ),
    ];
    for (body, code) in &cases {
        let (status, answer) = post(&d, "/tasks/enqueue", body.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (422, Some(*code)), "{body}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, answer) = post(&d, "/tasks/enqueue_batch", json!([{"type": "echo"}, cases[0].0])).await;
    assert_eq!(
        (status, answer["error"].as_str(), answer["index"].as_u64()),
        (422, Some("command_not_allowed"), Some(1))
    );
    assert_eq!(get(&d, "/tasks").await.as_array().unwrap().len(), 0, "nothing stored");

    // A daemon without an allowlist runs no program at all.
    let plain = Spawn::new().env("DATABASE_URL", format!("sqlite://{}", s.path("plain.db").display())).start();
    let res = client().post(plain.url("/tasks/enqueue")).json(&json!({"type": "command", "payload": {"argv": ["sh"]}}));
    let answer: Value = res.send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["error"], "command_not_allowed", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_and_a_cancel_leave_no_process_of_the_group() {
    let s = Setup::new();
    let d = s.daemon(&[]);
    let timed = s.path("timed.pids");
    let id = enqueue(
        &d,
        json!({"type": "command", "timeout_seconds": 2, "max_attempts": 1, "payload": {"argv": stubborn(&timed)}}),
    )
    .await;
    let (leader, grandchild) = pids(&timed).await;
    let members = group_members(leader);
    assert!(members.contains(&leader) && members.contains(&grandchild), "{members:?}");
    let task = wait_status(&d, &id, "failed", 30).await;
    assert!(task["last_error"].as_str().unwrap().contains("timed out after 2 s"), "{task}");
    assert_eq!(group_members(leader), Vec::<i32>::new(), "no process of the group is left after a timeout");
    let log = read(d.trace_dir.join(&id).join("log.txt"));
    assert!(log.contains("SIGTERM to the process group"), "{log}");

    let cancelled = s.path("cancelled.pids");
    let id = enqueue(&d, json!({"type": "command", "payload": {"argv": stubborn(&cancelled)}})).await;
    let (leader, _) = pids(&cancelled).await;
    assert!(!group_members(leader).is_empty());
    let (status, answer) = post(&d, &format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    wait_for("the cancelled group to be gone", Duration::from_secs(15), || async {
        group_members(leader).is_empty().then_some(())
    })
    .await;
    assert_eq!(get(&d, &format!("/tasks/{id}")).await["status"], "cancelled");

    // Shutdown: SIGTERM with a short grace stops a running command's group too.
    let stopped = s.path("stopped.pids");
    drop(d);
    let mut d = s.daemon(&[("JCT_SHUTDOWN_GRACE_SECONDS", "1".to_string())]);
    enqueue(&d, json!({"type": "command", "payload": {"argv": stubborn(&stopped)}})).await;
    let (leader, _) = pids(&stopped).await;
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(20)).success(), "{}", d.stderr());
    assert_eq!(group_members(leader), Vec::<i32>::new(), "no process of the group is left after shutdown");
}

async fn linked_issue(d: &DaemonProcess) -> String {
    let (status, repo) = post(
        d,
        "/cwom/repos",
        json!({"name": "demo", "slug": format!("demo-{}", uuid::Uuid::now_v7()), "source": {"system": "github"}}),
    )
    .await;
    assert_eq!(status, 201, "{repo}");
    let (status, issue) = post(
        d,
        "/cwom/issues",
        json!({"repo": {"kind": "Repo", "id": repo["id"]}, "title": "Improve the README", "type": "feature"}),
    )
    .await;
    assert_eq!(status, 201, "{issue}");
    issue["id"].as_str().unwrap().to_string()
}

/// Checks an agent task's result, patch, branch and worktree; returns the result.
async fn check_agent_run(s: &Setup, trace_dir: &Path, task: &Value, repo: &Path, base: &str) -> Value {
    let id = task["id"].as_str().or(task["task_id"].as_str()).unwrap().to_string();
    let r = &task["result"];
    assert_eq!(r["base_sha"], base, "{task}");
    assert_eq!(r["branch"], format!("jct/{id}"));
    assert_eq!((r["files_changed"].as_u64(), r["exit_code"].as_i64()), (Some(3), Some(0)), "{task}");
    // The prompt (with its acceptance criteria: 5 lines) into the README, and added.txt;
    // the binary file counts no lines.
    assert_eq!((r["insertions"].as_u64(), r["deletions"].as_u64()), (Some(6), Some(0)), "{task}");
    assert_eq!(r["agent"]["session_id"], "fake-session-1", "{task}");
    assert_eq!((r["agent"]["cost_usd"].as_f64(), r["agent"]["num_turns"].as_u64()), (Some(0.0123), Some(3)));
    let head = r["head_sha"].as_str().unwrap();
    assert_ne!(head, base);

    // The patch applies to the base and reproduces every file, the binary one included.
    let patch = trace_dir.join(&id).join("artifacts").join("changes.patch");
    let check = s.path(&format!("check-{id}"));
    let out = Command::new("git").args(["clone", "--quiet"]).arg(repo).arg(&check).output().unwrap();
    assert!(out.status.success());
    git(&check, &["apply", "--binary", &patch.display().to_string()]);
    assert_eq!(std::fs::read(check.join("blob.bin")).unwrap(), vec![0u8, 1, 2, 255]);
    assert_eq!(read(check.join("added.txt")), "a new file\n");
    assert!(read(check.join("README.md")).contains("Improve the README"), "the prompt reached the agent");

    // The branch stays in the cache at the head; the worktree is gone.
    let caches: Vec<PathBuf> =
        std::fs::read_dir(s.path("ws").join("repos")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(caches.len(), 1);
    assert_eq!(git(&caches[0], &["rev-parse", &format!("jct/{id}")]), head);
    assert!(!s.path("ws").join("worktrees").join(format!("{id}-1")).exists(), "the worktree is removed");
    assert!(read(trace_dir.join(&id).join("log.txt")).contains("stderr: progress on stderr"));
    r.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_works_in_a_worktree_and_its_patch_branch_and_artifacts_are_kept() {
    let s = Setup::new();
    let (repo, base) = s.repo("app");
    let d = s.daemon(&[("JCT_WORKERS", "2".to_string())]);
    let issue = linked_issue(&d).await;
    let body = |prompt: &str| {
        json!({"type": "agent", "cwom_issue_id": issue, "payload": {
            "repo": repo.display().to_string(), "ref": "main", "prompt": prompt, "profile": "fake",
            "acceptance_criteria": ["the README says so"]
        }})
    };
    // Two at once on one repository: separate worktrees, no trip over git's locks.
    let a = enqueue(&d, body("Improve the README")).await;
    let b = enqueue(&d, body("Improve the README again")).await;
    let ta = wait_status(&d, &a, "completed", 60).await;
    let tb = wait_status(&d, &b, "completed", 60).await;
    check_agent_run(&s, &d.trace_dir, &ta, &repo, &base).await;
    check_agent_run(&s, &d.trace_dir, &tb, &repo, &base).await;
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), base, "the source repository is untouched");

    // CWOM: the patch is a code_patch Artifact, the branch a commit Artifact, of the Run.
    let runs = get(&d, &format!("/cwom/runs?issue_id={issue}")).await;
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    for run in runs.as_array().unwrap() {
        let artifacts = get(&d, &format!("/cwom/artifacts?run_id={}", run["id"].as_str().unwrap())).await;
        let of = |t: &str| artifacts.as_array().unwrap().iter().find(|x| x["type"] == t).cloned();
        let patch = of("code_patch").unwrap_or_else(|| panic!("no code_patch: {artifacts}"));
        assert!(patch["digest"].as_str().unwrap().starts_with("sha256:") && patch["size_bytes"].as_i64() > Some(100));
        let commit = of("commit").unwrap_or_else(|| panic!("no commit: {artifacts}"));
        assert!(commit["uri"].as_str().unwrap().contains("#jct/"), "{commit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_runs_commands_and_agents_over_http_only() {
    let s = Setup::new();
    let (repo, base) = s.repo("remote");
    // The server runs no worker; the remote worker has no usable database.
    let server = s.daemon(&[]);
    let server = {
        drop(server);
        Spawn::new()
            .arg("api")
            .env("DATABASE_URL", s.db())
            .env("JCT_API_KEY", KEY)
            .env("JCT_COMMAND_ALLOW", format!("sh,{}", s.path("fake-agent").display()))
            .env("JCT_ALLOWED_REPO_PREFIXES", s.path("repos").display().to_string())
            .env("JCT_AGENT_PROFILES", s.profiles().display().to_string())
            .env("JCT_LEASE_SECONDS", "3")
            .start()
    };
    let worker = Spawn::new()
        .arg("worker")
        .arg("--server")
        .arg(Box::leak(format!("http://{}", server.addr).into_boxed_str()))
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("JCT_API_KEY", KEY)
        .env("JCT_WORKSPACE_DIR", s.path("remote-ws").display().to_string())
        .env("JCT_SANDBOX", "none")
        .env("JCT_COMMAND_ALLOW", format!("sh,{}", s.path("fake-agent").display()))
        .env("JCT_ALLOWED_REPO_PREFIXES", s.path("repos").display().to_string())
        .env("JCT_AGENT_PROFILES", s.path("profiles.toml").display().to_string())
        .env("JCT_KILL_GRACE_SECONDS", "1")
        .env("HOME", s.tmp.path().display().to_string())
        .until_line("registered")
        .no_api()
        .start();

    let id = enqueue(&server, json!({"type": "command", "payload": {"argv": ["sh", "-c", "echo remote hello"]}})).await;
    let task = wait_status(&server, &id, "completed", 30).await;
    assert_eq!(task["result"]["exit_code"], 0);
    // A remote end is written to the store first, then to the trace folder.
    let output = server.trace_dir.join(&id).join("output.json");
    wait_for("output.json", Duration::from_secs(10), || async { output.exists().then_some(()) }).await;
    assert_eq!(d_output(&server.trace_dir, &id)["status"], "completed");
    let log = read(server.trace_dir.join(&id).join("log.txt"));
    assert!(log.contains("stdout: remote hello"), "the server's log.txt has the output: {log}");

    let id = enqueue(
        &server,
        json!({"type": "agent", "payload": {"repo": repo.display().to_string(), "prompt": "Improve the README", "profile": "fake"}}),
    )
    .await;
    let task = wait_status(&server, &id, "completed", 60).await;
    assert_eq!(task["result"]["base_sha"], base.as_str(), "{task}");
    let patch = server.trace_dir.join(&id).join("artifacts").join("changes.patch");
    assert!(read(patch).contains("+a new file"), "the patch went up to the server");

    // A cancel reaches the remote worker through its heartbeat; the group is stopped.
    let pidfile = s.path("remote.pids");
    let id = enqueue(&server, json!({"type": "command", "payload": {"argv": stubborn(&pidfile)}})).await;
    let (leader, _) = pids(&pidfile).await;
    let (status, _) = post(&server, &format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    wait_for("the remote group to be gone", Duration::from_secs(20), || async {
        group_members(leader).is_empty().then_some(())
    })
    .await;
    assert!(!worker.stderr().contains("database"), "the worker never touched a database:\n{}", worker.stderr());
    let workers = get(&server, "/workers").await;
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
}

#[test]
fn a_bad_profile_file_stops_start_up_with_one_line_naming_it() {
    let s = Setup::new();
    for (text, says) in [
        ("[profiles.x]\nprogram = \"a\"\nbogus = 1\n", "bogus"),
        ("[profiles.x\n", "TOML"),
        ("[profiles.x]\nprogram = \"a\"\nenv = [\"JCT_API_KEY\"]\n", "secret"),
    ] {
        let file = s.path("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_devops-control-tower"))
            .env_clear()
            .env("DATABASE_URL", s.db())
            .env("JCT_BIND", "127.0.0.1:0")
            .env("JCT_AGENT_PROFILES", &file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: started anyway");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("JCT_AGENT_PROFILES") && stderr.contains(says), "{text}: {stderr}");
    }
}
