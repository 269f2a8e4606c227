//! Trace folders: `<JCT_TRACE_DIR>/<task_id>/{input.json, log.txt, output.json}`.
//!
//! [`TraceWriter`] writes the two JSON files whole (temp file + rename) and opens the
//! task's `log.txt` as a tracing-appender file appender. [`TaskLogLayer`] is the tracing
//! layer that routes every event emitted inside a task's span to that task's appender,
//! and [`in_task_span`] lets the daemon's stderr layer leave those events out, so each
//! line lands in exactly one place even while many tasks run at once.
//!
//! Every function here does blocking file I/O: callers run a whole folder's work as one
//! blocking job, never a tokio::fs call per file.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Span, Subscriber};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, Registry};

use crate::task::{Task, TaskId};

pub const INPUT_FILE: &str = "input.json";
pub const LOG_FILE: &str = "log.txt";
pub const OUTPUT_FILE: &str = "output.json";

/// Writes trace folders under one root, or nothing when traces are off.
#[derive(Debug, Clone)]
pub struct TraceWriter {
    root: Option<PathBuf>,
}

/// An open trace folder for one attempt.
#[derive(Clone)]
pub struct TaskTrace {
    dir: PathBuf,
    log: Arc<RollingFileAppender>,
}

/// Where posted artifacts go inside a trace folder.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// The files `GET /tasks/{id}/trace/{file}` may serve.
pub fn is_trace_file(name: &str) -> bool {
    matches!(name, INPUT_FILE | LOG_FILE | OUTPUT_FILE)
        || name
            .strip_prefix("output.attempt-")
            .and_then(|rest| rest.strip_suffix(".json"))
            .is_some_and(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The name an attempt's `output.json` is kept under once the next attempt begins.
pub fn earlier_output(attempt: i32) -> String {
    format!("output.attempt-{attempt}.json")
}

/// Whether `name` is a safe artifact file name: 1–128 of `[A-Za-z0-9._-]`, not starting
/// with a dot (no hidden files, no `..`, no path separators).
pub fn is_safe_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl TaskTrace {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends lines (a remote worker's, a program's output), each stamped and tagged
    /// (`remote`, `stdout`, `stderr`); one write per line, as the tracing layer does, so
    /// lines never interleave within a file.
    pub fn append_lines(&self, tag: &str, lines: &[String]) -> io::Result<()> {
        let now = ts(Utc::now());
        for line in lines {
            for part in line.split('\n') {
                let text = format!("{now}  INFO {tag}: {}\n", part.trim_end_matches('\r'));
                self.log.make_writer().write_all(text.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Writes an artifact under `artifacts/`; refuses a name already taken
    /// ([`io::ErrorKind::AlreadyExists`]). The name must pass [`is_safe_artifact_name`].
    pub fn write_artifact(&self, name: &str, content: &[u8]) -> io::Result<PathBuf> {
        if !is_safe_artifact_name(name) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "unsafe artifact name"));
        }
        let dir = self.dir.join(ARTIFACTS_DIR);
        fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        file.write_all(content)?;
        Ok(path)
    }
}

/// `output.json`: how an attempt ended.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub task_id: TaskId,
    /// The task's status after this attempt: `completed`, `failed`, or `queued` when
    /// another attempt will follow.
    pub status: &'static str,
    pub attempt: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: f64,
    /// The CWOM Run recording this attempt, for a task linked to an Issue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwom_run_id: Option<String>,
}

#[derive(Serialize)]
struct InputRecord<'a> {
    task_id: TaskId,
    #[serde(rename = "type")]
    task_type: &'a str,
    payload: &'a Value,
    queue: &'a str,
    priority: i32,
    attempt: i32,
    max_attempts: i32,
    timeout_seconds: i32,
    trace_id: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    locked_by: Option<&'a str>,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    /// A workflow step's parents as they ended, by key (absent for a plain task).
    #[serde(skip_serializing_if = "Option::is_none")]
    parents: Option<&'a crate::task::Parents>,
}

impl TraceWriter {
    /// Trace folders under `root`, which is created and checked for writing now so a
    /// bad `JCT_TRACE_DIR` stops start-up rather than every task.
    pub fn new(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let probe = root.join(format!(".jct-write-probe-{}", std::process::id()));
        fs::write(&probe, b"ok")?;
        fs::remove_file(&probe)?;
        Ok(TraceWriter { root: Some(root.to_path_buf()) })
    }

    /// A writer that writes nothing (`JCT_TRACE=off`).
    pub fn disabled() -> Self {
        TraceWriter { root: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.root.is_some()
    }

    /// The folder a task's traces go to.
    pub fn dir_for(&self, id: TaskId) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join(id.to_string()))
    }

    /// Opens the attempt's folder: keeps the previous attempt's `output.json` as
    /// `output.attempt-N.json`, writes `input.json`, and opens `log.txt` with a header line.
    pub fn begin(&self, task: &Task) -> io::Result<Option<TaskTrace>> {
        let Some(dir) = self.dir_for(task.id) else {
            return Ok(None);
        };
        fs::create_dir_all(&dir)?;
        if task.attempts > 1 {
            let previous = dir.join(OUTPUT_FILE);
            if previous.exists() {
                fs::rename(&previous, dir.join(earlier_output(task.attempts - 1)))?;
            }
        }
        write_json_whole(&dir, INPUT_FILE, &InputRecord::of(task))?;
        let header = format!(
            "=== attempt {} of {} · task {} · type {} · started {} ===\n",
            task.attempts,
            task.max_attempts,
            task.id,
            task.task_type,
            ts(task.started_at.unwrap_or_else(Utc::now))
        );
        Ok(Some(open_log(dir, &header)?))
    }

    /// Reopens (or creates) the folder of an attempt that began in another daemon process:
    /// `input.json` is written when this disk has none, and `log.txt` gets a line saying
    /// where the rest of the attempt's trace comes from.
    pub fn resume(&self, task: &Task) -> io::Result<Option<TaskTrace>> {
        let Some(dir) = self.dir_for(task.id) else {
            return Ok(None);
        };
        fs::create_dir_all(&dir)?;
        if !dir.join(INPUT_FILE).exists() {
            write_json_whole(&dir, INPUT_FILE, &InputRecord::of(task))?;
        }
        let header = format!(
            "=== attempt {} of task {} continues here; it was claimed through another daemon process \
             (lease holder {}, claimed {}) ===\n",
            task.attempts,
            task.id,
            task.locked_by.as_deref().unwrap_or("unknown"),
            ts(task.started_at.unwrap_or_else(Utc::now))
        );
        Ok(Some(open_log(dir, &header)?))
    }

    /// Writes `output.json`, the last file of an attempt.
    pub fn finish(&self, trace: &TaskTrace, record: &AttemptRecord) -> io::Result<()> {
        write_json_whole(&trace.dir, OUTPUT_FILE, record)
    }
}

/// Opens `dir/log.txt` for appending and writes `header` to it.
fn open_log(dir: PathBuf, header: &str) -> io::Result<TaskTrace> {
    let log = RollingFileAppender::builder()
        .rotation(Rotation::NEVER)
        .filename_prefix(LOG_FILE)
        .build(&dir)
        .map_err(io::Error::other)?;
    log.make_writer().write_all(header.as_bytes())?;
    Ok(TaskTrace { dir, log: Arc::new(log) })
}

impl<'a> InputRecord<'a> {
    fn of(task: &'a Task) -> Self {
        InputRecord {
            task_id: task.id,
            task_type: &task.task_type,
            payload: &task.payload,
            queue: &task.queue,
            priority: task.priority,
            attempt: task.attempts,
            max_attempts: task.max_attempts,
            timeout_seconds: task.timeout_seconds,
            trace_id: task.trace_id.as_deref(),
            idempotency_key: task.idempotency_key.as_deref(),
            locked_by: task.locked_by.as_deref(),
            run_at: task.run_at,
            created_at: task.created_at,
            started_at: task.started_at,
            parents: task.parents.as_ref(),
        }
    }
}

/// Writes `dir/name` so that readers see the old file or the whole new one, never half.
fn write_json_whole(dir: &Path, name: &str, value: &impl Serialize) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, dir.join(name))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Sends the events of a task's span to that task's `log.txt`.
///
/// The executor attaches the task's appender to the span with [`attach`]; events in
/// spans without one are ignored here (they go to the daemon's log).
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskLogLayer;

/// The span extension that marks a task span and carries its log file.
struct TaskLog(Arc<RollingFileAppender>);

/// Routes events inside `span` to the trace's `log.txt`. Does nothing when no
/// tracing registry is installed (the events then go nowhere, as all events would).
pub fn attach(span: &Span, trace: &TaskTrace) {
    let log = trace.log.clone();
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<Registry>() {
            if let Some(data) = registry.span(id) {
                data.extensions_mut().insert(TaskLog(log));
            }
        }
    });
}

/// True when the current span is inside a task span with a log file; the daemon's
/// stderr layer uses it to leave task lines to `log.txt`.
pub fn in_task_span<S>(cx: &Context<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    cx.lookup_current().map(|span| span.scope().any(|s| s.extensions().get::<TaskLog>().is_some())).unwrap_or(false)
}

impl<S> Layer<S> for TaskLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        for span in scope {
            let ext = span.extensions();
            let Some(TaskLog(log)) = ext.get::<TaskLog>() else {
                continue;
            };
            let meta = event.metadata();
            let mut visitor = LineVisitor { fields: String::new(), message: None };
            event.record(&mut visitor);
            let mut line = String::with_capacity(96 + visitor.fields.len());
            let _ = write!(
                line,
                "{} {:>5} {}: {}{}",
                ts(Utc::now()),
                meta.level(),
                meta.target(),
                visitor.message.as_deref().unwrap_or(""),
                visitor.fields
            );
            line.push('\n');
            // One write per line: concurrent tasks never interleave within a file, and a
            // failed write must not take the handler down with it.
            let _ = log.make_writer().write_all(line.as_bytes());
            return;
        }
    }
}

/// Formats an event's fields as ` key=value`, keeping `message` for the end.
struct LineVisitor {
    fields: String,
    message: Option<String>,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}
