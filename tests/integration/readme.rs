//! The README's shell examples work as written. Every ```sh block that talks to the API runs
//! in bash against a daemon of its own, started with the settings of the block's `… make run`
//! line (on PostgreSQL for the block that sets `DATABASE_URL`, with the test's cluster in its
//! place); `localhost:8000` becomes that daemon's address. Every `curl` must succeed (2xx),
//! except a line that says what it answers instead (`# 409 lease_lost: …`), whose status and
//! error code are checked. The blocks a test cannot run (Docker, Claude Code, the two commands
//! themselves) are listed below with where what they show is tested; a block that is neither
//! runnable nor listed fails the test, so a new example cannot go unrun unnoticed. The TOML
//! files are loaded by a daemon, the SQL enqueue is run on PostgreSQL, and the task the README
//! shows has the keys a real one has.

use std::process::Command;
use std::time::Duration;

use crate::support::{enqueue, get_task, wait_status, PgDb, Spawn};
use serde_json::{json, Value};

/// The blocks that run elsewhere: the start of their first line, and where.
const ELSEWHERE: &[(&str, &str)] = &[
    ("make run    #", "the two commands: `.ci/run` runs `make test`; `make run` is `cargo run --release`"),
    ("claude mcp add", "needs Claude Code; the `mcp` suite runs the server these lines register"),
    ("make compose-up", "needs a Docker engine; the `packaging` suite resolves the compose file with Compose"),
    ("docker compose", "needs a Docker engine; the `packaging` suite checks the profiles and services"),
    ("printf 'JCT_UID", "the compose `.env`; the `packaging` suite resolves the file with such a `.env`"),
    ("docker build", "needs a Docker engine; the `packaging` suite checks the Dockerfile's stages"),
];

struct Block {
    line: usize,
    lines: Vec<String>,
}

/// The README's code blocks fenced as ```` ```lang ````.
fn blocks(lang: &str) -> Vec<Block> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let fence = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        match (&mut open, line.trim_end()) {
            (None, l) if l == fence => open = Some(Block { line: i + 1, lines: Vec::new() }),
            (Some(_), "```") => blocks.push(open.take().unwrap()),
            (Some(b), _) => b.lines.push(line.to_string()),
            (None, _) => {}
        }
    }
    assert!(open.is_none(), "an unclosed {fence} block in the README");
    blocks
}

/// A runnable block: the daemon's settings (from its `make run` line) and the script.
struct Example {
    env: Vec<(String, String)>,
    script: Vec<String>,
}

/// Splits a block into its `make run` settings and the rest, and turns each line that says
/// `# NNN code` into a checked call: `expect NNN code curl …`.
fn example(block: &Block) -> Example {
    let mut env = Vec::new();
    let mut script: Vec<String> = Vec::new();
    let mut command_start = 0; // where the logical line (with `\` continuations) began
    let mut i = 0;
    while i < block.lines.len() {
        let line = &block.lines[i];
        let continued = |k: usize| script.get(k).is_some_and(|l: &String| l.trim_end().ends_with('\\'));
        if i == 0 || !continued(script.len().wrapping_sub(1)) {
            command_start = script.len();
        }
        if line.contains("make run") {
            // The settings: NAME=value words before `make run`, over the continued lines.
            let logical: String = script.drain(command_start..).chain([line.clone()]).collect::<Vec<_>>().join(" ");
            for word in logical.replace('\\', " ").split_whitespace().take_while(|w| *w != "make") {
                let (k, v) = word.split_once('=').unwrap_or_else(|| panic!("line {}: {word}", block.line));
                env.push((k.to_string(), v.to_string()));
            }
            i += 1;
            continue;
        }
        script.push(line.clone());
        if let Some((_, comment)) = line.split_once("  # ") {
            let mut words = comment.split_whitespace();
            if let (Some(status), Some(code)) = (words.next(), words.next()) {
                if status.len() == 3 && status.parse::<u16>().is_ok() {
                    let code = code.trim_end_matches(':');
                    let start = &mut script[command_start];
                    assert!(start.trim_start().starts_with("curl "), "line {}: {start}", block.line);
                    *start = start.replacen("curl ", &format!("expect {status} {code} curl "), 1);
                }
            }
        }
        i += 1;
    }
    Example { env, script }
}

const PRELUDE: &str = r#"set -euo pipefail
curl() { command curl --fail-with-body --max-time 60 "$@"; }
expect() {
  local want=$1 code=$2; shift 3
  local out; out=$(command curl --max-time 60 -w '\n%{http_code}' "$@")
  local status=${out##*$'\n'} body=${out%$'\n'*}
  [ "$status" = "$want" ] || { echo "expected $want $code, got $status: $body" >&2; return 1; }
  [ "$(jq -r .error <<<"$body")" = "$code" ] || { echo "expected $code, got: $body" >&2; return 1; }
  echo "$body"
}
"#;

async fn run(block: &Block) {
    let ex = example(block);
    let pg = match ex.env.iter().any(|(k, _)| k == "DATABASE_URL") {
        true => Some(PgDb::new().await),
        false => None,
    };
    let mut spawn = Spawn::new();
    for (k, v) in &ex.env {
        let v = match (k.as_str(), &pg) {
            ("DATABASE_URL", Some(db)) => db.url.clone(),
            _ => v.clone(),
        };
        spawn = spawn.env(k, v);
    }
    let mut daemon = spawn.start();
    let script = ex.script.join("\n").replace("localhost:8000", &daemon.url("").replace("http://", ""));
    let home = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(format!("{PRELUDE}{script}\n"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(30));
    assert!(
        out.status.success(),
        "the README's example at line {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- daemon\n{}",
        block.line,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shell_example_in_the_readme_runs() {
    let blocks = blocks("sh");
    let mut ran = 0;
    let mut elsewhere_used = vec![false; ELSEWHERE.len()];
    for block in &blocks {
        let first = block.lines.first().map(String::as_str).unwrap_or_default();
        if let Some(i) = ELSEWHERE.iter().position(|(start, _)| first.starts_with(start)) {
            elsewhere_used[i] = true;
            continue;
        }
        let talks_to_api = block.lines.iter().any(|l| l.contains("localhost:8000") || l.contains("make run"));
        assert!(talks_to_api, "the README's block at line {} is neither run here nor listed in ELSEWHERE", block.line);
        run(block).await;
        ran += 1;
    }
    for (used, (start, _)) in elsewhere_used.iter().zip(ELSEWHERE) {
        assert!(used, "ELSEWHERE lists {start:?}, which starts no README block any more");
    }
    assert!(ran >= 8, "only {ran} README examples ran: is the block parser broken?");
}

#[test]
fn a_line_that_names_its_answer_becomes_a_checked_call() {
    let block = Block {
        line: 1,
        lines: vec![
            "A=1 \\".into(),
            "B=two make run   # a comment".into(),
            "curl -s x \\".into(),
            "  -d '{}'      # 403 read_only_key".into(),
            "curl -s y  # → a comment".into(),
        ],
    };
    let ex = example(&block);
    assert_eq!(ex.env, [("A".to_string(), "1".to_string()), ("B".to_string(), "two".to_string())]);
    assert_eq!(ex.script[0], "expect 403 read_only_key curl -s x \\");
    assert_eq!(ex.script[2], "curl -s y  # → a comment");
}

/// The one block of `lang` whose text contains `marker`.
fn the_block(lang: &str, marker: &str) -> String {
    let found: Vec<Block> = blocks(lang).into_iter().filter(|b| b.lines.join("\n").contains(marker)).collect();
    assert_eq!(found.len(), 1, "one ```{lang} block with {marker:?} in the README");
    found[0].lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_files_sql_and_task_are_real() {
    let dir = tempfile::tempdir().unwrap();
    // Every block that is not shell is one of these (a new one must be checked here too).
    let counted = blocks("toml").len() + blocks("sql").len() + blocks("json").len();
    assert_eq!(counted, 2 + 1 + 3, "a ```toml, ```sql or ```json block was added or removed: check it here");

    // The schedules file and the agent profiles file, loaded by a daemon.
    let schedules = dir.path().join("schedules.toml");
    std::fs::write(&schedules, the_block("toml", "[[schedule]]")).unwrap();
    let profiles = dir.path().join("profiles.toml");
    std::fs::write(&profiles, the_block("toml", "[profiles.my-agent]")).unwrap();
    let d = Spawn::new()
        .env("JCT_SCHEDULES_FILE", schedules.display().to_string())
        .env("JCT_AGENT_PROFILES", profiles.display().to_string())
        .env("JCT_COMMAND_ALLOW", "/usr/local/bin/my-agent")
        .env("JCT_ALLOWED_REPO_PREFIXES", "/srv/git")
        .start();
    let base = d.url("");
    let (status, schedule) = crate::support::remote::get(&base, "/schedules/weekly-report").await;
    assert_eq!((status, schedule["timezone"].as_str()), (200, Some("America/New_York")), "{schedule}");
    assert_eq!(schedule["source"], "file", "{schedule}");
    let (status, body) = crate::support::remote::post(
        &base,
        "/tasks/enqueue",
        json!({"type": "agent", "run_at": "2030-01-01T00:00:00Z",
               "payload": {"repo": "/srv/git/app", "prompt": "p", "profile": "my-agent"}}),
    )
    .await;
    assert_eq!(status, 201, "the file's profile is known: {body}");

    // The task as the README shows it has the keys of a real one, and no other.
    let id = enqueue(&base, json!({"type": "echo", "payload": {"hello": "world"}})).await;
    wait_status(&base, &id, "completed", Duration::from_secs(10)).await;
    let real = get_task(&base, &id).await;
    let shown: Value = serde_json::from_str(&the_block("json", "\"task_id\"")).unwrap();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&shown), keys(&real), "the README's task against a real one: {real}");

    // The MCP client configuration runs the command the `mcp` suite runs; the agent's result
    // (which needs a real agent CLI to produce) is at least JSON.
    let config: Value = serde_json::from_str(&the_block("json", "mcpServers")).unwrap();
    assert_eq!(config["mcpServers"]["jct"]["command"], "devops-control-tower", "{config}");
    assert_eq!(config["mcpServers"]["jct"]["args"], json!(["mcp"]), "{config}");
    let _: Value = serde_json::from_str(&the_block("json", "\"base_sha\"")).unwrap();

    // The plain-SQL enqueue, on PostgreSQL.
    let db = PgDb::new().await;
    let pg = Spawn::new().env("DATABASE_URL", db.url.clone()).start();
    db.client().await.batch_execute(&the_block("sql", "INSERT INTO tasks")).await.unwrap();
    let row = db.client().await.query_one("SELECT id FROM tasks", &[]).await.unwrap();
    let id: uuid::Uuid = row.get(0);
    wait_status(&pg.url(""), &id.to_string(), "completed", Duration::from_secs(10)).await;
}
