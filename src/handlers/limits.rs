//! What one program may use (`JCT_TASK_MEMORY_MB`, `JCT_TASK_PIDS`, `JCT_TASK_FILE_MB`, and a
//! payload's lower `limits`), how that is enforced, and which limit a failed run hit.
//!
//! Enforcement, set in the child before it executes the program, so the sandbox and all it
//! starts inherit it:
//! - rlimits, always: `RLIMIT_DATA` (each process's heap and private writable mappings;
//!   not `RLIMIT_AS`, which counts the address space runtimes like V8 reserve without using),
//!   `RLIMIT_FSIZE` (the largest file written: SIGXFSZ, or EFBIG when ignored) and, without a
//!   cgroup, `RLIMIT_NPROC`. The kernel counts `RLIMIT_NPROC` per user and never applies it
//!   to root, so it is a weak stand-in.
//! - a cgroup per attempt when this process may create them under its own (a delegated
//!   cgroup v2 subtree with the controllers enabled, or writable v1 `pids`/`memory`
//!   hierarchies): `pids.max` bounds the whole attempt's processes whoever runs them, the
//!   memory limit their sum, and the cgroup's member list is one more way to find them all.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use super::Refusal;
use crate::config::TaskLimits;

/// A payload's `limits`: each below the daemon's maximum, or left out for the maximum.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asked {
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub pids: Option<u64>,
    #[serde(default)]
    pub file_mb: Option<u64>,
}

impl Asked {
    /// A payload's `limits` value, when it has one.
    pub fn from_payload(value: Option<&serde_json::Value>) -> Result<Option<Asked>, Refusal> {
        value
            .map(|v| serde_json::from_value(v.clone()).map_err(|e| Refusal::invalid(format!("payload.limits: {e}"))))
            .transpose()
    }
}

/// The limits one attempt runs under, and where each came from (for the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub limits: TaskLimits,
    pub max: TaskLimits,
}

impl Effective {
    /// The daemon's maxima lowered by what the payload asked; 422 naming the field when it
    /// asks for more or for nothing.
    pub fn new(max: TaskLimits, asked: Option<&Asked>) -> Result<Self, Refusal> {
        let Some(asked) = asked else { return Ok(Effective { limits: max, max }) };
        let pick = |field: &str, var: &str, asked: Option<u64>, max: u64, min: u64| match asked {
            None => Ok(max),
            Some(n) if n > max => {
                Err(Refusal::invalid(format!("payload.limits.{field}: {n} is above this daemon's {var}={max}")))
            }
            Some(n) if n < min => Err(Refusal::invalid(format!("payload.limits.{field}: must be at least {min}"))),
            Some(n) => Ok(n),
        };
        let limits = TaskLimits {
            memory_mb: pick("memory_mb", "JCT_TASK_MEMORY_MB", asked.memory_mb, max.memory_mb, 16)?,
            pids: pick("pids", "JCT_TASK_PIDS", asked.pids, max.pids, 8)?,
            file_mb: pick("file_mb", "JCT_TASK_FILE_MB", asked.file_mb, max.file_mb, 1)?,
        };
        Ok(Effective { limits, max })
    }

    fn name(&self, which: Breach) -> String {
        let (var, field, value, max) = match which {
            Breach::Memory => ("JCT_TASK_MEMORY_MB", "memory_mb", self.limits.memory_mb, self.max.memory_mb),
            Breach::Pids => ("JCT_TASK_PIDS", "pids", self.limits.pids, self.max.pids),
            Breach::File => ("JCT_TASK_FILE_MB", "file_mb", self.limits.file_mb, self.max.file_mb),
        };
        let what = match which {
            Breach::Memory => "memory limit",
            Breach::Pids => "pids limit",
            Breach::File => "file size limit",
        };
        if value == max {
            format!("{what} ({var}={value})")
        } else {
            format!("{what} (payload.limits.{field}={value}; {var}={max})")
        }
    }
}

/// A limit a run hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    Memory,
    Pids,
    File,
}

/// The rlimits to set in the child, computed before the fork (nothing is allocated there).
#[derive(Debug, Clone, Copy)]
pub struct Rlimits {
    data: u64,
    fsize: u64,
    nproc: Option<u64>,
}

impl Rlimits {
    pub fn new(limits: &TaskLimits, cgroup_counts_pids: bool) -> Self {
        Rlimits {
            data: limits.memory_mb << 20,
            fsize: limits.file_mb << 20,
            nproc: (!cgroup_counts_pids).then_some(limits.pids),
        }
    }

    /// Sets them on the calling process. Async-signal-safe: called between fork and exec.
    pub fn apply(&self) -> std::io::Result<()> {
        let set = |resource, value: u64| {
            let lim = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
            // SAFETY: setrlimit reads the struct on our stack and touches only this process.
            if unsafe { libc::setrlimit(resource, &lim) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        set(libc::RLIMIT_DATA, self.data)?;
        set(libc::RLIMIT_FSIZE, self.fsize)?;
        if let Some(n) = self.nproc {
            set(libc::RLIMIT_NPROC, n)?;
        }
        Ok(())
    }
}

/// Which cgroup hierarchy a parent directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// cgroup v2: one directory with both controllers.
    Unified,
    V1Pids,
    V1Memory,
}

/// Where this process may create a cgroup per attempt, found once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    parents: Vec<(Kind, PathBuf)>,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

impl Cgroups {
    /// The delegated parents under this process's own cgroups; none when they are not
    /// writable (a container, an unprivileged user without delegation).
    pub fn detect() -> Self {
        let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else { return Cgroups::default() };
        let mut parents = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let rel = path.trim_start_matches('/');
            let candidates: Vec<(Kind, PathBuf)> = match controllers {
                "" => {
                    let dir = Path::new("/sys/fs/cgroup").join(rel);
                    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
                    if enabled.split_whitespace().any(|c| c == "pids") {
                        vec![(Kind::Unified, dir)]
                    } else {
                        vec![]
                    }
                }
                c if c.split(',').any(|c| c == "pids") => {
                    vec![(Kind::V1Pids, Path::new("/sys/fs/cgroup/pids").join(rel))]
                }
                c if c.split(',').any(|c| c == "memory") => {
                    vec![(Kind::V1Memory, Path::new("/sys/fs/cgroup/memory").join(rel))]
                }
                _ => vec![],
            };
            for (kind, dir) in candidates {
                let probe = dir.join(format!("jct-probe-{}", std::process::id()));
                let limit_file = if kind == Kind::V1Memory { "memory.limit_in_bytes" } else { "pids.max" };
                let works = std::fs::create_dir(&probe).is_ok() && probe.join(limit_file).exists();
                let _ = std::fs::remove_dir(&probe);
                if works {
                    // Empty ones a daemon that is gone left (`jct-<its pid>-<n>`; a cgroup
                    // with members cannot be removed anyway).
                    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        let owner = name.strip_prefix("jct-").and_then(|r| r.split('-').next()?.parse::<u32>().ok());
                        if owner.is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists()) {
                            let _ = std::fs::remove_dir(entry.path());
                        }
                    }
                }
                if works {
                    parents.push((kind, dir));
                }
            }
        }
        // v2 and v1 both listed (a hybrid host): the v2 one covers both controllers.
        if parents.iter().any(|(k, _)| *k == Kind::Unified) {
            parents.retain(|(k, _)| *k == Kind::Unified);
        }
        if !parents.is_empty() {
            tracing::info!(cgroups = ?parents.iter().map(|(_, p)| p.display().to_string()).collect::<Vec<_>>(), "a cgroup per program holds its limits");
        }
        Cgroups { parents }
    }

    /// Whether `pids.max` bounds each attempt.
    pub fn counts_pids(&self) -> bool {
        self.parents.iter().any(|(k, _)| matches!(k, Kind::Unified | Kind::V1Pids))
    }

    /// A new cgroup for one program, with its limits written; `None` without delegation
    /// or when it cannot be made (then the rlimits alone hold).
    pub fn create(&self, limits: &TaskLimits) -> Option<AttemptCgroup> {
        if self.parents.is_empty() {
            return None;
        }
        let name = format!("jct-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut made = AttemptCgroup { dirs: Vec::new(), procs: Vec::new() };
        for (kind, parent) in &self.parents {
            let dir = parent.join(&name);
            let written = std::fs::create_dir(&dir).and_then(|_| {
                let mem = (limits.memory_mb << 20).to_string();
                match kind {
                    Kind::Unified => {
                        std::fs::write(dir.join("pids.max"), limits.pids.to_string())?;
                        // The memory controller may not be delegated; pids alone still hold.
                        let _ = std::fs::write(dir.join("memory.max"), &mem);
                        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                        Ok(())
                    }
                    Kind::V1Pids => std::fs::write(dir.join("pids.max"), limits.pids.to_string()),
                    Kind::V1Memory => std::fs::write(dir.join("memory.limit_in_bytes"), &mem),
                }
            });
            made.dirs.push((*kind, dir.clone()));
            if let Err(e) = written {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cannot set up the program's cgroup; rlimits only");
                return None;
            }
            made.procs.push(CString::new(dir.join("cgroup.procs").to_string_lossy().into_owned()).ok()?);
        }
        Some(made)
    }
}

/// One program's cgroup(s): removed when dropped.
#[derive(Debug)]
pub struct AttemptCgroup {
    dirs: Vec<(Kind, PathBuf)>,
    procs: Vec<CString>,
}

/// What the child needs to move itself into an [`AttemptCgroup`], made before the fork.
pub struct Joiner {
    procs: Vec<CString>,
}

impl AttemptCgroup {
    pub fn joiner(&self) -> Joiner {
        Joiner { procs: self.procs.clone() }
    }
}

impl Joiner {
    /// Moves the calling process in. Async-signal-safe: called between fork and exec.
    pub fn join(&self) -> std::io::Result<()> {
        for path in &self.procs {
            // SAFETY: open/write/close on a path prepared before the fork; "0" is this process.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if !ok {
                    return Err(err);
                }
            }
        }
        Ok(())
    }
}

impl AttemptCgroup {
    /// Every process in it now.
    pub fn members(&self) -> Vec<libc::pid_t> {
        let mut out = Vec::new();
        for (_, dir) in &self.dirs {
            let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            out.extend(text.lines().filter_map(|l| l.trim().parse::<libc::pid_t>().ok()));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The limit the kernel enforced, if it had to.
    pub fn breach(&self) -> Option<Breach> {
        let count = |dir: &Path, file: &str, key: &str| -> u64 {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0)
        };
        for (kind, dir) in &self.dirs {
            let (memory, pids) = match kind {
                Kind::Unified => (count(dir, "memory.events", "oom_kill"), count(dir, "pids.events", "max")),
                Kind::V1Pids => (0, count(dir, "pids.events", "max")),
                Kind::V1Memory => (count(dir, "memory.oom_control", "oom_kill"), 0),
            };
            if memory > 0 {
                return Some(Breach::Memory);
            }
            if pids > 0 {
                return Some(Breach::Pids);
            }
        }
        None
    }
}

impl Drop for AttemptCgroup {
    fn drop(&mut self) {
        for (_, dir) in &self.dirs {
            // The program's processes are gone, but one that was just killed may still be
            // leaving (EBUSY for a moment); one left behind is removed at the next start.
            for attempt in 0..5 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(_) if attempt < 4 => std::thread::sleep(std::time::Duration::from_millis(10)),
                    Err(e) => {
                        tracing::debug!(cgroup = %dir.display(), error = %e, "could not remove the program's cgroup")
                    }
                }
            }
        }
    }
}

/// The limit a failed run most likely hit: what the cgroup counted, the signal the kernel
/// sends for a file too large, or what a program says when an allocation, a write or a fork
/// fails under an rlimit. `signal` is the signal that ended the program, also when the
/// sandbox reports it as exit code 128 + n.
pub fn attribute(cgroup: Option<&AttemptCgroup>, signal: Option<i32>, stderr_tail: &str) -> Option<Breach> {
    if let Some(found) = cgroup.and_then(AttemptCgroup::breach) {
        return Some(found);
    }
    if signal == Some(libc::SIGXFSZ) {
        return Some(Breach::File);
    }
    let text = stderr_tail.to_ascii_lowercase();
    if text.contains("file too large") {
        return Some(Breach::File);
    }
    let memory = ["cannot allocate memory", "out of memory", "memoryerror", "memory exhausted", "bad_alloc"];
    if memory.iter().any(|m| text.contains(m)) {
        return Some(Breach::Memory);
    }
    let pids = ["cannot fork", "fork: retry", "fork: resource temporarily unavailable", "can't fork"];
    if pids.iter().any(|m| text.contains(m)) {
        return Some(Breach::Pids);
    }
    None
}

/// The words for a breach, at the start of the attempt's error.
pub fn describe(which: Breach, effective: &Effective) -> String {
    format!("{} reached", effective.name(which))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_may_lower_the_limits_never_raise_them() {
        let max = TaskLimits { memory_mb: 4096, pids: 1024, file_mb: 1024 };
        let e = Effective::new(max, Some(&Asked { memory_mb: Some(64), ..Asked::default() })).unwrap();
        assert_eq!(e.limits, TaskLimits { memory_mb: 64, ..max });
        assert_eq!(
            describe(Breach::Memory, &e),
            "memory limit (payload.limits.memory_mb=64; JCT_TASK_MEMORY_MB=4096) reached"
        );
        assert_eq!(describe(Breach::Pids, &e), "pids limit (JCT_TASK_PIDS=1024) reached");
        let err = Effective::new(max, Some(&Asked { pids: Some(2048), ..Asked::default() })).unwrap_err();
        assert!(err.message.contains("payload.limits.pids") && err.message.contains("1024"), "{err}");
        assert!(Effective::new(max, Some(&Asked { file_mb: Some(0), ..Asked::default() })).is_err());
        assert_eq!(attribute(None, Some(libc::SIGXFSZ), ""), Some(Breach::File));
        assert_eq!(attribute(None, None, "sh: 1: Cannot fork"), Some(Breach::Pids));
        assert_eq!(attribute(None, None, "Out of memory!"), Some(Breach::Memory));
        assert_eq!(attribute(None, None, "no such file"), None);
    }
}
