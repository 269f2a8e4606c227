//! The daemon's own log: stderr, as text or JSON lines, plus the per-task log files.
//!
//! Installs one tracing registry with two layers: the stderr layer (filtered by
//! `RUST_LOG`, and leaving out events that happen inside a task span) and
//! [`TaskLogLayer`], which writes exactly those events to the task's `log.txt`.

use std::io::IsTerminal;

use tracing_subscriber::filter::{dynamic_filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;
use crate::trace::{in_task_span, TaskLogLayer};

/// Installs the global subscriber. Fails only if one is installed already.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let stderr_filter = || {
        EnvFilter::try_new(filter)
            .expect("RUST_LOG is validated by Config")
            .and(dynamic_filter_fn(|meta, cx| !meta.is_event() || !in_task_span(cx)))
    };
    let stderr = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .with_filter(stderr_filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(stderr_filter())
            .boxed(),
    };
    let task_logs = TaskLogLayer.with_filter(EnvFilter::try_new(filter).expect("RUST_LOG is validated by Config"));
    tracing_subscriber::registry().with(stderr).with(task_logs).try_init().map_err(|e| e.to_string())
}
