//! Agent profiles: how to run a coding agent CLI headless. Built in: `claude` and `codex`;
//! more, or overrides, from the TOML file `JCT_AGENT_PROFILES`:
//!
//! ```toml
//! [profiles.my-agent]
//! program = "/usr/local/bin/my-agent"     # must also pass JCT_COMMAND_ALLOW
//! args = ["--task", "{prompt}", "--dir", "{workdir}"]
//! env = ["MY_AGENT_TOKEN"]                # passed on from the daemon's environment
//! output_cap_bytes = 4194304              # log bytes kept per attempt
//! report = "claude"                       # how to read its stdout: claude | codex | none
//! network = true                          # in the sandbox: may reach the network (default false)
//! ro_paths = ["/opt/toolchain", "/etc/my-agent/credentials.json"]  # in the sandbox: also visible, read-only
//! ```
//!
//! The built-in profiles have `network = true`: their CLIs call a model's API.
//!
//! Parsed by [`crate::config`] at start-up, so a bad file stops the daemon with one line.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::tunables::AGENT_OUTPUT_CAP;

/// The placeholder replaced by the task's prompt in a profile's arguments.
pub const PROMPT: &str = "{prompt}";
/// The placeholder replaced by the worktree's path.
pub const WORKDIR: &str = "{workdir}";

/// What the agent says about itself on stdout, and how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// `claude --output-format stream-json`: the final `result` event.
    Claude,
    /// `codex exec --json`: the last agent message.
    Codex,
    #[default]
    None,
}

/// One way to run an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProfile {
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    /// The variables passed on, with this process's values (names it does not have are
    /// left out).
    pub env: Vec<(String, String)>,
    pub output_cap: usize,
    pub report: ReportFormat,
    /// In the sandbox, the network is there (it is off by default).
    pub network: bool,
    /// In the sandbox, these paths are visible too, read-only (a toolchain, a credential file).
    pub ro_paths: Vec<std::path::PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    output_cap_bytes: Option<usize>,
    #[serde(default)]
    report: ReportFormat,
    #[serde(default)]
    network: bool,
    #[serde(default)]
    ro_paths: Vec<String>,
}

/// The daemon's secrets: never passed on, whatever a profile asks.
pub const SECRETS: &[&str] = &["DATABASE_URL", "JCT_API_KEY", "JCT_READONLY_API_KEY"];

fn entry(name: &str, e: Entry, get: &dyn Fn(&str) -> Option<String>) -> Result<AgentProfile, String> {
    if e.program.trim().is_empty() {
        return Err(format!("profile {name:?}: program is empty"));
    }
    if let Some(secret) = e.env.iter().find(|n| SECRETS.contains(&n.as_str())) {
        return Err(format!("profile {name:?}: env names {secret}, a secret of the daemon"));
    }
    if let Some(p) = e.ro_paths.iter().find(|p| !p.starts_with('/') || p.split('/').any(|c| c == "..")) {
        return Err(format!("profile {name:?}: ro_paths names {p:?}, which is not an absolute path without .."));
    }
    Ok(AgentProfile {
        name: name.to_string(),
        program: e.program,
        args: e.args,
        env: e.env.iter().filter_map(|n| get(n).map(|v| (n.clone(), v))).collect(),
        output_cap: e.output_cap_bytes.unwrap_or(AGENT_OUTPUT_CAP),
        report: e.report,
        network: e.network,
        ro_paths: e.ro_paths.iter().map(std::path::PathBuf::from).collect(),
    })
}

/// The built-in profiles, with their documented headless flags.
pub fn builtin(get: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, AgentProfile> {
    let claude = Entry {
        program: "claude".into(),
        args: ["-p", PROMPT, "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits"]
            .map(String::from)
            .to_vec(),
        env: ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"].map(String::from).to_vec(),
        output_cap_bytes: None,
        report: ReportFormat::Claude,
        network: true,
        ro_paths: Vec::new(),
    };
    let codex = Entry {
        program: "codex".into(),
        args: ["exec", "--json", "--full-auto", "--cd", WORKDIR, PROMPT].map(String::from).to_vec(),
        env: ["OPENAI_API_KEY", "CODEX_HOME"].map(String::from).to_vec(),
        output_cap_bytes: None,
        report: ReportFormat::Codex,
        network: true,
        ro_paths: Vec::new(),
    };
    let mut out = BTreeMap::new();
    for (name, e) in [("claude", claude), ("codex", codex)] {
        if let Ok(p) = entry(name, e, get) {
            out.insert(name.to_string(), p);
        }
    }
    out
}

/// The built-ins, overridden and extended by the TOML text of a profile file.
pub fn load(text: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<BTreeMap<String, AgentProfile>, String> {
    // toml's message spans lines (position, the source line, a caret, the reason): keep
    // the position and the reason, for one line at start-up.
    let file: File = toml::from_str(text).map_err(|e| {
        let text = e.to_string();
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default().to_string();
        match lines.next_back() {
            Some(reason) if !reason.starts_with('|') && !reason.starts_with('^') => format!("{first}: {reason}"),
            _ => first,
        }
    })?;
    let mut profiles = builtin(get);
    for (name, e) in file.profiles {
        profiles.insert(name.clone(), entry(&name, e, get)?);
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_adds_and_overrides_profiles() {
        let get = |n: &str| (n == "TOKEN").then(|| "t".to_string());
        let p = load(
            "[profiles.fake]\nprogram = \"/bin/fake\"\nargs = [\"{prompt}\"]\nenv = [\"TOKEN\", \"MISSING\"]\nreport = \"claude\"\n",
            &get,
        )
        .unwrap();
        assert_eq!(p["fake"].env, vec![("TOKEN".to_string(), "t".to_string())]);
        assert_eq!(p["fake"].report, ReportFormat::Claude);
        assert!(p.contains_key("claude") && p.contains_key("codex"));
        assert!(load("[profiles.x]\nprogram = \"a\"\nbogus = 1\n", &get).unwrap_err().contains("bogus"));
        assert!(load("[profiles.x]\nprogram = \"a\"\nenv = [\"DATABASE_URL\"]\n", &get)
            .unwrap_err()
            .contains("secret"));
        assert!(load("not toml [", &get).is_err());
        assert!(p["claude"].network && p["codex"].network && !p["fake"].network, "the built-ins may reach their API");
        let p = load("[profiles.x]\nprogram = \"a\"\nnetwork = true\nro_paths = [\"/opt/t\"]\n", &get).unwrap();
        assert!(p["x"].network);
        assert_eq!(p["x"].ro_paths, vec![std::path::PathBuf::from("/opt/t")]);
        assert!(load("[profiles.x]\nprogram = \"a\"\nro_paths = [\"rel\"]\n", &get).unwrap_err().contains("ro_paths"));
    }
}
