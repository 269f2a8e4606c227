//! The git side of the executors that work on repositories (`agent`, `command` with a
//! `repo`, `push`): which repositories are allowed (`JCT_ALLOWED_REPO_PREFIXES`), a cache of
//! each under `JCT_WORKSPACE_DIR/repos`, a worktree per attempt (on branch `jct/<task_id>`
//! for an agent, detached at a commit for a command), committing what an agent changed,
//! and the patch and its numbers. One `Repos` serves every executor of a daemon, so an
//! agent's commit is in the cache a later step of its workflow reads.
//!
//! Fetches and worktree changes of one repository take its lock, so two attempts on one
//! repository never race on git's own lock files; agents then run side by side, each in
//! its worktree. One workspace directory belongs to one daemon (or remote worker).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::handlers::sandbox::Mount;
use crate::handlers::{HandlerError, Refusal};
use crate::task::TaskId;

/// The API's error code for a repository outside `JCT_ALLOWED_REPO_PREFIXES`.
pub const REPO_NOT_ALLOWED: &str = "repo_not_allowed";

/// Where the caches and worktrees live, and the lock of each repository.
pub struct Repos {
    prefixes: Vec<String>,
    caches: PathBuf,
    worktrees: PathBuf,
    env: Vec<(String, String)>,
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// A repository's cache (a bare repository fetched from the source).
pub struct Cache {
    dir: PathBuf,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// The numbers of a diff.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiffStat {
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
}

/// Where the source's default branch is kept in the cache.
const REMOTE_HEAD: &str = "refs/jct/remote-head";

impl Repos {
    /// Makes the directories and removes every worktree a previous run left behind
    /// (their branches stay).
    pub fn open(prefixes: Vec<String>, workspace: &Path, env: Vec<(String, String)>) -> std::io::Result<Self> {
        let caches = workspace.join("repos");
        let worktrees = workspace.join("worktrees");
        std::fs::create_dir_all(&caches)?;
        if worktrees.exists() {
            std::fs::remove_dir_all(&worktrees)?;
        }
        std::fs::create_dir_all(&worktrees)?;
        for entry in std::fs::read_dir(&caches)?.flatten() {
            let status = std::process::Command::new("git")
                .arg("-C")
                .arg(entry.path())
                .args(["worktree", "prune"])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                tracing::warn!(cache = %entry.path().display(), "could not prune the stale worktrees of a cache");
            }
        }
        Ok(Repos { prefixes, caches, worktrees, env, locks: Mutex::default() })
    }

    /// Refuses a repository (payload field `field`) outside `JCT_ALLOWED_REPO_PREFIXES`.
    pub fn check_repo(&self, field: &str, repo: &str) -> Result<(), Refusal> {
        if repo.starts_with('-') || !repo_allowed(&self.prefixes, repo) {
            return Err(Refusal::new(
                REPO_NOT_ALLOWED,
                format!(
                    "payload.{field}: {repo:?} is not under JCT_ALLOWED_REPO_PREFIXES ({})",
                    self.prefixes.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The cache of `source`, fetched now.
    pub async fn fetch(&self, source: &str, cancel: &CancellationToken) -> Result<Cache, HandlerError> {
        let digest = Sha256::digest(source.as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let dir = self.caches.join(format!("{name}.git"));
        let lock = self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(dir.clone()).or_default().clone();
        let cache = Cache { dir, lock };
        let _held = cache.lock.lock().await;
        if !cache.dir.join("HEAD").exists() {
            self.git(&self.caches, &["init", "--quiet", "--bare", &cache.dir.to_string_lossy()], cancel).await?;
        }
        self.git(
            &cache.dir,
            &[
                "fetch",
                "--quiet",
                "--prune",
                "--no-tags",
                "--end-of-options",
                source,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
                &format!("+HEAD:{REMOTE_HEAD}"),
            ],
            cancel,
        )
        .await?;
        drop(_held);
        Ok(cache)
    }

    /// The commit `reference` names in the cache: a branch of the source, a tag, or a
    /// commit id; without one, the source's default branch.
    pub async fn resolve(
        &self,
        cache: &Cache,
        reference: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<String, HandlerError> {
        let candidates: Vec<String> = match reference {
            None => vec![REMOTE_HEAD.to_string()],
            Some(r) => vec![format!("refs/remotes/origin/{r}"), format!("refs/tags/{r}"), r.to_string()],
        };
        for c in &candidates {
            let spec = format!("{c}^{{commit}}");
            if let Ok(out) =
                self.git(&cache.dir, &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec], cancel).await
            {
                return Ok(out.trim().to_string());
            }
        }
        Err(HandlerError::new(format!(
            "ref {:?} is not a branch, tag or commit of the repository",
            reference.unwrap_or("HEAD")
        )))
    }

    /// A worktree for the attempt at `commit`, on no branch (a `command` runs in it).
    pub async fn add_detached(
        &self,
        cache: &Cache,
        task: TaskId,
        attempt: i32,
        commit: &str,
        cancel: &CancellationToken,
    ) -> Result<PathBuf, HandlerError> {
        let path = self.worktrees.join(format!("{task}-{attempt}"));
        let _held = cache.lock.lock().await;
        self.git(
            &cache.dir,
            &["worktree", "add", "--quiet", "--force", "--detach", &path.to_string_lossy(), commit],
            cancel,
        )
        .await?;
        Ok(path)
    }

    /// A new worktree for the attempt at `base`, on branch `jct/<task_id>` (reset to `base`
    /// when an earlier attempt left it).
    pub async fn add_worktree(
        &self,
        cache: &Cache,
        task: TaskId,
        attempt: i32,
        base: &str,
        cancel: &CancellationToken,
    ) -> Result<PathBuf, HandlerError> {
        let path = self.worktrees.join(format!("{task}-{attempt}"));
        let _held = cache.lock.lock().await;
        let branch = branch_name(task);
        self.git(
            &cache.dir,
            &["worktree", "add", "--quiet", "--force", "-B", &branch, &path.to_string_lossy(), base],
            cancel,
        )
        .await?;
        Ok(path)
    }

    /// Commits everything the agent changed in the worktree (new files too) and returns
    /// the branch head; the head stays `base` when nothing changed.
    pub async fn commit_all(&self, worktree: &Path, message: &str) -> Result<String, HandlerError> {
        let never = CancellationToken::new();
        self.git(worktree, &["add", "--all", "--force"], &never).await?;
        let staged = self.git(worktree, &["diff", "--cached", "--name-only"], &never).await?;
        if !staged.trim().is_empty() {
            self.git(
                worktree,
                &[
                    "-c",
                    "user.name=JCT",
                    "-c",
                    "user.email=jct@localhost",
                    "-c",
                    "commit.gpgsign=false",
                    "commit",
                    "--quiet",
                    "--no-verify",
                    "-m",
                    message,
                ],
                &never,
            )
            .await?;
        }
        Ok(self.git(worktree, &["rev-parse", "HEAD"], &never).await?.trim().to_string())
    }

    /// The binary-safe patch from `base` to `head`, and its numbers.
    pub async fn diff(&self, worktree: &Path, base: &str, head: &str) -> Result<(Vec<u8>, DiffStat), HandlerError> {
        let never = CancellationToken::new();
        let patch = self.git_bytes(worktree, &["diff", "--binary", "--full-index", base, head], &never).await?;
        let numstat = self.git(worktree, &["diff", "--numstat", base, head], &never).await?;
        let mut stat = DiffStat::default();
        for line in numstat.lines() {
            let mut parts = line.split('\t');
            let (ins, del) = (parts.next().unwrap_or("-"), parts.next().unwrap_or("-"));
            stat.files_changed += 1;
            stat.insertions += ins.parse::<u64>().unwrap_or(0);
            stat.deletions += del.parse::<u64>().unwrap_or(0);
        }
        Ok((patch, stat))
    }

    /// What an agent in the sandbox is given of `worktree` and its cache, so that git works
    /// there: the worktree, the cache read-only with its other worktrees' metadata hidden,
    /// and writable where a commit writes (the object store, the refs and their logs, this
    /// worktree's own metadata). Other branches of the same repository stay readable:
    /// they share the object store.
    pub async fn sandbox_mounts(&self, cache: &Cache, worktree: &Path) -> Result<Vec<Mount>, HandlerError> {
        let (cache_dir, worktree) = (absolute(&cache.dir), absolute(worktree));
        // `.git` in a worktree is a file: `gitdir: <cache>/worktrees/<name>`.
        let dotgit = tokio::fs::read_to_string(worktree.join(".git"))
            .await
            .map_err(|e| HandlerError::new(format!("cannot read the worktree's .git: {e}")))?;
        let gitdir = dotgit
            .trim()
            .strip_prefix("gitdir: ")
            .map(|p| absolute(Path::new(p)))
            .ok_or_else(|| HandlerError::new(format!("the worktree's .git says {dotgit:?}")))?;
        for dir in ["logs", "refs", "objects"] {
            tokio::fs::create_dir_all(cache_dir.join(dir))
                .await
                .map_err(|e| HandlerError::new(format!("cannot make {dir} in the repository cache: {e}")))?;
        }
        Ok(vec![
            Mount::ReadOnly(cache_dir.clone()),
            Mount::Empty(cache_dir.join("worktrees")),
            Mount::Writable(gitdir),
            Mount::Writable(cache_dir.join("objects")),
            Mount::Writable(cache_dir.join("refs")),
            Mount::Writable(cache_dir.join("logs")),
            Mount::Writable(worktree),
        ])
    }

    /// Removes the attempt's worktree; its branch stays in the cache.
    pub async fn remove_worktree(&self, cache: &Cache, worktree: &Path) {
        let never = CancellationToken::new();
        let _held = cache.lock.lock().await;
        let removed = self
            .git(&cache.dir, &["worktree", "remove", "--force", "--force", &worktree.to_string_lossy()], &never)
            .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "git worktree remove failed; removing the directory");
            let _ = tokio::fs::remove_dir_all(worktree).await;
            let _ = self.git(&cache.dir, &["worktree", "prune"], &never).await;
        }
    }

    async fn git(&self, dir: &Path, args: &[&str], cancel: &CancellationToken) -> Result<String, HandlerError> {
        let out = self.git_bytes(dir, args, cancel).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn git_bytes(&self, dir: &Path, args: &[&str], cancel: &CancellationToken) -> Result<Vec<u8>, HandlerError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("-C")
            .arg(dir)
            .args(["-c", "gc.auto=0", "-c", "core.hooksPath=/dev/null"])
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let what = args.first().copied().unwrap_or("git");
        let out = tokio::select! {
            out = cmd.output() => out.map_err(|e| HandlerError::new(format!("cannot run git {what}: {e}")))?,
            _ = cancel.cancelled() => return Err(HandlerError::new(format!("stopped during git {what}"))),
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(HandlerError::new(format!("git {what} failed: {}", err.trim())));
        }
        Ok(out.stdout)
    }
}

impl Cache {
    /// The bare repository.
    pub fn dir(&self) -> PathBuf {
        absolute(&self.dir)
    }
}

/// Whether `repo` is under one of the prefixes. A local path must be absolute and free of
/// `..`, so `/allowed/../etc` does not pass for `/allowed`.
pub fn repo_allowed(prefixes: &[String], repo: &str) -> bool {
    if repo.starts_with('/') {
        let path = Path::new(repo);
        if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return false;
        }
        return prefixes.iter().any(|p| p.starts_with('/') && path.starts_with(Path::new(p)));
    }
    if repo.contains("..") && !repo.contains("://") {
        return false;
    }
    prefixes.iter().any(|p| !p.is_empty() && repo.starts_with(p.as_str()))
}

/// Refuses what cannot be a git ref or commit (payload field `field`): empty, an option,
/// whitespace or control characters.
pub fn check_ref(field: &str, r: &str) -> Result<(), Refusal> {
    if r.is_empty() || r.starts_with('-') || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Refusal::invalid(format!("payload.{field}: {r:?} is not a git ref")));
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The branch an agent task's work is committed on.
pub fn branch_name(task: TaskId) -> String {
    format!("jct/{task}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_must_be_under_a_prefix() {
        let prefixes = vec!["/srv/repos".to_string(), "https://git.example.com/team/".to_string()];
        assert!(repo_allowed(&prefixes, "/srv/repos/app"));
        assert!(!repo_allowed(&prefixes, "/srv/repos/../etc"));
        assert!(!repo_allowed(&prefixes, "/srv/repos-evil/app"));
        assert!(repo_allowed(&prefixes, "https://git.example.com/team/app.git"));
        assert!(!repo_allowed(&prefixes, "https://git.example.com/other/app.git"));
        assert!(!repo_allowed(&prefixes, "relative/path"));
    }

    #[test]
    fn refs_are_checked() {
        assert!(check_ref("ref", "main").is_ok());
        assert!(check_ref("ref", "jct/0190").is_ok());
        for bad in ["", "-x", "a b", "a\nb"] {
            assert!(check_ref("ref", bad).is_err(), "{bad:?}");
        }
    }
}
