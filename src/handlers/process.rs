//! Running a program for a task: its own process group, a clean environment, its output
//! streamed line by line into the attempt's log with a cap, and a stop that leaves no
//! process behind.
//!
//! The program is the leader of a new process group, so everything it starts (a shell's
//! background job, a test runner's workers) can be signalled at once. A stop (cancel,
//! timeout, lease lost, shutdown) sends SIGTERM to the group and SIGKILL after the kill
//! grace. When the leader exits on its own, whatever it left running in its group gets the
//! same treatment. If the run is dropped half-way (the worker gave up waiting), a guard
//! kills the group outright. The leader also dies with the daemon (`PR_SET_PDEATHSIG`), so
//! a daemon killed with SIGKILL does not leave it running either; what the leader started
//! in the background may survive that case.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{AttemptOutput, HandlerError, Stream};
use crate::tunables::{OUTPUT_BATCH_LINES, OUTPUT_LINE_MAX, OUTPUT_TAIL_BYTES, PROCESS_REAP_POLL};

/// What to run.
pub struct Program {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The whole environment the program gets: nothing of the daemon's is inherited.
    pub env: Vec<(String, String)>,
    /// Text for standard input; `None` is `/dev/null`.
    pub stdin: Option<String>,
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

    /// The error of a failed run: how it ended and the tail of stderr.
    pub fn error(&self) -> String {
        let tail = self.stderr_tail.trim_end();
        if tail.is_empty() {
            self.describe()
        } else {
            format!("{}; stderr ends with:\n{tail}", self.describe())
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
    let mut cmd = tokio::process::Command::new(&program.program);
    cmd.args(&program.args)
        .current_dir(&program.cwd)
        .env_clear()
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .stdin(if program.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the new process.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| HandlerError::new(format!("cannot start {:?}: {e}", program.program)))?;
    let Some(pid) = child.id() else {
        return Err(HandlerError::new(format!("{:?} exited before it could be watched", program.program)));
    };
    let group = Group { pgid: pid as libc::pid_t, armed: true };
    tracing::info!(program = %program.program, pid, "started");

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

    let (status, stopped) = tokio::select! {
        status = child.wait() => (status, false),
        _ = cancel.cancelled() => {
            output.lines(Stream::Executor, vec![format!(
                "stopping: SIGTERM to the process group, SIGKILL after {} s", limits.kill_grace.as_secs_f64()
            )]).await;
            group.signal(libc::SIGTERM);
            let status = match tokio::time::timeout(limits.kill_grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    group.signal(libc::SIGKILL);
                    child.wait().await
                }
            };
            (status, true)
        }
    };
    let status = status.map_err(|e| HandlerError::new(format!("lost track of {:?}: {e}", program.program)))?;
    // Whatever the leader left in its group (background jobs) goes with it.
    if group.alive() {
        group.signal(libc::SIGTERM);
        if !group.wait_empty(limits.kill_grace).await {
            group.signal(libc::SIGKILL);
            group.wait_empty(Duration::from_secs(1)).await;
        }
    }
    group.disarm();
    // Every writer of the pipes is gone now, so the readers reach end of file.
    for reader in readers.into_iter().flatten() {
        let _ = reader.await;
    }
    let tails = collector.await.unwrap_or_default();
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(-1),
    };
    Ok(Finished {
        exit,
        stopped,
        duration: started.elapsed(),
        stdout_tail: tails.stdout.text(),
        stderr_tail: tails.stderr.text(),
    })
}

/// The process group of a started program; kills it when dropped while armed.
struct Group {
    pgid: libc::pid_t,
    armed: bool,
}

impl Group {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
        unsafe {
            libc::kill(-self.pgid, sig);
        }
    }

    /// Whether any live process of the group is left. Zombies do not count: they are dead,
    /// and where nothing reaps orphans (a container whose PID 1 is this daemon) they would
    /// keep the group "alive" forever.
    fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(-self.pgid, 0) } != 0 {
            return false;
        }
        live_member_of(self.pgid)
    }

    async fn wait_empty(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.alive() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(PROCESS_REAP_POLL).await;
        }
        true
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.armed {
            self.signal(libc::SIGKILL);
        }
    }
}

/// Whether `/proc` shows a process of group `pgid` that is not a zombie. Without a
/// readable `/proc`, every process counts.
fn live_member_of(pgid: libc::pid_t) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else { continue };
        let mut fields = rest.split_whitespace();
        let (state, _ppid, pgrp) = (fields.next(), fields.next(), fields.next());
        if pgrp.and_then(|g| g.parse::<libc::pid_t>().ok()) == Some(pgid) && state != Some("Z") {
            return true;
        }
    }
    false
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
