//! Running a program for a task: in its sandbox and under its limits, its own process
//! group, a clean environment, its output streamed line by line into the attempt's log with
//! a cap, and a stop that leaves no process behind.
//!
//! The program is the leader of a new session and process group, so everything it starts
//! (a shell's background job, a test runner's workers) can be signalled at once, and it is
//! a child subreaper, so [`tree`](super::tree) finds what left the group too. A stop
//! (cancel, timeout, lease lost, shutdown) sends SIGTERM to all of them and SIGKILL after
//! the kill grace. When the leader exits on its own, whatever it left running gets the same
//! treatment. If the run is dropped half-way (the worker gave up waiting), a guard kills
//! them outright. The leader also dies with the daemon (`PR_SET_PDEATHSIG`), and in the
//! sandbox everything with it (its PID namespace); without the sandbox, what the leader
//! started may survive a SIGKILL of the daemon.
//!
//! [`sandbox`](super::sandbox) builds the command line, [`limits`](super::limits) the
//! rlimits and the cgroup set up in the child before exec, and names the limit a failed run
//! hit.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::limits::{self, Cgroups, Effective, Rlimits};
use super::sandbox::{Grant, Sandbox};
use super::tree::Tree;
use super::{AttemptOutput, HandlerError, Stream};
use crate::tunables::{OUTPUT_BATCH_LINES, OUTPUT_LINE_MAX, OUTPUT_TAIL_BYTES, PROCESS_REAP_POLL, PROCESS_TRACK_EVERY};

/// What to run.
pub struct Program {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The whole environment the program gets: nothing of the daemon's is inherited.
    pub env: Vec<(String, String)>,
    /// Text for standard input; `None` is `/dev/null`.
    pub stdin: Option<String>,
    /// Where it runs and what it may use.
    pub confine: Confinement,
}

/// The sandbox and limits of this deployment, set up once at start-up; each program's
/// [`Confinement`] is made from it.
#[derive(Clone)]
pub struct Isolation {
    pub sandbox: Arc<Sandbox>,
    pub cgroups: Arc<Cgroups>,
    /// The limits' maxima (`JCT_TASK_*`).
    pub max: crate::config::TaskLimits,
}

impl Isolation {
    /// From the configuration: probes bubblewrap (`JCT_SANDBOX`) and the cgroups this
    /// process may create.
    pub fn from_config(config: &crate::config::ExecutorConfig) -> Result<Self, super::SetupError> {
        let path = config.base_env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
        let sandbox = Sandbox::resolve(config.sandbox, config.sandbox_network, path)?;
        let cgroups = if config.task_cgroups { Cgroups::detect() } else { Cgroups::default() };
        Ok(Isolation { sandbox: Arc::new(sandbox), cgroups: Arc::new(cgroups), max: config.task_limits })
    }

    /// One program's confinement: `grant` in the sandbox, the limits a payload asked for.
    pub fn confine(&self, grant: Grant, asked: Option<&limits::Asked>) -> Result<Confinement, super::Refusal> {
        Ok(Confinement {
            sandbox: self.sandbox.clone(),
            grant,
            limits: Effective::new(self.max, asked)?,
            cgroups: self.cgroups.clone(),
        })
    }
}

/// The sandbox and limits of one program.
#[derive(Clone)]
pub struct Confinement {
    pub sandbox: Arc<Sandbox>,
    pub grant: Grant,
    pub limits: Effective,
    pub cgroups: Arc<Cgroups>,
}

/// How long a stop may take, and how much output is kept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Bytes of output stored in the log per attempt; the rest is counted.
    pub output_cap: usize,
}

/// How the program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Finished {
    pub exit: Exit,
    /// True when the run was stopped through the cancellation token.
    pub stopped: bool,
    pub duration: Duration,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// The limit the run hit, in words (`memory limit (JCT_TASK_MEMORY_MB=…) reached`).
    pub breach: Option<String>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0) && !self.stopped
    }

    /// `exit code 3` / `killed by signal 9 (SIGKILL)`.
    pub fn describe(&self) -> String {
        match self.exit {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("killed by signal {s} ({})", signal_name(s)),
        }
    }

    /// The error of a failed run: the limit it hit, how it ended and the tail of stderr.
    pub fn error(&self) -> String {
        let tail = self.stderr_tail.trim_end();
        let ended = match &self.breach {
            Some(breach) => format!("{breach}: {}", self.describe()),
            None => self.describe(),
        };
        if tail.is_empty() {
            ended
        } else {
            format!("{ended}; stderr ends with:\n{tail}")
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(c) => Some(c),
            Exit::Signal(_) => None,
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "signal",
    }
}

/// Sees each line of standard output as it comes (an agent's self-report).
pub type StdoutObserver = Box<dyn FnMut(&str) + Send>;

/// Runs `program` to its end or until `cancel`, streaming its output to `output`.
pub async fn run(
    program: Program,
    output: Arc<dyn AttemptOutput>,
    cancel: &CancellationToken,
    limits: Limits,
    observer: Option<StdoutObserver>,
) -> Result<Finished, HandlerError> {
    let confine = program.confine;
    let home = program.env.iter().find(|(k, _)| k == "HOME").map(|(_, v)| v.as_str());
    let (exe, args) = confine.sandbox.wrap(&program.program, &program.args, &program.cwd, home, &confine.grant);
    let cgroup = confine.cgroups.create(&confine.limits.limits);
    let rlimits = Rlimits::new(&confine.limits.limits, cgroup.is_some() && confine.cgroups.counts_pids());
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.args(&args)
        .current_dir(&program.cwd)
        .env_clear()
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .stdin(if program.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let joiner = cgroup.as_ref().map(limits::AttemptCgroup::joiner);
    // SAFETY: between fork and exec only async-signal-safe calls: setsid, prctl, setrlimit,
    // and open/write/close of paths prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // A new session: its own process group, and no controlling terminal to push
            // keystrokes into (TIOCSTI).
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
            if let Some(joiner) = &joiner {
                joiner.join()?;
            }
            rlimits.apply()
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| HandlerError::new(format!("cannot start {:?}: {e}", program.program)))?;
    let Some(pid) = child.id() else {
        return Err(HandlerError::new(format!("{:?} exited before it could be watched", program.program)));
    };
    let mut guard = Guard { tree: Tree::new(pid as libc::pid_t), cgroup, armed: true };
    tracing::info!(program = %program.program, pid, sandbox = confine.sandbox.is_on(), "started");

    if let (Some(text), Some(mut stdin)) = (program.stdin, child.stdin.take()) {
        tokio::spawn(async move {
            // A program that does not read its input closes the pipe: not an error.
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    let (tx, rx) = mpsc::channel::<(Stream, String)>(OUTPUT_BATCH_LINES * 4);
    let readers = [
        child.stdout.take().map(|s| tokio::spawn(read_lines(s, Stream::Stdout, tx.clone()))),
        child.stderr.take().map(|s| tokio::spawn(read_lines(s, Stream::Stderr, tx.clone()))),
    ];
    drop(tx);
    let collector = tokio::spawn(collect(rx, output.clone(), limits.output_cap, observer));

    let mut track = tokio::time::interval_at(tokio::time::Instant::now() + PROCESS_TRACK_EVERY, PROCESS_TRACK_EVERY);
    track.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (status, stopped, deadline) = loop {
        tokio::select! {
            status = child.wait() => break (status, false, None),
            _ = track.tick() => {
                let members = guard.members();
                guard.tree.refresh(&members);
            }
            _ = cancel.cancelled() => {
                output.lines(Stream::Executor, vec![format!(
                    "stopping: SIGTERM to the process group and every process it started, SIGKILL after {} s",
                    limits.kill_grace.as_secs_f64()
                )]).await;
                let members = guard.members();
                guard.tree.refresh(&members);
                guard.tree.signal(libc::SIGTERM);
                let deadline = Instant::now() + limits.kill_grace;
                let status = match tokio::time::timeout(limits.kill_grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        let members = guard.members();
                        guard.tree.kill(&members);
                        child.wait().await
                    }
                };
                break (status, true, Some(deadline));
            }
        }
    };
    let status = status.map_err(|e| HandlerError::new(format!("lost track of {:?}: {e}", program.program)))?;
    // Whatever the leader left (background jobs, orphans that called setsid) goes with it.
    let members = guard.members();
    if guard.tree.alive(&members) {
        let deadline = match deadline {
            Some(d) => d,
            None => {
                guard.tree.signal(libc::SIGTERM);
                Instant::now() + limits.kill_grace
            }
        };
        while guard.alive() && Instant::now() < deadline {
            tokio::time::sleep(PROCESS_REAP_POLL).await;
        }
        let members = guard.members();
        if guard.tree.alive(&members) {
            guard.tree.kill(&members);
            let until = Instant::now() + Duration::from_secs(1);
            while guard.alive() && Instant::now() < until {
                tokio::time::sleep(PROCESS_REAP_POLL).await;
            }
        }
    }
    guard.armed = false;
    // Every writer of the pipes is gone now, so the readers reach end of file.
    for reader in readers.into_iter().flatten() {
        let _ = reader.await;
    }
    let tails = collector.await.unwrap_or_default();
    let exit = match (status.code(), status.signal()) {
        // bubblewrap reports a program killed by signal n as exit code 128 + n, as a shell
        // does; so an exit code above 128 in the sandbox is read as that signal.
        (Some(code), _) if confine.sandbox.is_on() && code > 128 && code <= 128 + 64 => Exit::Signal(code - 128),
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(-1),
    };
    let stderr_tail = tails.stderr.text();
    let signal = match exit {
        Exit::Signal(s) => Some(s),
        Exit::Code(_) => None,
    };
    let failed = exit != Exit::Code(0) && !stopped;
    let breach = failed
        .then(|| limits::attribute(guard.cgroup.as_ref(), signal, &stderr_tail))
        .flatten()
        .map(|b| limits::describe(b, &confine.limits));
    Ok(Finished { exit, stopped, duration: started.elapsed(), stdout_tail: tails.stdout.text(), stderr_tail, breach })
}

/// The processes of a started program and its cgroup; kills them all when dropped while
/// armed (the run was dropped half-way).
struct Guard {
    tree: Tree,
    cgroup: Option<limits::AttemptCgroup>,
    armed: bool,
}

impl Guard {
    fn members(&self) -> Vec<libc::pid_t> {
        self.cgroup.as_ref().map(limits::AttemptCgroup::members).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        let members = self.members();
        self.tree.alive(&members)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            let members = self.members();
            self.tree.kill(&members);
        }
    }
}

/// Reads `source` as lines (bytes that are not UTF-8 are replaced; a line longer than
/// [`OUTPUT_LINE_MAX`] is cut into pieces) and sends each one on.
async fn read_lines(source: impl AsyncRead + Unpin, stream: Stream, tx: mpsc::Sender<(Stream, String)>) {
    let mut reader = BufReader::new(source);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut limited = (&mut reader).take(OUTPUT_LINE_MAX as u64);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                if tx.send((stream, line)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The last bytes of a stream, kept whatever the cap.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &str) {
        self.lines.push_back(line.to_string());
        self.bytes += line.len() + 1;
        while self.bytes > OUTPUT_TAIL_BYTES && self.lines.len() > 1 {
            let gone = self.lines.pop_front().unwrap_or_default();
            self.bytes -= gone.len() + 1;
        }
    }

    fn text(&self) -> String {
        let mut s: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        if let Some(last) = s.last_mut() {
            // A single huge line is cut to the tail size too.
            if last.len() > OUTPUT_TAIL_BYTES {
                let mut at = last.len() - OUTPUT_TAIL_BYTES;
                while !last.is_char_boundary(at) {
                    at += 1;
                }
                *last = &last[at..];
            }
        }
        s.join("\n")
    }
}

#[derive(Default)]
struct Tails {
    stdout: Tail,
    stderr: Tail,
}

/// Writes lines to the output in batches as they come, up to the cap; counts the rest.
async fn collect(
    mut rx: mpsc::Receiver<(Stream, String)>,
    output: Arc<dyn AttemptOutput>,
    cap: usize,
    mut observer: Option<StdoutObserver>,
) -> Tails {
    let mut tails = Tails::default();
    let (mut stored, mut dropped_lines, mut dropped_bytes) = (0usize, 0u64, 0u64);
    let mut batch: Vec<(Stream, String)> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < OUTPUT_BATCH_LINES {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let mut keep: Vec<(Stream, String)> = Vec::with_capacity(batch.len());
        for (stream, line) in batch.drain(..) {
            match stream {
                Stream::Stdout => {
                    tails.stdout.push(&line);
                    if let Some(observe) = observer.as_mut() {
                        observe(&line);
                    }
                }
                _ => tails.stderr.push(&line),
            }
            let size = line.len() + 1;
            if stored + size <= cap {
                stored += size;
                keep.push((stream, line));
            } else {
                dropped_lines += 1;
                dropped_bytes += line.len() as u64 + 1;
            }
        }
        // Consecutive lines of one stream go together; order across streams is kept.
        let mut run: Vec<String> = Vec::new();
        let mut current = None;
        for (stream, line) in keep {
            if current.is_some_and(|c| c != stream) {
                output.lines(current.unwrap_or(stream), std::mem::take(&mut run)).await;
            }
            current = Some(stream);
            run.push(line);
        }
        if let Some(stream) = current {
            output.lines(stream, run).await;
        }
    }
    if dropped_lines > 0 {
        output
            .lines(
                Stream::Executor,
                vec![format!(
                    "output cap of {cap} bytes reached: {dropped_lines} more lines ({dropped_bytes} bytes) not stored"
                )],
            )
            .await;
    }
    tails
}

/// The environment a program starts with: the daemon's allowed names (`base`), then the
/// payload's own variables, which may override them.
pub fn environment(base: &[(String, String)], extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base.to_vec();
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Whether `program` (as given in `argv[0]` or a profile) is on the allowlist: exactly as
/// listed. A listed bare name is looked up in the program's `PATH`; an absolute path never
/// passes for a listed bare name, or `/tmp/x/make` would pass for `make`.
pub fn allowed(allow: &[String], program: &str) -> bool {
    allow.iter().any(|a| a == program)
}
