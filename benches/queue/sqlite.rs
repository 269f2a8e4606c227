//! The SQLite side: the bench's own reads and writes on the daemon's database file.
//! Everything here blocks; call it through [`crate::support::blocking`].

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::support::{Context, Result, TaskCounts};

/// The daemon holds write locks briefly; a reader or the backlog insert waits for them.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT).context("setting busy_timeout")?;
    Ok(conn)
}

/// Read-only: the bench observes the daemon's file, it never competes for its writes.
fn open_read_only(path: &Path) -> Result<Connection> {
    open(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
}

/// Inserts `n` echo tasks in one transaction, as another service enqueues by SQL.
pub fn insert_backlog(path: &Path, n: usize) -> Result<()> {
    let mut conn = open(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    let tx = conn.transaction().context("BEGIN")?;
    {
        let mut insert =
            tx.prepare("INSERT INTO tasks (type, payload) VALUES ('echo', ?)").context("preparing the INSERT")?;
        for i in 0..n {
            insert.execute([format!("{{\"i\":{i}}}")]).context("INSERT INTO tasks")?;
        }
    }
    tx.commit().context("COMMIT")
}

/// Whether any task is still queued or running (the first entry of a partial index each;
/// see [`crate::pg::any_unfinished`]).
pub fn any_unfinished(path: &Path) -> Result<bool> {
    let conn = open_read_only(path)?;
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'queued') \
             OR EXISTS (SELECT 1 FROM tasks WHERE status = 'running')",
        [],
        |row| row.get(0),
    )
    .context("looking for unfinished tasks")
}

pub fn task_counts(path: &Path) -> Result<TaskCounts> {
    let conn = open_read_only(path)?;
    conn.query_row(
        "SELECT count(*), \
                coalesce(sum(status = 'completed'), 0), \
                coalesce(sum(status IN ('failed', 'cancelled')), 0), \
                min(CASE WHEN status IN ('failed', 'cancelled') THEN last_error END) \
         FROM tasks",
        [],
        |row| {
            Ok(TaskCounts {
                total: row.get(0)?,
                completed: row.get(1)?,
                failed: row.get(2)?,
                sample_error: row.get(3)?,
            })
        },
    )
    .context("counting tasks")
}

/// Dispatch latency of every task, `started_at - created_at`. The file keeps the times of
/// `tasks` as INTEGER microseconds since the Unix epoch.
pub fn start_latencies_ms(path: &Path) -> Result<Vec<f64>> {
    let conn = open_read_only(path)?;
    let mut select = conn
        .prepare("SELECT started_at - created_at FROM tasks WHERE started_at IS NOT NULL")
        .context("preparing the latency query")?;
    let rows = select.query_map([], |row| row.get::<_, i64>(0)).context("reading latencies")?;
    rows.map(|row| Ok(row.context("reading latencies")? as f64 / 1000.0)).collect()
}

/// Seconds from the first claim to the last completion.
pub fn drain_seconds(path: &Path) -> Result<f64> {
    let conn = open_read_only(path)?;
    let (first, last): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT min(started_at), max(finished_at) FROM tasks", [], |row| Ok((row.get(0)?, row.get(1)?)))
        .context("reading the drain span")?;
    match (first, last) {
        (Some(first), Some(last)) => Ok((last - first) as f64 / 1e6),
        _ => Err("no task was run".into()),
    }
}
