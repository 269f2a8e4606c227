//! The change pipeline (issue 25, point 7) against the real daemon binary and real git
//! repositories: a stand-in coding agent changes a repository, a `command` step runs the
//! tests in a worktree of exactly the agent's commit, an approval step waits for a person,
//! and a `push` step pushes the agent's branch to the repository's remote (a local bare
//! repository here). The example under `examples/change_pipeline/` is what runs.

use std::path::Path;

use std::time::Duration;

use crate::executors::{get, git, post, wait_status, Setup};
use crate::support::DaemonProcess;
use serde_json::{json, Value};

/// A source repository with one commit on `main`, and an empty bare remote beside it.
fn repos(s: &Setup) -> (String, String) {
    let (repo, _) = s.repo("app");
    let remote = s.path("repos").join("app-remote.git");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "--quiet", "--bare"]);
    (repo.display().to_string(), remote.display().to_string())
}

/// The example workflow with its placeholders filled in.
fn example(repo: &str, remote: &str, test_command: &str) -> Value {
    // Into a JSON string: the command's quotes escaped, without the string's own quotes.
    let quoted = serde_json::to_string(test_command).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/change_pipeline/workflow.json"))
        .unwrap()
        .replace("@REPO@", repo)
        .replace("@REMOTE@", remote)
        .replace("@PROFILE@", "fake")
        .replace("@TEST_COMMAND@", &quoted[1..quoted.len() - 1]);
    serde_json::from_str(&text).unwrap()
}

/// Starts a workflow; answers each step's task id by key.
async fn start(d: &DaemonProcess, body: Value) -> std::collections::BTreeMap<String, String> {
    let (status, created) = post(d, "/workflows", body).await;
    assert_eq!(status, 201, "{created}");
    created["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["key"].as_str().unwrap().to_string(), s["task_id"].as_str().unwrap().to_string()))
        .collect()
}

/// The branches of a repository, as `name sha` lines.
fn branches(repo: &Path) -> Vec<String> {
    let out = git(repo, &["for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"]);
    out.lines().map(str::to_string).collect()
}

/// Tests that pass only in the agent's change: the file it adds, the line it appends.
const TESTS_PASS: &str = "test -f added.txt && grep -q 'CHANGELOG' README.md";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_the_agents_tested_commit_is_pushed() {
    let s = Setup::new();
    let (repo, remote) = repos(&s);
    let d = s.daemon(&[]);
    let steps = start(&d, example(&repo, &remote, TESTS_PASS)).await;

    let agent = wait_status(&d, &steps["agent"], "completed", 60).await;
    let head = agent["result"]["head_sha"].as_str().unwrap().to_string();
    let branch = agent["result"]["branch"].as_str().unwrap().to_string();
    assert_ne!(head, agent["result"]["base_sha"].as_str().unwrap(), "the agent committed: {agent}");
    let tests = wait_status(&d, &steps["tests"], "completed", 60).await;
    assert_eq!(tests["result"]["commit"], head.as_str(), "the tests ran on exactly the agent's commit: {tests}");

    // The approval waits: nothing is pushed until a person says so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&d, &format!("/tasks/{}", steps["approve"])).await["status"], "waiting");
    assert_eq!(get(&d, &format!("/tasks/{}", steps["push"])).await["status"], "waiting");
    assert!(branches(Path::new(&remote)).is_empty(), "pushed before the approval");

    let (status, decided) = post(
        &d,
        &format!("/tasks/{}/decision", steps["approve"]),
        json!({"decision": "approve", "by": "reviewer@example.com", "comment": "ship it"}),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    let push = wait_status(&d, &steps["push"], "completed", 60).await;
    assert_eq!(push["result"]["commit"], head.as_str(), "{push}");
    assert_eq!(push["result"]["branch"], branch.as_str(), "{push}");
    assert_eq!(branches(Path::new(&remote)), vec![format!("{branch} {head}")], "the agent's branch, at its commit");
    let approve = get(&d, &format!("/tasks/{}", steps["approve"])).await;
    assert_eq!(approve["result"]["decision"], "approve", "{approve}");
    assert_eq!(approve["result"]["by"], "reviewer@example.com", "{approve}");
    assert_eq!(get(&d, &format!("/workflows/{}", agent["workflow_id"].as_str().unwrap())).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_or_failing_tests_push_nothing() {
    let s = Setup::new();
    let (repo, remote) = repos(&s);
    let d = s.daemon(&[]);

    // Rejected: the push step is cancelled and the remote stays empty.
    let steps = start(&d, example(&repo, &remote, TESTS_PASS)).await;
    wait_status(&d, &steps["tests"], "completed", 60).await;
    let (status, decided) = post(
        &d,
        &format!("/tasks/{}/decision", steps["approve"]),
        json!({"decision": "reject", "by": "reviewer@example.com", "comment": "not like this"}),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    wait_status(&d, &steps["approve"], "failed", 20).await;
    wait_status(&d, &steps["push"], "cancelled", 20).await;

    // Tests that fail on the agent's commit: no approval is asked, nothing is pushed.
    let mut failing = example(&repo, &remote, "echo 'the tests fail' >&2; exit 3");
    failing["steps"][1]["max_attempts"] = json!(1);
    let steps = start(&d, failing).await;
    let tests = wait_status(&d, &steps["tests"], "failed", 60).await;
    assert!(tests["last_error"].as_str().unwrap().contains("3"), "{tests}");
    wait_status(&d, &steps["approve"], "cancelled", 20).await;
    wait_status(&d, &steps["push"], "cancelled", 20).await;
    assert!(branches(Path::new(&remote)).is_empty(), "nothing pushed: {:?}", branches(Path::new(&remote)));
}

/// The example without its approval step: the agent's change, tested on its own commit,
/// pushed as soon as the tests pass.
fn without_approval(mut body: Value) -> Value {
    let steps = body["steps"].as_array_mut().unwrap();
    steps.retain(|s| s["key"] != "approve");
    steps.last_mut().unwrap()["depends_on"] = json!(["tests", "agent"]);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tests_run_on_the_agents_commit_and_it_is_pushed() {
    let s = Setup::new();
    let (repo, remote) = repos(&s);
    let d = s.daemon(&[]);
    let steps = start(&d, without_approval(example(&repo, &remote, TESTS_PASS))).await;
    let agent = wait_status(&d, &steps["agent"], "completed", 60).await;
    let head = agent["result"]["head_sha"].as_str().unwrap().to_string();
    let tests = wait_status(&d, &steps["tests"], "completed", 60).await;
    assert_eq!(tests["result"]["commit"], head.as_str(), "the tests ran on exactly the agent's commit: {tests}");
    assert_eq!(tests["result"]["repo"], repo.as_str(), "{tests}");
    let push = wait_status(&d, &steps["push"], "completed", 60).await;
    let branch = agent["result"]["branch"].as_str().unwrap();
    assert_eq!(branches(Path::new(&remote)), vec![format!("{branch} {head}")], "{push}");
    // The source repository itself is untouched: the agent's branch lived in the cache.
    assert_eq!(branches(Path::new(&repo)), vec![format!("main {}", agent["result"]["base_sha"].as_str().unwrap())]);

    // Tests that fail on that commit: nothing is pushed.
    let mut failing = without_approval(example(&repo, &remote, "echo 'the tests fail' >&2; exit 3"));
    failing["steps"][1]["max_attempts"] = json!(1);
    let remote2 = s.path("repos").join("second.git");
    std::fs::create_dir_all(&remote2).unwrap();
    git(&remote2, &["init", "--quiet", "--bare"]);
    failing["steps"][2]["payload"]["remote"] = json!(remote2.display().to_string());
    let steps = start(&d, failing).await;
    let tests = wait_status(&d, &steps["tests"], "failed", 60).await;
    assert!(tests["last_error"].as_str().unwrap().contains("exit code 3"), "{tests}");
    wait_status(&d, &steps["push"], "cancelled", 20).await;
    assert!(branches(&remote2).is_empty(), "nothing pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_runs_in_the_sandbox_and_refuses_what_it_must() {
    let s = Setup::new();
    let (repo, remote) = repos(&s);
    let d = s.daemon(&[("JCT_SANDBOX", "bwrap".into())]);
    let main = git(Path::new(&repo), &["rev-parse", "main"]);

    let (status, task) = post(
        &d,
        "/tasks/enqueue",
        json!({"type": "push", "payload": {"repo": repo, "ref": "main", "branch": "release", "remote": remote}}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let done = wait_status(&d, task["task_id"].as_str().unwrap(), "completed", 60).await;
    assert_eq!(done["result"]["commit"], main.as_str(), "{done}");
    assert_eq!(branches(Path::new(&remote)), vec![format!("release {main}")]);

    // Refused at enqueue, naming the field: a repository or remote outside the prefixes, a
    // branch that is not one, a field that does not exist.
    for (payload, says) in [
        (json!({"repo": "/etc", "ref": "main", "branch": "x"}), "payload.repo"),
        (json!({"repo": repo, "ref": "main", "branch": "x", "remote": "/tmp/elsewhere.git"}), "payload.remote"),
        (json!({"repo": repo, "ref": "main", "branch": "refs/tags/v1"}), "payload.branch"),
        (json!({"repo": repo, "ref": "main", "branch": "a:b"}), "payload.branch"),
        (json!({"repo": repo, "ref": "-x", "branch": "a"}), "payload.ref"),
        (json!({"repo": repo, "ref": "main", "branch": "a", "colour": 1}), "colour"),
    ] {
        let (status, refused) = post(&d, "/tasks/enqueue", json!({"type": "push", "payload": payload})).await;
        assert_eq!(status, 422, "{payload} → {refused}");
        assert!(refused["message"].as_str().unwrap().contains(says), "{payload} → {refused}");
    }

    // Back to an older commit is not a fast-forward: refused with git's words unless forced.
    git(
        Path::new(&repo),
        &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", "second"],
    );
    let second = git(Path::new(&repo), &["rev-parse", "main"]);
    let push = |reference: &str, force: bool| {
        json!({"type": "push", "max_attempts": 1,
               "payload": {"repo": repo, "ref": reference, "branch": "release", "remote": remote, "force": force}})
    };
    let (_, task) = post(&d, "/tasks/enqueue", push("main", false)).await;
    wait_status(&d, task["task_id"].as_str().unwrap(), "completed", 60).await;
    assert_eq!(git(Path::new(&remote), &["rev-parse", "release"]), second, "a fast-forward");
    let (_, task) = post(&d, "/tasks/enqueue", push(&main, false)).await;
    let refused = wait_status(&d, task["task_id"].as_str().unwrap(), "failed", 60).await;
    let error = refused["last_error"].as_str().unwrap();
    assert!(error.contains("git push") && error.contains("rejected"), "{refused}");
    assert_eq!(git(Path::new(&remote), &["rev-parse", "release"]), second, "the refused push changed nothing");
    let (_, task) = post(&d, "/tasks/enqueue", push(&main, true)).await;
    let forced = wait_status(&d, task["task_id"].as_str().unwrap(), "completed", 60).await;
    assert_eq!(forced["result"]["forced"], true, "{forced}");
    assert_eq!(git(Path::new(&remote), &["rev-parse", "release"]), main, "forced back");
}
