//! Small shared pieces: the error type, fresh directories, statistics, waiting.

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors are reported, never matched on: a boxed error with a readable chain is enough.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Adds what the harness was doing to an error, so a failed scenario says where it failed.
pub trait Context<T> {
    fn context(self, what: impl Display) -> Result<T>;
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}").into())
    }

    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| format!("{}: {e}", what()).into())
    }
}

/// Returns early with a formatted error message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(format!($($arg)*).into())
    };
}
pub(crate) use bail;

/// Creates `<root>/<uuid>`: every run gets a directory nobody has used, so that no
/// scenario ever deletes files right before measuring (deleting many files on this
/// machine's journal-less ext4 slows file creation for minutes).
pub fn fresh_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Nearest-rank percentile (`p` in 0..=1) of unsorted values; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// The median of the repetitions: the middle one, or the mean of the two middle ones.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Calls `check` every `period` until it yields `Some`, or fails after `timeout`
/// naming `what`, so that a stuck daemon fails one scenario instead of hanging the run.
pub async fn poll_until<T, F, Fut>(what: &str, period: Duration, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(period).await;
    }
}

/// Runs blocking work (SQLite, process waits) off the async worker threads.
pub async fn blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.context("blocking task panicked")?
}

/// Progress goes to stderr so that stdout carries only the result table.
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("[bench] {}", format!($($arg)*))
    };
}
pub(crate) use progress;

/// Where the tasks of one run stand, as the bench reads them from the store.
#[derive(Clone, Debug, Default)]
pub struct TaskCounts {
    pub total: i64,
    pub completed: i64,
    /// `failed` or `cancelled`: neither should happen to an `echo` task.
    pub failed: i64,
    /// One `last_error` of those, to say why.
    pub sample_error: Option<String>,
}

impl TaskCounts {
    /// `true` once all `expected` tasks completed; an error as soon as one failed or the
    /// table holds a different number of tasks than were enqueued (lost or duplicated).
    pub fn all_completed(&self, expected: usize) -> Result<bool> {
        let expected = i64::try_from(expected).context("task count")?;
        if self.failed > 0 {
            bail!(
                "{} task(s) ended failed/cancelled (an echo task never should); e.g. last_error = {:?}",
                self.failed,
                self.sample_error
            );
        }
        if self.total != expected {
            bail!("the tasks table holds {} tasks, {expected} were enqueued", self.total);
        }
        Ok(self.completed == expected)
    }
}
