//! Tasks on SQLite: the task codec (the one column list of `tasks` in this dialect, used to
//! insert and to read rows) and the task store's operations.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{conversion, micros, queues, sql_err, time_from_sql, SqliteStore};
use crate::lease::Held;
use crate::queue::QueueSettings;
use crate::store::error::{CancelError, EnqueueError, RetryError, StoreError, StoreResult};
use crate::store::queues::limited_scan;
use crate::store::tasks::RETRY_RESET;
use crate::store::tasks::{
    backoff_params, AttemptEnd, AttemptStore, ClaimParams, Count, Finish, IntakeStore, LeadParams, LeaseState,
    MaintenanceStore, MinuteCounts, OperatorStore, Overview, RenewParams, Rescued, TaskReads,
};
use crate::task::{NewTask, RetryPolicy, Task, TaskFilter, TaskId, TaskStatus, WorkerId};
use crate::workflow::{ParentOutcome, Parents};

crate::store::tasks::task_columns! {
    prefix = "";
    Id => "id", Type => "type", Payload => "payload", Status => "status", Queue => "queue",
    Priority => "priority", RunAt => "run_at", Attempts => "attempts", MaxAttempts => "max_attempts",
    TimeoutSeconds => "timeout_seconds", IdempotencyKey => "idempotency_key", TraceId => "trace_id",
    LockedBy => "locked_by", LockedUntil => "locked_until", Result => "result", LastError => "last_error",
    CreatedAt => "created_at", UpdatedAt => "updated_at", StartedAt => "started_at",
    FinishedAt => "finished_at", CwomIssueId => "cwom_issue_id", ScheduleName => "schedule_name",
    ScheduledFor => "scheduled_for", ConcurrencyKey => "concurrency_key", WorkflowId => "workflow_id",
    StepKey => "step_key", OnParentFailure => "on_parent_failure", PendingParents => "pending_parents",
    Limited => "limited",
}

impl Col {
    fn name(self) -> &'static str {
        NAMES[self as usize]
    }
}

/// The columns an enqueue writes; the table's defaults fill the rest.
const INSERTED: [Col; 16] = [
    Col::Id,
    Col::Type,
    Col::Payload,
    Col::Queue,
    Col::Priority,
    Col::RunAt,
    Col::MaxAttempts,
    Col::TimeoutSeconds,
    Col::IdempotencyKey,
    Col::TraceId,
    Col::CreatedAt,
    Col::UpdatedAt,
    Col::CwomIssueId,
    Col::ScheduleName,
    Col::ScheduledFor,
    Col::ConcurrencyKey,
];

/// What one claim asks of a limited queue.
struct LimitedClaim<'a> {
    queue: &'a str,
    settings: QueueSettings,
    want: usize,
    /// The claim's types, as a JSON array.
    types: &'a str,
    worker: &'a str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
}

/// Claims what the queue's limits allow, inside the caller's immediate transaction.
fn claim_limited(conn: &Connection, c: &LimitedClaim) -> StoreResult<Vec<Task>> {
    let s = c.settings;
    let now = micros(c.now);
    let mut running_by_key: HashMap<Option<String>, i64> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT concurrency_key, count(*) FROM tasks WHERE status = 'running' AND queue = ?1 GROUP BY 1",
            )
            .map_err(sql_err)?;
        let rows = stmt.query_map(params![c.queue], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_err)?;
        for row in rows {
            let (k, n) = row.map_err(sql_err)?;
            running_by_key.insert(k, n);
        }
    }
    let running: i64 = running_by_key.values().sum();
    let mut room = c.want as i64;
    if let Some(limit) = s.concurrency {
        room = room.min(limit - running);
    }
    let mut log: Vec<i64> = Vec::new();
    if let Some(rate) = s.rate {
        let raw: String = conn
            .query_row("SELECT rate_log FROM queues WHERE name = ?1", params![c.queue], |r| r.get(0))
            .map_err(sql_err)?;
        let window = (rate.per_s * 1e6) as i64;
        log = serde_json::from_str::<Vec<i64>>(&raw)
            .map_err(|e| StoreError::internal(format!("queue {:?}: unreadable rate_log: {e}", c.queue)))?;
        log.retain(|&at| at > now - window);
        room = room.min(rate.limit - log.len() as i64);
    }
    if room <= 0 {
        return Ok(Vec::new());
    }
    let mut chosen: Vec<String> = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, concurrency_key FROM tasks WHERE status = 'queued' AND queue = ?1 AND run_at <= ?2 \
                 AND type IN (SELECT value FROM json_each(?3)) ORDER BY priority DESC, run_at, id LIMIT ?4",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(params![c.queue, now, c.types, limited_scan(c.want)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(sql_err)?;
        for row in rows {
            let (id, key) = row.map_err(sql_err)?;
            if let Some(limit) = s.key_concurrency.filter(|_| key.is_some()) {
                let n = running_by_key.entry(key).or_insert(0);
                if *n >= limit {
                    continue;
                }
                *n += 1;
            }
            chosen.push(id);
            if chosen.len() as i64 >= room {
                break;
            }
        }
    }
    let mut claimed = Vec::with_capacity(chosen.len());
    {
        let mut stmt = conn
            .prepare_cached(&format!(
                "UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = ?2, locked_until = ?3, \
                 started_at = ?4, updated_at = ?4, limited = 1 WHERE id = ?1 AND status = 'queued' RETURNING {COLUMNS}"
            ))
            .map_err(sql_err)?;
        for id in &chosen {
            let row = stmt
                .query_row(params![id, c.worker, micros(c.until), now], task_from_row)
                .optional()
                .map_err(sql_err)?;
            claimed.extend(row);
        }
    }
    if let Some(rate) = s.rate {
        log.extend(std::iter::repeat_n(now, claimed.len()));
        let keep = log.len().saturating_sub(rate.limit as usize);
        let log = serde_json::to_string(&log[keep..]).expect("integers serialise");
        conn.execute("UPDATE queues SET rate_log = ?2 WHERE name = ?1", params![c.queue, log]).map_err(sql_err)?;
    }
    Ok(claimed)
}

/// How every claim marks its tasks: `?1` the worker, leased until `?2`, at `?3`.
macro_rules! claim_update {
    () => {
        "UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = ?1, \
         locked_until = ?2, started_at = ?3, updated_at = ?3 "
    };
}

/// Claims up to ?4 due tasks of the types ?5 (in the queues ?6, or any when NULL), when no
/// queue is paused or limited.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{update}WHERE id IN (SELECT id FROM tasks WHERE status = 'queued' AND run_at <= ?3 \
                        AND type IN (SELECT value FROM json_each(?5)) \
                        AND (?6 IS NULL OR queue IN (SELECT value FROM json_each(?6))) \
                      ORDER BY priority DESC, run_at, id LIMIT ?4) \
         RETURNING {COLUMNS}",
        update = claim_update!(),
    )
});

/// [`CLAIM`] while some queue is controlled: from the queues with work that are not (a loose
/// scan of `tasks_queue_claim_idx`), never through a controlled queue's backlog.
static CLAIM_AROUND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH RECURSIVE queued(q) AS ( \
           SELECT min(queue) FROM tasks WHERE status = 'queued' \
           UNION ALL \
           SELECT (SELECT min(queue) FROM tasks WHERE status = 'queued' AND queue > q) FROM queued \
           WHERE q IS NOT NULL), \
         open(q) AS (SELECT q FROM queued WHERE q IS NOT NULL AND q NOT IN ({controlled})) \
         {update}WHERE id IN (SELECT id FROM tasks WHERE status = 'queued' AND queue IN (SELECT q FROM open) \
                        AND run_at <= ?3 AND type IN (SELECT value FROM json_each(?5)) \
                        AND (?6 IS NULL OR queue IN (SELECT value FROM json_each(?6))) \
                      ORDER BY priority DESC, run_at, id LIMIT ?4) \
         RETURNING {COLUMNS}",
        controlled = queues::CONTROLLED,
        update = claim_update!(),
    )
});

/// Inserts one task; a used idempotency key makes it insert nothing.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = INSERTED.iter().map(|c| c.name()).collect();
    let marks: Vec<String> = (1..=INSERTED.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO tasks ({}) VALUES ({}) ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        names.join(", "),
        marks.join(", ")
    )
});

/// One task's values for [`INSERT`], encoded as the file stores them (times as
/// microseconds).
struct InsertRow<'a> {
    task: &'a NewTask,
    id: String,
    payload: String,
    run_at: i64,
    now: i64,
    scheduled_for: Option<i64>,
}

impl<'a> InsertRow<'a> {
    fn new(task: &'a NewTask, now: i64) -> Self {
        InsertRow {
            task,
            id: task.id.to_string(),
            payload: task.payload.to_string(),
            run_at: task.run_at.map(micros).unwrap_or(now),
            now,
            scheduled_for: task.scheduled_for.map(micros),
        }
    }

    fn value(&self, col: Col) -> &dyn rusqlite::ToSql {
        let t = self.task;
        match col {
            Col::Id => &self.id,
            Col::Type => &t.task_type,
            Col::Payload => &self.payload,
            Col::Queue => &t.queue,
            Col::Priority => &t.priority,
            Col::RunAt => &self.run_at,
            Col::MaxAttempts => &t.max_attempts,
            Col::TimeoutSeconds => &t.timeout_seconds,
            Col::IdempotencyKey => &t.idempotency_key,
            Col::TraceId => &t.trace_id,
            Col::CreatedAt | Col::UpdatedAt => &self.now,
            Col::CwomIssueId => &t.cwom_issue_id,
            Col::ScheduleName => &t.schedule_name,
            Col::ScheduledFor => &self.scheduled_for,
            Col::ConcurrencyKey => &t.concurrency_key,
            other => unreachable!("{other:?} is not inserted"),
        }
    }

    fn params(&self) -> [&dyn rusqlite::ToSql; INSERTED.len()] {
        INSERTED.map(|c| self.value(c))
    }
}

/// Inserts a workflow's step: [`INSERT`]'s columns, then its status, key,
/// `on_parent_failure`, pending parent count and workflow.
static INSERT_STEP: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = INSERTED.iter().map(|c| c.name()).collect();
    let marks: Vec<String> = (1..=INSERTED.len() + 5).map(|i| format!("?{i}")).collect();
    let placed = [Col::Status, Col::StepKey, Col::OnParentFailure, Col::PendingParents, Col::WorkflowId].map(Col::name);
    format!("INSERT INTO tasks ({}, {}) VALUES ({})", names.join(", "), placed.join(", "), marks.join(", "))
});

/// How a step is placed in its workflow, for [`insert_step`].
pub(super) struct Placement<'a> {
    pub status: &'a str,
    pub key: &'a str,
    pub on_parent_failure: &'a str,
    pub pending_parents: i64,
    pub workflow_id: &'a str,
}

/// Inserts one workflow step inside the caller's transaction.
pub(super) fn insert_step(conn: &Connection, task: &NewTask, now: i64, at: &Placement) -> StoreResult<()> {
    let row = InsertRow::new(task, now);
    let mut values: Vec<&dyn rusqlite::ToSql> = row.params().to_vec();
    values.extend_from_slice(&[&at.status, &at.key, &at.on_parent_failure, &at.pending_parents, &at.workflow_id]);
    conn.prepare_cached(&INSERT_STEP).map_err(sql_err)?.execute(values.as_slice()).map_err(sql_err)?;
    Ok(())
}

/// Inserts one task inside the caller's transaction (a schedule's fire).
pub(super) fn insert_task(conn: &Connection, task: &NewTask, now: i64) -> StoreResult<()> {
    conn.prepare_cached(&INSERT).map_err(sql_err)?.execute(InsertRow::new(task, now).params()).map_err(sql_err)?;
    Ok(())
}

fn ts_col(row: &Row, col: Col) -> rusqlite::Result<DateTime<Utc>> {
    time_from_sql(row.get_ref(col as usize)?).map_err(|m| conversion(col as usize, m))
}

fn opt_ts_col(row: &Row, col: Col) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get_ref(col as usize)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        v => time_from_sql(v).map(Some).map_err(|m| conversion(col as usize, m)),
    }
}

fn json_col(row: &Row, col: Col) -> rusqlite::Result<Option<serde_json::Value>> {
    let s: Option<String> = row.get(col as usize)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| conversion(col as usize, e.to_string()))).transpose()
}

/// Reads a row selected with [`COLUMNS`].
/// A finished task, and whether its attempt was claimed under a queue's limit.
fn ended_from_row(row: &Row) -> rusqlite::Result<(Task, bool)> {
    let limited: Option<bool> = row.get(Col::Limited as usize)?;
    Ok((task_from_row(row)?, limited.unwrap_or(false)))
}

pub(super) fn task_from_row(row: &Row) -> rusqlite::Result<Task> {
    let get = |col: Col| col as usize;
    let id: String = row.get(get(Col::Id))?;
    let id: TaskId = id.parse().map_err(|e: uuid::Error| conversion(get(Col::Id), e.to_string()))?;
    let status: String = row.get(get(Col::Status))?;
    Ok(Task {
        id,
        task_id: id,
        task_type: row.get(get(Col::Type))?,
        payload: json_col(row, Col::Payload)?.unwrap_or_default(),
        status: status.parse().map_err(|m| conversion(get(Col::Status), m))?,
        queue: row.get(get(Col::Queue))?,
        priority: row.get(get(Col::Priority))?,
        run_at: ts_col(row, Col::RunAt)?,
        attempts: row.get(get(Col::Attempts))?,
        max_attempts: row.get(get(Col::MaxAttempts))?,
        timeout_seconds: row.get(get(Col::TimeoutSeconds))?,
        idempotency_key: row.get(get(Col::IdempotencyKey))?,
        trace_id: row.get(get(Col::TraceId))?,
        locked_by: row.get(get(Col::LockedBy))?,
        locked_until: opt_ts_col(row, Col::LockedUntil)?,
        result: json_col(row, Col::Result)?,
        last_error: row.get(get(Col::LastError))?,
        created_at: ts_col(row, Col::CreatedAt)?,
        updated_at: ts_col(row, Col::UpdatedAt)?,
        started_at: opt_ts_col(row, Col::StartedAt)?,
        finished_at: opt_ts_col(row, Col::FinishedAt)?,
        cwom_issue_id: row.get(get(Col::CwomIssueId))?,
        schedule_name: row.get(get(Col::ScheduleName))?,
        scheduled_for: opt_ts_col(row, Col::ScheduledFor)?,
        concurrency_key: row.get(get(Col::ConcurrencyKey))?,
        workflow_id: row
            .get::<_, Option<String>>(get(Col::WorkflowId))?
            .map(|raw| parse(get(Col::WorkflowId), &raw))
            .transpose()?,
        step_key: row.get(get(Col::StepKey))?,
        parents: None,
    })
}

fn collect(rows: rusqlite::MappedRows<'_, impl FnMut(&Row) -> rusqlite::Result<Task>>) -> StoreResult<Vec<Task>> {
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
}

/// The task that holds an idempotency key.
fn holder_of(conn: &Connection, key: &Option<String>) -> StoreResult<TaskId> {
    let id: String =
        conn.query_row("SELECT id FROM tasks WHERE idempotency_key = ?1", [key], |r| r.get(0)).map_err(sql_err)?;
    id.parse().map_err(|e: uuid::Error| StoreError::internal(format!("unreadable task id {id:?}")).caused_by(e))
}

/// A filtered, newest-first read of `select`: only the filter's conditions are in the
/// statement, so SQLite's planner picks `tasks_status_idx` for a status.
fn filtered(select: &str, filter: &TaskFilter, with_offset: bool) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<V> = Vec::new();
    let mut add = |sql: &str, value: V| {
        params.push(value);
        conditions.push(format!("{sql} ?{}", params.len()));
    };
    if let Some(status) = filter.status {
        add("status =", V::Text(status.as_str().into()));
    }
    if let Some(t) = &filter.task_type {
        add("type =", V::Text(t.clone()));
    }
    if let Some(q) = &filter.queue {
        add("queue =", V::Text(q.clone()));
    }
    if let Some(i) = &filter.cwom_issue_id {
        add("cwom_issue_id =", V::Text(i.clone()));
    }
    if let Some(s) = &filter.schedule_name {
        add("schedule_name =", V::Text(s.clone()));
    }
    if let Some(before) = filter.before {
        add("id <", V::Text(before.to_string()));
    }
    let mut sql = format!("SELECT {select} FROM tasks");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    params.push(V::Integer(filter.limit as i64));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", params.len()));
    if with_offset && filter.offset > 0 {
        params.push(V::Integer(filter.offset.min(i64::MAX as u64) as i64));
        sql.push_str(&format!(" OFFSET ?{}", params.len()));
    }
    (sql, params)
}

/// `ids` as the JSON array `json_each` reads (SQLite has no array parameter).
fn id_array(ids: &[TaskId]) -> String {
    serde_json::to_string(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

fn parse_ids(raw: Vec<String>) -> StoreResult<Vec<TaskId>> {
    raw.into_iter()
        .map(|id| {
            id.parse().map_err(|e: uuid::Error| StoreError::internal(format!("unreadable task id {id:?}")).caused_by(e))
        })
        .collect()
}

fn get_task(conn: &Connection, id: TaskId) -> StoreResult<Option<Task>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))
        .map_err(sql_err)?
        .query_row([id.to_string()], task_from_row)
        .optional()
        .map_err(sql_err)
}

#[async_trait]
impl IntakeStore for SqliteStore {
    async fn enqueue(&self, task: NewTask) -> Result<Task, EnqueueError> {
        self.call(move |conn| {
            let row = InsertRow::new(&task, micros(Utc::now()));
            let inserted = conn
                .prepare_cached(&format!("{} RETURNING {COLUMNS}", *INSERT))
                .map_err(sql_err)?
                .query_row(row.params(), task_from_row)
                .optional()
                .map_err(sql_err)?;
            match inserted {
                Some(t) => Ok(Ok(t)),
                None => Ok(Err(EnqueueError::Duplicate { existing: holder_of(conn, &task.idempotency_key)? })),
            }
        })
        .await?
    }

    async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, EnqueueError> {
        self.call(move |conn| {
            let now = micros(Utc::now());
            let tx = conn.transaction().map_err(sql_err)?;
            {
                let mut stmt = tx.prepare_cached(&INSERT).map_err(sql_err)?;
                for t in &tasks {
                    if stmt.execute(InsertRow::new(t, now).params()).map_err(sql_err)? == 0 {
                        // Dropping the transaction rolls the whole batch back.
                        return Ok(Err(EnqueueError::Duplicate { existing: holder_of(&tx, &t.idempotency_key)? }));
                    }
                }
            }
            tx.commit().map_err(sql_err)?;
            Ok(Ok(tasks.iter().map(|t| t.id).collect()))
        })
        .await?
    }
}

/// Writes one attempt's end, fenced, inside the caller's transaction; answers the row as it
/// now is and whether its attempt was claimed under a queue's limit, or `None` when the fence
/// no longer matched.
pub(super) fn write_end(conn: &Connection, end: &AttemptEnd, now: i64) -> StoreResult<Option<(Task, bool)>> {
    const FENCE: &str = "id = ?1 AND status = 'running' AND locked_by = ?2 AND attempts = ?3";
    static DONE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE tasks SET status = 'completed', result = ?4, finished_at = ?5, updated_at = ?5, \
             locked_by = NULL, locked_until = NULL WHERE {FENCE} RETURNING {COLUMNS}"
        )
    });
    static RETRY: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE tasks SET status = 'queued', last_error = ?4, run_at = ?6, updated_at = ?5, \
             locked_by = NULL, locked_until = NULL WHERE {FENCE} RETURNING {COLUMNS}"
        )
    });
    static FAILED: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE tasks SET status = 'failed', last_error = ?4, finished_at = ?5, updated_at = ?5, \
             locked_by = NULL, locked_until = NULL WHERE {FENCE} RETURNING {COLUMNS}"
        )
    });
    let (id, worker, attempt) = (end.held.id.to_string(), &end.held.token.worker.0, end.held.token.attempt);
    let row = match &end.finish {
        Finish::Completed { result } => conn
            .prepare_cached(&DONE)
            .map_err(sql_err)?
            .query_row(params![id, worker, attempt, result.to_string(), now], ended_from_row),
        Finish::Retry { error, run_at } => conn
            .prepare_cached(&RETRY)
            .map_err(sql_err)?
            .query_row(params![id, worker, attempt, error, now, micros(*run_at)], ended_from_row),
        Finish::Failed { error } => conn
            .prepare_cached(&FAILED)
            .map_err(sql_err)?
            .query_row(params![id, worker, attempt, error, now], ended_from_row),
    };
    row.optional().map_err(sql_err)
}

impl SqliteStore {
    /// Writes attempt ends in one transaction; answers the rows that applied, as they now are.
    async fn finish_rows(&self, ends: Vec<AttemptEnd>) -> StoreResult<Vec<Task>> {
        self.call(move |conn| {
            let now = micros(Utc::now());
            let tx = conn.transaction().map_err(sql_err)?;
            let mut applied = Vec::with_capacity(ends.len());
            for end in &ends {
                applied.extend(write_end(&tx, end, now)?);
            }
            tx.commit().map_err(sql_err)?;
            Ok(applied)
        })
        .await
        .map(|applied: Vec<(Task, bool)>| {
            // An attempt claimed under a queue's limit freed its slot, and a step's end may
            // have queued its dependants (the V11 trigger): the claimers must hear.
            self.slots_freed(applied.iter().any(|(task, limited)| *limited || task.workflow_id.is_some()));
            applied.into_iter().map(|(task, _)| task).collect()
        })
    }
}

/// Reads a column's text as a `T`.
pub(super) fn parse<T: std::str::FromStr>(idx: usize, raw: &str) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|e: T::Err| conversion(idx, e.to_string()))
}

/// Fills in `parents` of the claimed steps among `tasks`, with one read for all of them,
/// inside the claim's transaction.
fn attach_parents(conn: &Connection, tasks: &mut [Task]) -> StoreResult<()> {
    let steps: Vec<String> = tasks.iter().filter(|t| t.workflow_id.is_some()).map(|t| t.id.to_string()).collect();
    if steps.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT d.task_id, p.step_key, p.id, p.status, p.result, p.last_error \
             FROM task_dependencies d JOIN tasks p ON p.id = d.parent_id \
             WHERE d.task_id IN (SELECT value FROM json_each(?1))",
        )
        .map_err(sql_err)?;
    let mut by_step: std::collections::HashMap<TaskId, Parents> = std::collections::HashMap::new();
    let rows = stmt
        .query_map([serde_json::Value::from(steps).to_string()], |r| {
            let step: TaskId = parse(0, &r.get::<_, String>(0)?)?;
            let key: Option<String> = r.get(1)?;
            let id: TaskId = parse(2, &r.get::<_, String>(2)?)?;
            let status: TaskStatus = parse(3, &r.get::<_, String>(3)?)?;
            let result = r
                .get::<_, Option<String>>(4)?
                .map(|s| serde_json::from_str(&s).map_err(|e| conversion(4, e.to_string())))
                .transpose()?;
            Ok((step, key.unwrap_or_default(), ParentOutcome::new(id, status, result, r.get(5)?)))
        })
        .map_err(sql_err)?;
    for row in rows {
        let (step, key, outcome) = row.map_err(sql_err)?;
        by_step.entry(step).or_default().insert(key, outcome);
    }
    for t in tasks.iter_mut().filter(|t| t.workflow_id.is_some()) {
        t.parents = Some(by_step.remove(&t.id).unwrap_or_default());
    }
    Ok(())
}

#[async_trait]
impl AttemptStore for SqliteStore {
    async fn claim(&self, params: &ClaimParams) -> StoreResult<Vec<Task>> {
        let worker = params.worker.0.clone();
        let limit = params.limit as i64;
        let lease = params.lease.as_secs_f64();
        // JSON arrays, read in SQL with json_each (SQLite has no array parameters).
        let types = serde_json::to_string(&params.types).expect("strings serialise");
        let asked = params.queues.clone();
        let queues = asked.as_ref().map(|q| serde_json::to_string(q).expect("strings serialise"));
        // One immediate transaction: limited queues first (each within its limits, see
        // `queues.rs`), then every queue without a control.
        let mut tasks = self
            .call(move |conn| {
                let now = Utc::now();
                let until = now + chrono::Duration::microseconds((lease * 1e6) as i64);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
                let controlled = queues::controlled_queues(&tx)?;
                let mut tasks = Vec::new();
                for (queue, settings) in &controlled {
                    let want = limit as usize - tasks.len();
                    let wanted = asked.as_ref().is_none_or(|qs| qs.contains(queue));
                    if want > 0 && wanted && !settings.paused && settings.limited() {
                        let settings = *settings;
                        let claim = LimitedClaim { queue, settings, want, types: &types, worker: &worker, now, until };
                        tasks.extend(claim_limited(&tx, &claim)?);
                    }
                }
                let rest = limit - tasks.len() as i64;
                if rest > 0 {
                    let around = !controlled.is_empty();
                    let mut stmt = tx
                        .prepare_cached(if around { CLAIM_AROUND.as_str() } else { CLAIM.as_str() })
                        .map_err(sql_err)?;
                    let rows = stmt
                        .query_map(params![worker, micros(until), micros(now), rest, types, queues], task_from_row)
                        .map_err(sql_err)?;
                    tasks.extend(collect(rows)?);
                }
                // Only a claim that took workflow steps reads more.
                attach_parents(&tx, &mut tasks)?;
                tx.commit().map_err(sql_err)?;
                tasks.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)));
                Ok(tasks)
            })
            .await?;
        let unresolved = crate::store::tasks::resolve_claimed(&mut tasks);
        if !unresolved.is_empty() {
            self.finish(&unresolved).await?;
        }
        Ok(tasks)
    }

    async fn renew(&self, params: RenewParams<'_>) -> StoreResult<Vec<LeaseState>> {
        let attempts = params.attempts.to_vec();
        let lease = params.lease;
        self.call(move |conn| {
            let until = Utc::now() + chrono::Duration::microseconds(lease.as_micros() as i64);
            let tx = conn.transaction().map_err(sql_err)?;
            let mut states = Vec::with_capacity(attempts.len());
            {
                let mut renew = tx
                    .prepare_cached(
                        "UPDATE tasks SET locked_until = ?1 \
                         WHERE id = ?2 AND status = 'running' AND locked_by = ?3 AND attempts = ?4",
                    )
                    .map_err(sql_err)?;
                let mut cancelled = tx
                    .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1 AND status = 'cancelled' AND attempts = ?2")
                    .map_err(sql_err)?;
                for h in &attempts {
                    let id = h.id.to_string();
                    let n = renew
                        .execute(params![micros(until), id, h.token.worker.0, h.token.attempt])
                        .map_err(sql_err)?;
                    states.push(if n == 1 {
                        LeaseState::Held { until }
                    } else if cancelled
                        .query_row(params![id, h.token.attempt], |_| Ok(()))
                        .optional()
                        .map_err(sql_err)?
                        .is_some()
                    {
                        LeaseState::Cancelled
                    } else {
                        LeaseState::Lost
                    });
                }
            }
            tx.commit().map_err(sql_err)?;
            Ok(states)
        })
        .await
    }

    async fn finish(&self, ends: &[AttemptEnd]) -> StoreResult<Vec<TaskId>> {
        Ok(self.finish_rows(ends.to_vec()).await?.into_iter().map(|t| t.id).collect())
    }

    async fn finish_reporting(&self, end: &AttemptEnd) -> StoreResult<Option<Task>> {
        Ok(self.finish_rows(vec![end.clone()]).await?.pop())
    }

    async fn release(&self, attempts: &[Held]) -> StoreResult<Vec<TaskId>> {
        let attempts = attempts.to_vec();
        self.call(move |conn| {
            let now = micros(Utc::now());
            let tx = conn.transaction().map_err(sql_err)?;
            let mut released = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE tasks SET status = 'queued', attempts = attempts - 1, \
                         updated_at = ?4, locked_by = NULL, locked_until = NULL, started_at = NULL \
                         WHERE id = ?1 AND status = 'running' AND locked_by = ?2 AND attempts = ?3",
                    )
                    .map_err(sql_err)?;
                for h in &attempts {
                    let n = stmt
                        .execute(params![h.id.to_string(), h.token.worker.0, h.token.attempt, now])
                        .map_err(sql_err)?;
                    if n == 1 {
                        released.push(h.id);
                    }
                }
            }
            tx.commit().map_err(sql_err)?;
            Ok(released)
        })
        .await
    }

    async fn holds(&self, attempt: &Held) -> StoreResult<bool> {
        let (id, worker, n) = (attempt.id.to_string(), attempt.token.worker.0.clone(), attempt.token.attempt);
        self.call(move |conn| {
            conn.prepare_cached(
                "SELECT 1 FROM tasks WHERE id = ?1 AND status = 'running' AND locked_by = ?2 AND attempts = ?3",
            )
            .map_err(sql_err)?
            .query_row(params![id, worker, n], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(sql_err)
        })
        .await
    }

    async fn running_count(&self, worker: &WorkerId) -> StoreResult<u64> {
        let worker = worker.0.clone();
        self.call(move |conn| {
            conn.prepare_cached("SELECT count(*) FROM tasks WHERE status = 'running' AND locked_by = ?1")
                .map_err(sql_err)?
                .query_row([worker], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(sql_err)
        })
        .await
    }
}

#[async_trait]
impl OperatorStore for SqliteStore {
    async fn cancel(&self, id: TaskId) -> Result<Task, CancelError> {
        self.call(move |conn| {
            let now = micros(Utc::now());
            let cancelled = conn
                .prepare_cached(&format!(
                    "UPDATE tasks SET status = 'cancelled', finished_at = ?2, updated_at = ?2, \
                       last_error = CASE WHEN status = 'running' THEN 'cancelled while running' ELSE last_error END, \
                       locked_by = NULL, locked_until = NULL \
                     WHERE id = ?1 AND status IN ('waiting', 'queued', 'running') RETURNING {COLUMNS}"
                ))
                .map_err(sql_err)?
                .query_row(params![id.to_string(), now], task_from_row)
                .optional()
                .map_err(sql_err)?;
            Ok(match cancelled {
                Some(t) => Ok(t),
                None => match get_task(conn, id)? {
                    None => Err(CancelError::NotFound(id)),
                    Some(t) => Err(CancelError::NotCancellable { id, status: t.status }),
                },
            })
        })
        .await?
    }

    async fn cancel_many(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskId>> {
        let ids = id_array(ids);
        self.call(move |conn| {
            let now = micros(Utc::now());
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE tasks SET status = 'cancelled', finished_at = ?2, updated_at = ?2, \
                       last_error = CASE WHEN status = 'running' THEN 'cancelled while running' ELSE last_error END, \
                       locked_by = NULL, locked_until = NULL \
                     WHERE id IN (SELECT value FROM json_each(?1)) AND status IN ('waiting', 'queued', 'running') RETURNING id",
                )
                .map_err(sql_err)?;
            let rows = stmt.query_map(params![ids, now], |r| r.get::<_, String>(0)).map_err(sql_err)?;
            parse_ids(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)?)
        })
        .await
    }

    async fn retry(&self, id: TaskId) -> Result<Task, RetryError> {
        self.call(move |conn| {
            let now = micros(Utc::now());
            let retried = conn
                .prepare_cached(&format!(
                    "UPDATE tasks SET {RETRY_RESET}, attempts = 0, run_at = ?2, updated_at = ?2, \
                       finished_at = NULL, started_at = NULL, locked_by = NULL, locked_until = NULL \
                     WHERE id = ?1 AND status IN ('failed', 'cancelled') RETURNING {COLUMNS}"
                ))
                .map_err(sql_err)?
                .query_row(params![id.to_string(), now], task_from_row)
                .optional()
                .map_err(sql_err)?;
            Ok(match retried {
                Some(t) => Ok(t),
                None => match get_task(conn, id)? {
                    None => Err(RetryError::NotFound(id)),
                    Some(t) => Err(RetryError::NotRetryable { id, status: t.status }),
                },
            })
        })
        .await?
    }

    async fn retry_many(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskId>> {
        let ids = id_array(ids);
        self.call(move |conn| {
            let now = micros(Utc::now());
            let mut stmt = conn
                .prepare_cached(&format!(
                    "UPDATE tasks SET {RETRY_RESET}, attempts = 0, run_at = ?2, updated_at = ?2, \
                       finished_at = NULL, started_at = NULL, locked_by = NULL, locked_until = NULL \
                     WHERE id IN (SELECT value FROM json_each(?1)) AND status IN ('failed', 'cancelled') RETURNING id"
                ))
                .map_err(sql_err)?;
            let rows = stmt.query_map(params![ids, now], |r| r.get::<_, String>(0)).map_err(sql_err)?;
            parse_ids(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)?)
        })
        .await
    }
}

#[async_trait]
impl TaskReads for SqliteStore {
    async fn get(&self, id: TaskId) -> StoreResult<Option<Task>> {
        self.call(move |conn| get_task(conn, id)).await
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        let f = filter.clone();
        self.call(move |conn| {
            let (sql, params) = filtered(COLUMNS, &f, true);
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), task_from_row).map_err(sql_err)?;
            collect(rows)
        })
        .await
    }

    async fn list_ids(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskId>> {
        let f = filter.clone();
        self.call(move |conn| {
            let (sql, params) = filtered("id", &f, false);
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params.iter()), |r| r.get::<_, String>(0))
                .map_err(sql_err)?;
            parse_ids(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)?)
        })
        .await
    }

    async fn next_scheduled(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.call(move |conn| {
            let now = micros(Utc::now());
            let next: Option<i64> = conn
                // A future run_at, or the end of a full rate window of a queue with work
                // (its log keeps the newest `rate_limit` starts, oldest first).
                .prepare_cached(
                    "SELECT min(t) FROM ( \
                       SELECT min(run_at) AS t FROM tasks WHERE status = 'queued' AND run_at > ?1 \
                       UNION ALL \
                       SELECT min(json_extract(q.rate_log, '$[0]') + CAST(q.rate_per_s * 1e6 AS INTEGER)) FROM queues q \
                       WHERE NOT q.paused AND q.rate_limit IS NOT NULL \
                         AND json_array_length(q.rate_log) >= q.rate_limit \
                         AND json_extract(q.rate_log, '$[0]') + CAST(q.rate_per_s * 1e6 AS INTEGER) > ?1 \
                         AND EXISTS (SELECT 1 FROM tasks WHERE status = 'queued' AND queue = q.name))",
                )
                .map_err(sql_err)?
                .query_row([now], |r| r.get(0))
                .map_err(sql_err)?;
            next.map(|us| {
                DateTime::from_timestamp_micros(us)
                    .ok_or_else(|| StoreError::internal(format!("time {us} µs out of range")))
            })
            .transpose()
        })
        .await
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(TaskStatus, u64)>> {
        self.call(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT status, count(*) FROM tasks GROUP BY status").map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            rows.into_iter().map(|(s, n)| Ok((s.parse().map_err(StoreError::internal)?, n as u64))).collect()
        })
        .await
    }

    async fn queued_by_type(&self) -> StoreResult<Vec<(String, u64)>> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT type, count(*) FROM tasks WHERE status = 'queued' GROUP BY type")
                .map_err(sql_err)?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))).map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
        })
        .await
    }

    async fn overview(&self, cap: u64, since: DateTime<Utc>) -> StoreResult<Overview> {
        self.call(move |conn| {
            let limit = cap.saturating_add(1).min(i64::MAX as u64) as i64;
            let mut by_status = Vec::new();
            for status in TaskStatus::ALL {
                // Read through tasks_status_idx, at most `cap + 1` entries.
                let n: i64 = conn
                    .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = ?1 LIMIT ?2)")
                    .map_err(sql_err)?
                    .query_row(params![status.as_str(), limit], |r| r.get(0))
                    .map_err(sql_err)?;
                by_status.push((status, Count::of(n as u64, cap)));
            }
            let mut stmt = conn
                .prepare_cached(
                    "SELECT queue, sum(status = 'queued'), sum(status = 'running') \
                     FROM (SELECT queue, status FROM tasks WHERE status IN ('queued', 'running') LIMIT ?1) \
                     GROUP BY queue ORDER BY queue",
                )
                .map_err(sql_err)?;
            let active_by_queue = stmt
                .query_map([limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
                })
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            let active: u64 = active_by_queue.iter().map(|(_, q, r)| q + r).sum();
            // Ids are time-ordered, so the first queued id in the index is the oldest task.
            let oldest_queued_at = conn
                .prepare_cached("SELECT created_at FROM tasks WHERE status = 'queued' ORDER BY id LIMIT 1")
                .map_err(sql_err)?
                .query_row([], |r| time_from_sql(r.get_ref(0)?).map_err(|m| conversion(0, m)))
                .optional()
                .map_err(sql_err)?;
            const MINUTE_US: i64 = 60_000_000;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT finished_at / ?2 AS m, sum(status = 'completed'), sum(status = 'failed') \
                     FROM tasks WHERE finished_at >= ?1 GROUP BY m ORDER BY m",
                )
                .map_err(sql_err)?;
            let per_minute = stmt
                .query_map(params![micros(since), MINUTE_US], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
                })
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?
                .into_iter()
                .filter(|(_, c, f)| c + f > 0)
                .filter_map(|(m, completed, failed)| {
                    DateTime::from_timestamp_micros(m * MINUTE_US).map(|minute| MinuteCounts {
                        minute,
                        completed,
                        failed,
                    })
                })
                .collect();
            Ok(Overview {
                by_status,
                active_by_queue,
                active_by_queue_capped: active > cap,
                oldest_queued_at,
                per_minute,
            })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.call(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err)).await
    }
}

#[async_trait]
impl MaintenanceStore for SqliteStore {
    async fn rescue_expired(&self, retry: &RetryPolicy) -> StoreResult<Vec<Rescued>> {
        let (base_us, cap_us, jitter_min) = backoff_params(retry);
        self.call(move |conn| {
            let now = micros(Utc::now());
            let tx = conn.transaction().map_err(sql_err)?;
            // Who held each expired lease, read before the update clears it (one writer
            // holds the file, so nothing changes between the two statements).
            let holders: Vec<(String, Option<String>)> = tx
                .prepare_cached("SELECT id, locked_by FROM tasks WHERE status = 'running' AND locked_until < ?1")
                .map_err(sql_err)?
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql_err)?;
            if holders.is_empty() {
                return Ok(Vec::new());
            }
            // The same backoff as a failed attempt (`RetryPolicy::delay`), with a random
            // factor per row from SQLite's random() (64 bits, cut to 20).
            #[allow(clippy::type_complexity)]
            let rows: Vec<(String, i32, String, Option<String>, Option<i64>)> = tx
                .prepare_cached(
                    "UPDATE tasks SET \
                       status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
                       finished_at = CASE WHEN attempts >= max_attempts THEN ?1 ELSE NULL END, \
                       run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE ?1 + CAST( \
                         min(?3, ?2 * (1 << (min(max(attempts, 1), 30) - 1))) \
                         * (?4 + (1 - ?4) * ((random() & 1048575) / 1048576.0)) AS INTEGER) END, \
                       last_error = printf('lease %s of worker %s expired while running (attempt %d)', \
                         strftime('%Y-%m-%dT%H:%M:%fZ', locked_until / 1000000.0, 'unixepoch'), \
                         coalesce(locked_by, 'unknown'), attempts), \
                       locked_by = NULL, locked_until = NULL, updated_at = ?1 \
                     WHERE status = 'running' AND locked_until < ?1 \
                     RETURNING id, attempts, status, cwom_issue_id, started_at",
                )
                .map_err(sql_err)?
                .query_map(params![now, base_us, cap_us, jitter_min], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(sql_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
            let holders: std::collections::HashMap<String, Option<String>> = holders.into_iter().collect();
            rows.into_iter()
                .map(|(id, attempt, status, cwom_issue_id, started_at)| {
                    Ok(Rescued {
                        started_at: started_at.and_then(DateTime::from_timestamp_micros),
                        worker: holders.get(&id).cloned().flatten(),
                        id: id
                            .parse()
                            .map_err(|e: uuid::Error| StoreError::internal("unreadable task id").caused_by(e))?,
                        attempt,
                        status: status.parse().map_err(StoreError::internal)?,
                        cwom_issue_id,
                    })
                })
                .collect()
        })
        .await
    }

    async fn lead(&self, params: LeadParams<'_>) -> StoreResult<bool> {
        let (name, holder) = (params.name.to_string(), params.holder.to_string());
        let ttl = params.ttl;
        self.call(move |conn| {
            let now = Utc::now();
            let until = now + chrono::Duration::microseconds(ttl.as_micros() as i64);
            conn.prepare_cached(
                "INSERT INTO leaders (name, holder, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                   WHERE leaders.holder = excluded.holder OR leaders.expires_at < ?4 \
                 RETURNING holder",
            )
            .map_err(sql_err)?
            .query_row(params![name, holder, micros(until), micros(now)], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(sql_err)
        })
        .await
    }

    async fn resign(&self, name: &str, holder: &str) -> StoreResult<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.call(move |conn| {
            conn.execute("DELETE FROM leaders WHERE name = ?1 AND holder = ?2", params![name, holder])
                .map(|_| ())
                .map_err(sql_err)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_codec_names_every_column_of_the_migrated_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        let columns: Vec<String> = store
            .call(|conn| {
                let mut stmt =
                    conn.prepare("SELECT name FROM pragma_table_info('tasks') ORDER BY cid").map_err(sql_err)?;
                let names = stmt.query_map([], |r| r.get(0)).map_err(sql_err)?;
                names.collect::<rusqlite::Result<Vec<String>>>().map_err(sql_err)
            })
            .await
            .unwrap();
        let mut table = columns.clone();
        let mut codec: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        table.sort();
        codec.sort();
        assert_eq!(codec, table, "task_columns! and the migrated table disagree");
    }
}
