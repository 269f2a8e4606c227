//! The embedded store: one SQLite file through rusqlite.
//!
//! SQLite serialises writers, so one connection behind a mutex is both simple and as fast
//! as the file allows; every call runs on tokio's blocking pool so the async workers never
//! wait on disk. WAL mode and a busy timeout let a second process (another daemon, or a
//! service inserting rows by hand) share the file. No transaction is ever held while a
//! handler runs: each operation is one short statement or batch.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{lease_secs, ClaimParams, Finish, Outcome, Store, StoreError, StoreResult};
use crate::task::{NewTask, Task, TaskFilter, TaskId, TaskStatus, WorkerId};

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

const COLUMNS: &str = "id, type, payload, status, queue, priority, run_at, attempts, max_attempts, \
     timeout_seconds, idempotency_key, trace_id, locked_by, locked_until, result, last_error, \
     created_at, updated_at, started_at, finished_at, cwom_issue_id";

/// A task store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database file.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let p = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> StoreResult<Connection> {
            let mut conn = Connection::open(&p)
                .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", p.display())))?;
            conn.busy_timeout(Duration::from_secs(10)).map_err(internal)?;
            conn.pragma_update(None, "journal_mode", "WAL").map_err(internal)?;
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(internal)?;
            conn.pragma_update(None, "foreign_keys", "ON").map_err(internal)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("sqlite open task failed: {e}")))??;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on the blocking pool (shared with the CWOM layer).
    pub(crate) async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-done statement behind
            // (SQLite rolls back), so a poisoned lock is still a usable connection.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("sqlite task failed: {e}")))?
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    // Two processes starting on a fresh file race to create refinery's history table;
    // the loser sees "already exists" and simply tries again.
    let mut last = None;
    for _ in 0..5 {
        match embedded::migrations::runner().run(conn) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = Some(e.to_string());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Err(StoreError::Internal(format!("sqlite migration failed: {}", last.unwrap_or_default())))
}

pub(crate) fn internal(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(err, _)
            if matches!(
                err.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::ReadOnly
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// The one text form of a time in the file: fixed width, so text order is time order.
pub(crate) fn fmt_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // SQLite's own datetime() form, for rows written by hand.
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .map(|n| n.and_utc())
        .map_err(|_| format!("unreadable time {s:?}"))
}

fn conversion(idx: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, msg.into())
}

fn ts_col(row: &Row, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = row.get(idx)?;
    parse_ts(&s).map_err(|m| conversion(idx, m))
}

fn opt_ts_col(row: &Row, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| parse_ts(&s).map_err(|m| conversion(idx, m))).transpose()
}

fn json_col(row: &Row, idx: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| conversion(idx, e.to_string()))).transpose()
}

fn task_from_row(row: &Row) -> rusqlite::Result<Task> {
    let id: String = row.get(0)?;
    let id: TaskId = id.parse().map_err(|e: uuid::Error| conversion(0, e.to_string()))?;
    let status: String = row.get(3)?;
    Ok(Task {
        id,
        task_id: id,
        task_type: row.get(1)?,
        payload: json_col(row, 2)?.unwrap_or_default(),
        status: status.parse().map_err(|m| conversion(3, m))?,
        queue: row.get(4)?,
        priority: row.get(5)?,
        run_at: ts_col(row, 6)?,
        attempts: row.get(7)?,
        max_attempts: row.get(8)?,
        timeout_seconds: row.get(9)?,
        idempotency_key: row.get(10)?,
        trace_id: row.get(11)?,
        locked_by: row.get(12)?,
        locked_until: opt_ts_col(row, 13)?,
        result: json_col(row, 14)?,
        last_error: row.get(15)?,
        created_at: ts_col(row, 16)?,
        updated_at: ts_col(row, 17)?,
        started_at: opt_ts_col(row, 18)?,
        finished_at: opt_ts_col(row, 19)?,
        cwom_issue_id: row.get(20)?,
    })
}

fn collect(rows: rusqlite::MappedRows<'_, impl FnMut(&Row) -> rusqlite::Result<Task>>) -> StoreResult<Vec<Task>> {
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(internal)
}

/// Inserts one task; a used idempotency key makes it insert nothing.
const INSERT: &str = "INSERT INTO tasks (id, type, payload, queue, priority, run_at, max_attempts, \
     timeout_seconds, idempotency_key, trace_id, created_at, updated_at, cwom_issue_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12) \
     ON CONFLICT (idempotency_key) DO NOTHING";

/// The parameters of [`INSERT`] for one task, with its text-encoded parts.
struct InsertRow<'a> {
    task: &'a NewTask,
    id: String,
    payload: String,
    run_at: String,
    now: String,
}

impl<'a> InsertRow<'a> {
    fn new(task: &'a NewTask, now: String) -> Self {
        InsertRow {
            task,
            id: task.id.to_string(),
            payload: task.payload.to_string(),
            run_at: task.run_at.map(fmt_ts).unwrap_or_else(|| now.clone()),
            now,
        }
    }

    fn params(&self) -> [&dyn rusqlite::ToSql; 12] {
        let t = self.task;
        [
            &self.id,
            &t.task_type,
            &self.payload,
            &t.queue,
            &t.priority,
            &self.run_at,
            &t.max_attempts,
            &t.timeout_seconds,
            &t.idempotency_key,
            &t.trace_id,
            &self.now,
            &t.cwom_issue_id,
        ]
    }
}

/// The task that holds an idempotency key.
fn holder_of(conn: &Connection, key: &Option<String>) -> StoreResult<TaskId> {
    let id: String =
        conn.query_row("SELECT id FROM tasks WHERE idempotency_key = ?1", [key], |r| r.get(0)).map_err(internal)?;
    id.parse().map_err(|e: uuid::Error| StoreError::Internal(e.to_string()))
}

fn get_task(conn: &Connection, id: TaskId) -> StoreResult<Option<Task>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))
        .map_err(internal)?
        .query_row([id.to_string()], task_from_row)
        .optional()
        .map_err(internal)
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(&self, task: NewTask) -> StoreResult<Task> {
        self.call(move |conn| {
            let row = InsertRow::new(&task, fmt_ts(Utc::now()));
            let inserted = conn
                .prepare_cached(&format!("{INSERT} RETURNING {COLUMNS}"))
                .map_err(internal)?
                .query_row(row.params(), task_from_row)
                .optional()
                .map_err(internal)?;
            match inserted {
                Some(t) => Ok(t),
                None => Err(StoreError::Duplicate { existing: holder_of(conn, &task.idempotency_key)? }),
            }
        })
        .await
    }

    async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskId>> {
        self.call(move |conn| {
            let now = fmt_ts(Utc::now());
            let tx = conn.transaction().map_err(internal)?;
            {
                let mut stmt = tx.prepare_cached(INSERT).map_err(internal)?;
                for t in &tasks {
                    if stmt.execute(InsertRow::new(t, now.clone()).params()).map_err(internal)? == 0 {
                        // Dropping the transaction rolls the whole batch back.
                        return Err(StoreError::Duplicate { existing: holder_of(&tx, &t.idempotency_key)? });
                    }
                }
            }
            tx.commit().map_err(internal)?;
            Ok(tasks.iter().map(|t| t.id).collect())
        })
        .await
    }

    async fn claim(&self, params: &ClaimParams) -> StoreResult<Vec<Task>> {
        let worker = params.worker.0.clone();
        let limit = params.limit as i64;
        let lease = lease_secs(params.lease);
        self.call(move |conn| {
            let now = Utc::now();
            let until = now + chrono::Duration::microseconds((lease * 1e6) as i64);
            let mut stmt = conn
                .prepare_cached(&format!(
                    "UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = ?1, \
                     locked_until = ?2, started_at = ?3, updated_at = ?3 \
                     WHERE id IN (SELECT id FROM tasks WHERE status = 'queued' AND run_at <= ?3 \
                                  ORDER BY priority DESC, run_at, id LIMIT ?4) \
                     RETURNING {COLUMNS}"
                ))
                .map_err(internal)?;
            let rows =
                stmt.query_map(params![worker, fmt_ts(until), fmt_ts(now), limit], task_from_row).map_err(internal)?;
            let mut tasks = collect(rows)?;
            tasks.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)));
            Ok(tasks)
        })
        .await
    }

    async fn heartbeat(&self, worker: &WorkerId, ids: &[TaskId], lease: Duration) -> StoreResult<Vec<TaskId>> {
        let worker = worker.0.clone();
        let ids = ids.to_vec();
        self.call(move |conn| {
            let now = Utc::now();
            let until = fmt_ts(now + chrono::Duration::microseconds(lease.as_micros() as i64));
            let tx = conn.transaction().map_err(internal)?;
            let mut renewed = Vec::with_capacity(ids.len());
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE tasks SET locked_until = ?1 \
                         WHERE id = ?2 AND status = 'running' AND locked_by = ?3",
                    )
                    .map_err(internal)?;
                for id in &ids {
                    if stmt.execute(params![until, id.to_string(), worker]).map_err(internal)? == 1 {
                        renewed.push(*id);
                    }
                }
            }
            tx.commit().map_err(internal)?;
            Ok(renewed)
        })
        .await
    }

    async fn finish(&self, worker: &WorkerId, outcomes: &[Outcome]) -> StoreResult<Vec<TaskId>> {
        let worker = worker.0.clone();
        let outcomes = outcomes.to_vec();
        self.call(move |conn| {
            let now = fmt_ts(Utc::now());
            let tx = conn.transaction().map_err(internal)?;
            let mut applied = Vec::with_capacity(outcomes.len());
            {
                const FENCE: &str = "id = ?1 AND status = 'running' AND locked_by = ?2 AND attempts = ?3";
                let mut done = tx
                    .prepare_cached(&format!(
                        "UPDATE tasks SET status = 'completed', result = ?4, finished_at = ?5, updated_at = ?5, \
                         locked_by = NULL, locked_until = NULL WHERE {FENCE}"
                    ))
                    .map_err(internal)?;
                let mut retry = tx
                    .prepare_cached(&format!(
                        "UPDATE tasks SET status = 'queued', last_error = ?4, run_at = ?6, updated_at = ?5, \
                         locked_by = NULL, locked_until = NULL WHERE {FENCE}"
                    ))
                    .map_err(internal)?;
                let mut failed = tx
                    .prepare_cached(&format!(
                        "UPDATE tasks SET status = 'failed', last_error = ?4, finished_at = ?5, updated_at = ?5, \
                         locked_by = NULL, locked_until = NULL WHERE {FENCE}"
                    ))
                    .map_err(internal)?;
                for o in &outcomes {
                    let id = o.id.to_string();
                    let n = match &o.finish {
                        Finish::Completed { result } => {
                            done.execute(params![id, worker, o.attempt, result.to_string(), now])
                        }
                        Finish::Retry { error, run_at } => {
                            retry.execute(params![id, worker, o.attempt, error, now, fmt_ts(*run_at)])
                        }
                        Finish::Failed { error } => failed.execute(params![id, worker, o.attempt, error, now]),
                    }
                    .map_err(internal)?;
                    if n == 1 {
                        applied.push(o.id);
                    }
                }
            }
            tx.commit().map_err(internal)?;
            Ok(applied)
        })
        .await
    }

    async fn release(&self, worker: &WorkerId, ids: &[TaskId]) -> StoreResult<u64> {
        let worker = worker.0.clone();
        let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        self.call(move |conn| {
            let now = fmt_ts(Utc::now());
            let tx = conn.transaction().map_err(internal)?;
            let mut n = 0;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE tasks SET status = 'queued', attempts = attempts - 1, \
                         updated_at = ?3, locked_by = NULL, locked_until = NULL, started_at = NULL \
                         WHERE id = ?1 AND status = 'running' AND locked_by = ?2",
                    )
                    .map_err(internal)?;
                for id in &ids {
                    n += stmt.execute(params![id, worker, now]).map_err(internal)? as u64;
                }
            }
            tx.commit().map_err(internal)?;
            Ok(n)
        })
        .await
    }

    async fn cancel(&self, id: TaskId) -> StoreResult<Task> {
        self.call(move |conn| {
            let now = fmt_ts(Utc::now());
            let cancelled = conn
                .prepare_cached(&format!(
                    "UPDATE tasks SET status = 'cancelled', finished_at = ?2, updated_at = ?2, \
                       last_error = CASE WHEN status = 'running' THEN 'cancelled while running' ELSE last_error END, \
                       locked_by = NULL, locked_until = NULL \
                     WHERE id = ?1 AND status IN ('queued', 'running') RETURNING {COLUMNS}"
                ))
                .map_err(internal)?
                .query_row(params![id.to_string(), now], task_from_row)
                .optional()
                .map_err(internal)?;
            match cancelled {
                Some(t) => Ok(t),
                None => match get_task(conn, id)? {
                    None => Err(StoreError::NotFound),
                    Some(t) => Err(StoreError::WrongState { status: t.status }),
                },
            }
        })
        .await
    }

    async fn get(&self, id: TaskId) -> StoreResult<Option<Task>> {
        self.call(move |conn| get_task(conn, id)).await
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        let f = filter.clone();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM tasks \
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR type = ?2) AND (?3 IS NULL OR queue = ?3) \
                     ORDER BY created_at DESC, id DESC LIMIT ?4 OFFSET ?5"
                ))
                .map_err(internal)?;
            let rows = stmt
                .query_map(
                    params![f.status.map(TaskStatus::as_str), f.task_type, f.queue, f.limit as i64, f.offset as i64],
                    task_from_row,
                )
                .map_err(internal)?;
            collect(rows)
        })
        .await
    }

    async fn rescue_expired(&self) -> StoreResult<u64> {
        self.call(move |conn| {
            let now = fmt_ts(Utc::now());
            conn.prepare_cached(
                "UPDATE tasks SET \
                   status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
                   finished_at = CASE WHEN attempts >= max_attempts THEN ?1 ELSE NULL END, \
                   last_error = 'lease expired while running on ' || coalesce(locked_by, 'an unknown worker'), \
                   locked_by = NULL, locked_until = NULL, updated_at = ?1 \
                 WHERE status = 'running' AND locked_until < ?1",
            )
            .map_err(internal)?
            .execute([now])
            .map(|n| n as u64)
            .map_err(internal)
        })
        .await
    }

    async fn next_scheduled(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.call(move |conn| {
            let now = fmt_ts(Utc::now());
            let next: Option<String> = conn
                .prepare_cached("SELECT min(run_at) FROM tasks WHERE status = 'queued' AND run_at > ?1")
                .map_err(internal)?
                .query_row([now], |r| r.get(0))
                .map_err(internal)?;
            next.map(|s| parse_ts(&s).map_err(StoreError::Internal)).transpose()
        })
        .await
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(TaskStatus, u64)>> {
        self.call(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT status, count(*) FROM tasks GROUP BY status").map_err(internal)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(internal)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(internal)?;
            rows.into_iter().map(|(s, n)| Ok((s.parse().map_err(StoreError::Internal)?, n as u64))).collect()
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.call(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(internal)).await
    }
}
