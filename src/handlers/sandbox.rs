//! The sandbox a program runs in (`JCT_SANDBOX`): bubblewrap with the system read-only, the
//! attempt's own paths the only writable ones, a private `/tmp` and `HOME`, its own PID
//! namespace, and no network unless granted. Nothing else of the machine is mounted, so the
//! daemon's database, trace folders, other attempts' workspaces and home are not there to
//! be read. This module decides the mode at start-up and builds the `bwrap` command line;
//! `process` runs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use super::SetupError;
use crate::config::SandboxMode;
use crate::tunables::SANDBOX_PROBE_TIMEOUT;

/// Where programs run: in bubblewrap, or as the daemon's user with nothing more.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The `bwrap` program when the sandbox is on.
    bwrap: Option<PathBuf>,
    /// `JCT_SANDBOX_NETWORK=on`: every program may use the network.
    network: bool,
}

/// One mount of what a program may see besides the system, in order: a later one may sit
/// inside an earlier one (a writable worktree gitdir inside a read-only repository cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    ReadOnly(PathBuf),
    Writable(PathBuf),
    /// An empty directory over the path: hides what an earlier mount showed there.
    Empty(PathBuf),
}

/// What one program is given in the sandbox.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub mounts: Vec<Mount>,
    /// The network is there (an agent profile's `network = true`).
    pub network: bool,
}

/// The system paths every program sees, read-only: the programs and libraries, and the
/// parts of `/etc` that name resolution, TLS, the dynamic loader and git read. Not all of
/// `/etc`: as root without capabilities, a program could still read root-owned files such
/// as `/etc/shadow` or SSH host keys.
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
const ETC: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gitconfig",
    "group",
    "host.conf",
    "hostname",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "profile",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
];

impl Sandbox {
    /// No sandbox.
    pub fn none() -> Self {
        Sandbox { bwrap: None, network: false }
    }

    /// Decides the mode at start-up: `bwrap` fails when bubblewrap does not work here,
    /// `auto` falls back to none with one warning line.
    pub fn resolve(mode: SandboxMode, network: bool, path: Option<&str>) -> Result<Self, SetupError> {
        if mode == SandboxMode::None {
            return Ok(Sandbox::none());
        }
        match probe(path) {
            Ok(bwrap) => {
                tracing::info!(bwrap = %bwrap.display(), network, "programs run in a bubblewrap sandbox");
                Ok(Sandbox { bwrap: Some(bwrap), network })
            }
            Err(reason) if mode == SandboxMode::Bwrap => Err(SetupError::Sandbox { reason }),
            Err(reason) => {
                tracing::warn!(
                    "JCT_SANDBOX=auto: bubblewrap does not work here ({reason}); programs run without a sandbox (README, Security model)"
                );
                Ok(Sandbox::none())
            }
        }
    }

    pub fn is_on(&self) -> bool {
        self.bwrap.is_some()
    }

    /// The program and arguments that run `program args` in the sandbox with `grant`, in
    /// `cwd`; unchanged without a sandbox. `home` (the program's `HOME`) becomes an empty
    /// directory, so a CLI finds a home to write its settings to but not the daemon's.
    pub fn wrap(
        &self,
        program: &str,
        args: &[String],
        cwd: &Path,
        home: Option<&str>,
        grant: &Grant,
    ) -> (String, Vec<String>) {
        let Some(bwrap) = &self.bwrap else {
            return (program.to_string(), args.to_vec());
        };
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        // --die-with-parent: the sandbox goes when the daemon does, even by SIGKILL; the PID
        // namespace: when the program's first process ends, everything left in it is killed.
        push(&["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]);
        if !(grant.network || self.network) {
            push(&["--unshare-net"]);
        }
        for dir in SYSTEM_DIRS {
            match std::fs::read_link(dir) {
                // Merged /usr: /bin is a link to usr/bin.
                Ok(target) => push(&["--symlink", &target.to_string_lossy(), dir]),
                Err(_) if Path::new(dir).is_dir() => push(&["--ro-bind", dir, dir]),
                Err(_) => {}
            }
        }
        for name in ETC {
            let path = format!("/etc/{name}");
            push(&["--ro-bind-try", &path, &path]);
        }
        push(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        if let Some(home) = home.filter(|h| h.starts_with('/') && *h != "/") {
            let inside = |m: &Mount| match m {
                Mount::ReadOnly(p) | Mount::Writable(p) | Mount::Empty(p) => Path::new(home).starts_with(p),
            };
            // A home inside a granted path would hide part of it.
            if !grant.mounts.iter().any(inside) {
                push(&["--tmpfs", home]);
            }
        }
        // A program named by its path (a profile's program) must be there to be run.
        if program.starts_with('/') {
            push(&["--ro-bind", program, program]);
        }
        for mount in &grant.mounts {
            match mount {
                Mount::ReadOnly(p) => push(&["--ro-bind", &p.to_string_lossy(), &p.to_string_lossy()]),
                Mount::Writable(p) => push(&["--bind", &p.to_string_lossy(), &p.to_string_lossy()]),
                Mount::Empty(p) => push(&["--tmpfs", &p.to_string_lossy()]),
            }
        }
        // The rest of the root (the directories bubblewrap made for the mounts, /etc) is
        // read-only too: a write outside the granted paths fails rather than vanishing.
        push(&["--remount-ro", "/", "--chdir", &cwd.to_string_lossy(), "--", program]);
        a.extend(args.iter().cloned());
        (bwrap.to_string_lossy().into_owned(), a)
    }
}

/// Finds `bwrap` on `path` and runs it once with the namespaces programs get.
fn probe(path: Option<&str>) -> Result<PathBuf, String> {
    let bwrap = path
        .unwrap_or("/usr/bin:/bin")
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join("bwrap"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no bwrap on PATH (Debian: apt-get install bubblewrap)".to_string())?;
    let started = std::process::Command::new(&bwrap)
        .args(["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .args(["--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent", "--", "true"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = started.map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    let deadline = Instant::now() + SANDBOX_PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not finish within {:?}", bwrap.display(), SANDBOX_PROBE_TIMEOUT));
            }
            Err(e) => return Err(format!("lost track of {}: {e}", bwrap.display())),
        }
    };
    if status.success() {
        return Ok(bwrap);
    }
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut err);
    }
    Err(format!("{} failed ({status}): {}", bwrap.display(), err.trim().lines().next().unwrap_or("no message")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_mounts_only_what_was_granted() {
        let s = Sandbox { bwrap: Some("/usr/bin/bwrap".into()), network: false };
        let grant = Grant {
            mounts: vec![Mount::ReadOnly("/c".into()), Mount::Empty("/c/w".into()), Mount::Writable("/ws/a".into())],
            network: false,
        };
        let (program, args) = s.wrap("sh", &["-c".into(), "x".into()], Path::new("/ws/a"), Some("/home/d"), &grant);
        assert_eq!(program, "/usr/bin/bwrap");
        let line = args.join(" ");
        assert!(line.contains("--unshare-net") && line.contains("--unshare-pid"), "{line}");
        assert!(line.contains("--tmpfs /home/d"), "the daemon's home is an empty directory: {line}");
        let order =
            ["--ro-bind /c /c", "--tmpfs /c/w", "--bind /ws/a /ws/a", "--remount-ro / --chdir /ws/a -- sh -c x"];
        let at: Vec<usize> = order.iter().map(|o| line.find(o).unwrap_or_else(|| panic!("{o}: {line}"))).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "mounts in order: {line}");
        let open = Grant { network: true, ..grant };
        assert!(!s.wrap("sh", &[], Path::new("/ws/a"), None, &open).1.contains(&"--unshare-net".to_string()));
        let (program, args) = Sandbox::none().wrap("sh", &["x".into()], Path::new("/"), None, &open);
        assert_eq!((program.as_str(), args), ("sh", vec!["x".to_string()]));
    }
}
