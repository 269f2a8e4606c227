//! Tasks on PostgreSQL: the task codec (the one column list of `tasks` in this dialect,
//! used to insert, to copy and to read rows), the worker's statements and the
//! [`TaskStore`] operations.
//!
//! Heartbeat, finish and release test `status || '' = 'running'`, not `status = 'running'`.
//! Right after a bulk load the table's statistics say every row is queued, and the planner
//! then believes `tasks_lease_idx` (the running rows) holds one row: it walks that index
//! and matches every running row against the whole batch, until autovacuum analyzes the
//! table. The expression does not imply the partial index's predicate, so the batch's ids
//! always drive the lookup through the primary key.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{lease_secs, pg_err, PgStore, CANCEL_CHANNEL, NOTIFY_CHANNEL};
use crate::lease::Held;
use crate::store::error::{CancelError, EnqueueError, RetryError, StoreError, StoreResult};
use crate::store::queues::limited_scan;
use crate::store::tasks::RETRY_RESET;
use crate::store::tasks::{
    backoff_params, AttemptEnd, AttemptStore, ClaimParams, Count, Finish, IntakeStore, LeadParams, LeaseState,
    MaintenanceStore, MinuteCounts, OperatorStore, Overview, RenewParams, Rescued, TaskReads,
};
use crate::task::{NewTask, RetryPolicy, Task, TaskFilter, TaskId, TaskStatus, WorkerId};
use crate::tunables::PLANNED_BATCH;
use crate::workflow::{ParentOutcome, Parents};

crate::store::tasks::task_columns! {
    prefix = "tasks.";
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

    /// The PostgreSQL type an inserted value is sent as.
    fn sql_type(self) -> Type {
        match self {
            Col::Id | Col::WorkflowId => Type::UUID,
            Col::Payload | Col::Result => Type::JSONB,
            Col::Priority | Col::Attempts | Col::MaxAttempts | Col::TimeoutSeconds | Col::PendingParents => Type::INT4,
            Col::RunAt
            | Col::LockedUntil
            | Col::CreatedAt
            | Col::UpdatedAt
            | Col::StartedAt
            | Col::FinishedAt
            | Col::ScheduledFor => Type::TIMESTAMPTZ,
            _ => Type::TEXT,
        }
    }
}

/// A filtered, newest-first read of `select` (columns of `tasks`): only the filter's
/// conditions are in the statement, never `$n IS NULL OR …`, so the plan PostgreSQL caches
/// for it keeps using `tasks_status_idx` for a status (a generic plan of the `OR` form
/// walks the primary key and filters, a scan of the table when the status is rare).
fn filtered(select: &str, filter: &TaskFilter, with_offset: bool) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut add = |sql: &str, value: Box<dyn ToSql + Sync + Send>, params: &mut Vec<_>| {
        params.push(value);
        conditions.push(format!("{sql} ${}", params.len()));
    };
    if let Some(status) = filter.status {
        add("status =", Box::new(status.as_str()), &mut params);
    }
    if let Some(t) = &filter.task_type {
        add("type =", Box::new(t.clone()), &mut params);
    }
    if let Some(q) = &filter.queue {
        add("queue =", Box::new(q.clone()), &mut params);
    }
    if let Some(i) = &filter.cwom_issue_id {
        add("cwom_issue_id =", Box::new(i.clone()), &mut params);
    }
    if let Some(s) = &filter.schedule_name {
        add("schedule_name =", Box::new(s.clone()), &mut params);
    }
    if let Some(before) = filter.before {
        add("id <", Box::new(before.0), &mut params);
    }
    let mut sql = format!("SELECT {select} FROM tasks");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    params.push(Box::new(filter.limit as i64));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", params.len()));
    if with_offset && filter.offset > 0 {
        params.push(Box::new(filter.offset as i64));
        sql.push_str(&format!(" OFFSET ${}", params.len()));
    }
    (sql, params)
}

/// The columns an enqueue writes; the table's defaults fill the rest.
pub(super) const INSERTED: [Col; 14] = [
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
    Col::CwomIssueId,
    Col::ScheduleName,
    Col::ScheduledFor,
    Col::ConcurrencyKey,
];

/// The inserted columns a batch sends through COPY: those whose every value is known
/// without the database. `run_at` is left to the column default (`now()` by the database
/// clock), and a batch with idempotency keys needs `ON CONFLICT`, so it takes the INSERT.
const COPIED: [Col; 12] = [
    Col::Id,
    Col::Type,
    Col::Payload,
    Col::Queue,
    Col::Priority,
    Col::MaxAttempts,
    Col::TimeoutSeconds,
    Col::TraceId,
    Col::CwomIssueId,
    Col::ScheduleName,
    Col::ScheduledFor,
    Col::ConcurrencyKey,
];

/// The column names, the values taken from `u`, and the array parameters ($1…) of an
/// `unnest` insert of [`INSERTED`].
fn unnest_parts() -> (String, String, String) {
    let names: Vec<&str> = INSERTED.iter().map(|c| c.name()).collect();
    let values: Vec<String> = INSERTED
        .iter()
        .map(|c| match c {
            Col::RunAt => "coalesce(u.run_at, now())".to_string(),
            c => format!("u.{}", c.name()),
        })
        .collect();
    let arrays: Vec<String> =
        INSERTED.iter().enumerate().map(|(i, c)| format!("${}::{}[]", i + 1, c.sql_type().name())).collect();
    (names.join(", "), values.join(", "), arrays.join(", "))
}

/// Inserts rows from one array per [`INSERTED`] column; the caller appends its RETURNING.
pub(super) static INSERT_UNNEST: LazyLock<String> = LazyLock::new(|| {
    let (names, values, arrays) = unnest_parts();
    format!(
        "INSERT INTO tasks ({names}) SELECT {values} FROM unnest({arrays}) AS u({names}) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    )
});

/// Inserts a workflow's steps: the arrays of [`INSERT_UNNEST`], then one array each of
/// statuses, step keys, `on_parent_failure` and pending parent counts, then the workflow id.
pub(super) static INSERT_STEPS: LazyLock<String> = LazyLock::new(|| {
    let (names, values, arrays) = unnest_parts();
    let n = INSERTED.len();
    let placed = [Col::Status, Col::StepKey, Col::OnParentFailure, Col::PendingParents].map(Col::name).join(", ");
    format!(
        "INSERT INTO tasks ({names}, {placed}, {workflow}) \
         SELECT {values}, u.status, u.step_key, u.on_parent_failure, u.pending_parents, ${wf}::uuid \
         FROM unnest({arrays}, ${a}::text[], ${b}::text[], ${c}::text[], ${d}::int4[]) AS u({names}, {placed})",
        workflow = Col::WorkflowId.name(),
        a = n + 1,
        b = n + 2,
        c = n + 3,
        d = n + 4,
        wf = n + 5,
    )
});

static COPY_TASKS: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = COPIED.iter().map(|c| c.name()).collect();
    format!("COPY tasks ({}) FROM STDIN (FORMAT binary)", names.join(", "))
});

/// One inserted column's value of one task.
fn value(t: &NewTask, col: Col) -> &(dyn ToSql + Sync) {
    match col {
        Col::Id => &t.id.0,
        Col::Type => &t.task_type,
        Col::Payload => &t.payload,
        Col::Queue => &t.queue,
        Col::Priority => &t.priority,
        Col::RunAt => &t.run_at,
        Col::MaxAttempts => &t.max_attempts,
        Col::TimeoutSeconds => &t.timeout_seconds,
        Col::IdempotencyKey => &t.idempotency_key,
        Col::TraceId => &t.trace_id,
        Col::CwomIssueId => &t.cwom_issue_id,
        Col::ScheduleName => &t.schedule_name,
        Col::ScheduledFor => &t.scheduled_for,
        Col::ConcurrencyKey => &t.concurrency_key,
        other => unreachable!("{other:?} is not inserted"),
    }
}

/// New tasks as one array per [`INSERTED`] column: the parameters of [`INSERT_UNNEST`].
pub(super) struct Columns<'a> {
    pub ids: Vec<Uuid>,
    arrays: Vec<Box<dyn ToSql + Sync + Send + 'a>>,
}

impl<'a> Columns<'a> {
    pub(super) fn of(tasks: &[&'a NewTask]) -> Self {
        fn array<'a, T: ToSql + Sync + Send + 'a>(
            tasks: &[&'a NewTask],
            f: impl Fn(&'a NewTask) -> T,
        ) -> Box<dyn ToSql + Sync + Send + 'a> {
            Box::new(tasks.iter().map(|t| f(t)).collect::<Vec<T>>())
        }
        let arrays = INSERTED
            .iter()
            .map(|col| match col {
                Col::Id => array(tasks, |t| t.id.0),
                Col::Type => array(tasks, |t| t.task_type.as_str()),
                Col::Payload => array(tasks, |t| &t.payload),
                Col::Queue => array(tasks, |t| t.queue.as_str()),
                Col::Priority => array(tasks, |t| t.priority),
                Col::RunAt => array(tasks, |t| t.run_at),
                Col::MaxAttempts => array(tasks, |t| t.max_attempts),
                Col::TimeoutSeconds => array(tasks, |t| t.timeout_seconds),
                Col::IdempotencyKey => array(tasks, |t| t.idempotency_key.as_deref()),
                Col::TraceId => array(tasks, |t| t.trace_id.as_deref()),
                Col::CwomIssueId => array(tasks, |t| t.cwom_issue_id.as_deref()),
                Col::ScheduleName => array(tasks, |t| t.schedule_name.as_deref()),
                Col::ScheduledFor => array(tasks, |t| t.scheduled_for),
                Col::ConcurrencyKey => array(tasks, |t| t.concurrency_key.as_deref()),
                other => unreachable!("{other:?} is not inserted"),
            })
            .collect();
        Columns { ids: tasks.iter().map(|t| t.id.0).collect(), arrays }
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.arrays.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// Reads a row selected with [`COLUMNS`].
pub(super) fn task_from_row(row: &Row) -> StoreResult<Task> {
    fn get<'r, T: tokio_postgres::types::FromSql<'r>>(row: &'r Row, col: Col) -> StoreResult<T> {
        row.try_get(col as usize)
            .map_err(|e| StoreError::internal(format!("unreadable task column {}", col.name())).caused_by(e))
    }
    let id = TaskId(get::<Uuid>(row, Col::Id)?);
    let status: &str = get(row, Col::Status)?;
    Ok(Task {
        id,
        task_id: id,
        task_type: get(row, Col::Type)?,
        payload: get(row, Col::Payload)?,
        status: status.parse().map_err(StoreError::internal)?,
        queue: get(row, Col::Queue)?,
        priority: get(row, Col::Priority)?,
        run_at: get(row, Col::RunAt)?,
        attempts: get(row, Col::Attempts)?,
        max_attempts: get(row, Col::MaxAttempts)?,
        timeout_seconds: get(row, Col::TimeoutSeconds)?,
        idempotency_key: get(row, Col::IdempotencyKey)?,
        trace_id: get(row, Col::TraceId)?,
        locked_by: get(row, Col::LockedBy)?,
        locked_until: get(row, Col::LockedUntil)?,
        result: get(row, Col::Result)?,
        last_error: get(row, Col::LastError)?,
        created_at: get(row, Col::CreatedAt)?,
        updated_at: get(row, Col::UpdatedAt)?,
        started_at: get(row, Col::StartedAt)?,
        finished_at: get(row, Col::FinishedAt)?,
        cwom_issue_id: get(row, Col::CwomIssueId)?,
        schedule_name: get(row, Col::ScheduleName)?,
        scheduled_for: get(row, Col::ScheduledFor)?,
        concurrency_key: get(row, Col::ConcurrencyKey)?,
        workflow_id: get::<Option<Uuid>>(row, Col::WorkflowId)?.map(crate::workflow::WorkflowId),
        step_key: get(row, Col::StepKey)?,
        parents: None,
    })
}

fn tasks_from_rows(rows: &[Row]) -> StoreResult<Vec<Task>> {
    rows.iter().map(task_from_row).collect()
}

/// A task's status, to say why a state change did not apply.
async fn status_of(client: &deadpool_postgres::Object, id: TaskId) -> StoreResult<Option<TaskStatus>> {
    let row = client.query_opt("SELECT status FROM tasks WHERE id = $1", &[&id.0]).await.map_err(pg_err)?;
    row.map(|r| r.get::<_, &str>(0).parse().map_err(StoreError::internal)).transpose()
}

fn uuids(ids: &[TaskId]) -> Vec<Uuid> {
    ids.iter().map(|i| i.0).collect()
}

/// Runs a statement that joins a batch of `rows` ids against `tasks`. A large batch runs as
/// an unnamed statement, in one round trip, so PostgreSQL plans it for this batch and the
/// table as it is now. A prepared statement would, after five runs, keep a generic plan made
/// from the table's last statistics; on a new database those describe an empty table, and
/// the plan that is best for one (walk `tasks`, match each row against the whole batch)
/// stays until autovacuum analyzes while the table grows: quadratic in the batch
/// (`docs/benchmarks.md`, "2026-12-07, evening"). A small batch keeps the prepared
/// statement: planning would cost it more than that plan's worst.
pub(super) async fn query_batch(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
    rows: usize,
) -> StoreResult<Vec<Row>> {
    if rows >= PLANNED_BATCH {
        return client.query_typed(sql, params).await.map_err(pg_err);
    }
    let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
    let stmt = client.prepare_typed_cached(sql, &types).await.map_err(pg_err)?;
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
    client.query(&stmt, &values).await.map_err(pg_err)
}

/// How every claim marks its tasks: `next` holds the ids ($2 worker, $3 lease in seconds),
/// `clock` the claim's instant: `clock_timestamp()` read once as the rows are written,
/// after the statement's snapshot, as in the limited claim: `now()` is the
/// transaction's start, which a busy server can stamp milliseconds before the snapshot that
/// saw a step released, so a step would seem to start before the parent whose end released it.
macro_rules! claim_update {
    () => {
        "UPDATE tasks SET status = 'running', attempts = tasks.attempts + 1, locked_by = $2, \
           locked_until = (SELECT t FROM clock) + $3 * interval '1 second', \
           started_at = (SELECT t FROM clock), updated_at = (SELECT t FROM clock) \
         FROM next WHERE tasks.id = next.id RETURNING "
    };
}

/// Claims up to $1 due tasks of the types $4 (in the queues $5, or any when NULL) for worker
/// $2 with a lease of $3 seconds, when no queue has a control. The controlled list is read
/// once per statement all the same: a pause committed after the claim's round trip began
/// must still hold. It sits behind a `CASE`: written as a plain `queue <> ALL (…)`, an
/// analyzed table made the planner expect one matching row and seq-scan and sort the whole
/// table for every claim (`tests/integration/postgres_dispatch.rs` holds the plan to the claim index).
pub static CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH clock AS (SELECT clock_timestamp() AS t), next AS ( \
           SELECT id FROM tasks WHERE status = 'queued' AND run_at <= now() \
             AND type = ANY($4::text[]) AND ($5::text[] IS NULL OR queue = ANY($5::text[])) \
             AND CASE WHEN cardinality({controlled}) = 0 THEN true ELSE queue <> ALL ({controlled}) END \
           ORDER BY priority DESC, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         {update}{COLUMNS}",
        controlled = super::queues::CONTROLLED,
        update = claim_update!(),
    )
});

/// The claim while some queue is controlled (paused or limited): each other queue with due
/// work in turn (found by a loose scan of `tasks_queue_claim_idx`), so that a controlled
/// queue's backlog is never walked through. Parameters as [`CLAIM`].
static CLAIM_AROUND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH RECURSIVE clock AS (SELECT clock_timestamp() AS t), queued AS ( \
           (SELECT queue FROM tasks WHERE status = 'queued' ORDER BY queue LIMIT 1) \
           UNION ALL \
           SELECT (SELECT t.queue FROM tasks t WHERE t.status = 'queued' AND t.queue > queued.queue \
                   ORDER BY t.queue LIMIT 1) FROM queued WHERE queued.queue IS NOT NULL), \
         open AS ( \
           SELECT queue FROM queued WHERE queue IS NOT NULL AND queue <> ALL ({controlled}) \
             AND ($5::text[] IS NULL OR queue = ANY($5::text[]))), \
         next AS ( \
           SELECT c.id FROM open CROSS JOIN LATERAL ( \
             SELECT t.id, t.priority, t.run_at FROM tasks t \
             WHERE t.status = 'queued' AND t.queue = open.queue AND t.run_at <= now() \
               AND t.type = ANY($4::text[]) \
             ORDER BY t.priority DESC, t.run_at, t.id LIMIT $1 FOR UPDATE SKIP LOCKED) c \
           ORDER BY c.priority DESC, c.run_at, c.id LIMIT $1) \
         {update}{COLUMNS}",
        controlled = super::queues::CONTROLLED,
        update = claim_update!(),
    )
});

/// Claims the queue's share after the lock ($1 queue, $2 most to claim, $3 concurrency, $4
/// key_concurrency, $5 rate limit, $6 rate window in seconds, $7 types, $8 worker, $9
/// lease in seconds, $10 candidates to look at).
static CLAIM_LIMITED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH clock AS (SELECT clock_timestamp() AS t), \
         running AS (SELECT concurrency_key AS k FROM tasks WHERE status = 'running' AND queue = $1), \
         recent AS ( \
           SELECT count(*) AS n FROM queues q, unnest(q.rate_log) AS s(at) \
           WHERE q.name = $1 AND $5::int8 IS NOT NULL \
             AND s.at > (SELECT t FROM clock) - $6::float8 * interval '1 second'), \
         free AS ( \
           SELECT least( \
             coalesce($3::int8 - (SELECT count(*) FROM running), 2147483647), \
             coalesce($5::int8 - (SELECT n FROM recent), 2147483647)) AS n), \
         room AS (SELECT greatest(0, least($2::int8, (SELECT n FROM free))) AS n), \
         cand AS ( \
           SELECT id, concurrency_key AS k, priority, run_at FROM tasks \
           WHERE status = 'queued' AND queue = $1 AND run_at <= now() AND type = ANY($7::text[]) \
           ORDER BY priority DESC, run_at, id \
           LIMIT CASE WHEN $4::int8 IS NULL THEN (SELECT n FROM room) \
                      ELSE least($10::int8, (SELECT n FROM room) * 4 + 256) END), \
         ranked AS ( \
           SELECT id, k, priority, run_at, is_cand, \
             row_number() OVER (PARTITION BY k ORDER BY is_cand, priority DESC, run_at, id) AS nth \
           FROM ( \
             SELECT NULL::uuid AS id, k, 0 AS is_cand, 0 AS priority, NULL::timestamptz AS run_at FROM running \
               WHERE $4::int8 IS NOT NULL AND k IS NOT NULL \
             UNION ALL SELECT id, k, 1, priority, run_at FROM cand) AS both_), \
         eligible AS ( \
           SELECT id, priority, run_at FROM ranked \
           WHERE is_cand = 1 AND ($4::int8 IS NULL OR k IS NULL OR nth <= $4::int8)), \
         chosen AS (SELECT id FROM eligible ORDER BY priority DESC, run_at, id LIMIT (SELECT n FROM room)), \
         claimed AS ( \
           UPDATE tasks SET status = 'running', attempts = tasks.attempts + 1, locked_by = $8, \
             locked_until = (SELECT t FROM clock) + $9::float8 * interval '1 second', \
             started_at = (SELECT t FROM clock), updated_at = (SELECT t FROM clock), limited = true \
           FROM chosen WHERE tasks.id = chosen.id AND tasks.status = 'queued' RETURNING {COLUMNS}), \
         logged AS ( \
           UPDATE queues q SET rate_log = ARRAY( \
             SELECT at FROM ( \
               SELECT s.at FROM unnest(q.rate_log) AS s(at) \
                 WHERE s.at > (SELECT t FROM clock) - $6::float8 * interval '1 second' \
               UNION ALL SELECT (SELECT t FROM clock) FROM claimed) AS log \
             ORDER BY at DESC LIMIT $5::int8) \
           WHERE q.name = $1 AND $5::int8 IS NOT NULL AND EXISTS (SELECT 1 FROM claimed)) \
         SELECT claimed.*, (SELECT n FROM free) > (SELECT n FROM room) \
           AND (SELECT count(*) FROM eligible) > (SELECT n FROM room) AS left_behind FROM claimed"
    )
});

/// Claims up to `want` tasks of the limited queue `queue` for `params`' worker, in one
/// transaction that holds the queue's row.
async fn claim_limited(
    client: &mut deadpool_postgres::Object,
    queue: &str,
    want: usize,
    params: &ClaimParams,
) -> StoreResult<Vec<Task>> {
    let tx = client.transaction().await.map_err(pg_err)?;
    let row = tx
        .query_opt(
            &format!("SELECT {} FROM queues WHERE name = $1 FOR UPDATE SKIP LOCKED", super::queues::SETTINGS),
            &[&queue],
        )
        .await
        .map_err(pg_err)?;
    let Some(row) = row else {
        // Another claim holds the queue (it notifies if it leaves work and room behind).
        return Ok(Vec::new());
    };
    let s = super::queues::settings_from_row(&row, 0);
    if s.paused || !s.limited() {
        // Changed since the list was read; the next claim sees it.
        return Ok(Vec::new());
    }
    let scan = limited_scan(want);
    let want = want as i64;
    let stmt = tx.prepare_cached(&CLAIM_LIMITED).await.map_err(pg_err)?;
    let rows = tx
        .query(
            &stmt,
            &[
                &queue,
                &want,
                &s.concurrency,
                &s.key_concurrency,
                &s.rate.map(|r| r.limit),
                &s.rate.map_or(1.0, |r| r.per_s),
                &params.types,
                &params.worker.0,
                &params.lease.as_secs_f64(),
                &scan,
            ],
        )
        .await
        .map_err(pg_err)?;
    // The claim's one extra column, after the task's (of which `limited` is the last).
    let left_behind = rows.first().is_some_and(|r| r.get::<_, bool>(Col::Limited as usize + 1));
    if left_behind {
        tx.execute("SELECT pg_notify($1, '')", &[&NOTIFY_CHANNEL]).await.map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    rows.iter().map(task_from_row).collect()
}

/// The next time a queued task becomes claimable by the clock: a future `run_at`, or the end
/// of a full rate window of a queue with work (its log keeps the newest `rate_limit`
/// starts, newest first, so the oldest one leaves the window first).
const NEXT_SCHEDULED: &str = "SELECT least( \
       (SELECT min(run_at) FROM tasks WHERE status = 'queued' AND run_at > now()), \
       (SELECT min(q.rate_log[cardinality(q.rate_log)] + q.rate_per_s * interval '1 second') FROM queues q \
        WHERE NOT q.paused AND q.rate_limit IS NOT NULL AND cardinality(q.rate_log) >= q.rate_limit \
          AND q.rate_log[cardinality(q.rate_log)] + q.rate_per_s * interval '1 second' > now() \
          AND EXISTS (SELECT 1 FROM tasks t WHERE t.status = 'queued' AND t.queue = q.name)))";

/// Claims from each limited queue of `controlled` ([`super::queues::CONTROLLED_LIST`] rows)
/// that the claim asks for, until `tasks` holds `params.limit`.
async fn claim_limited_queues(
    client: &mut deadpool_postgres::Object,
    controlled: &[Row],
    params: &ClaimParams,
    tasks: &mut Vec<Task>,
) -> StoreResult<()> {
    for row in controlled {
        let (queue, limited): (&str, bool) = (row.get(0), row.get(1));
        let asked = params.queues.as_ref().is_none_or(|qs| qs.iter().any(|q| q == queue));
        if limited && asked && tasks.len() < params.limit {
            tasks.extend(claim_limited(client, queue, params.limit - tasks.len(), params).await?);
        }
    }
    Ok(())
}

/// Claims up to `n` tasks with `stmt`, [`CLAIM`] or [`CLAIM_AROUND`] prepared.
async fn fast_claim(
    client: &deadpool_postgres::Object,
    stmt: &tokio_postgres::Statement,
    params: &ClaimParams,
    n: usize,
) -> StoreResult<Vec<Row>> {
    let lease = lease_secs(params.lease);
    client.query(stmt, &[&(n as i64), &params.worker.0, &lease, &params.types, &params.queues]).await.map_err(pg_err)
}

/// The fences of some attempts as three arrays: ids, holders, attempt numbers.
pub(super) struct Fences {
    pub ids: Vec<Uuid>,
    pub workers: Vec<String>,
    pub attempts: Vec<i32>,
}

impl Fences {
    pub(super) fn of(held: &[Held]) -> Self {
        Fences {
            ids: held.iter().map(|h| h.id.0).collect(),
            workers: held.iter().map(|h| h.token.worker.0.clone()).collect(),
            attempts: held.iter().map(|h| h.token.attempt).collect(),
        }
    }
}

/// Renews the leases of attempts ($1 ids, $2 holders, $3 attempts, $4 seconds), locking
/// rows in id order; answers every asked id with its new lease end (NULL when not held)
/// and whether that attempt was cancelled.
pub const RENEW: &str = "WITH asked AS ( \
       SELECT * FROM unnest($1::uuid[], $2::text[], $3::int4[]) WITH ORDINALITY AS u(id, worker, attempt, n)), \
     mine AS ( \
       SELECT t.id FROM tasks t WHERE t.id = ANY($1) AND t.status || '' = 'running' \
         AND EXISTS (SELECT 1 FROM asked WHERE asked.id = t.id AND asked.worker = t.locked_by \
                     AND asked.attempt = t.attempts) \
       ORDER BY t.id FOR UPDATE OF t), \
     renewed AS ( \
       UPDATE tasks SET locked_until = now() + $4 * interval '1 second' \
       FROM mine WHERE tasks.id = mine.id RETURNING tasks.id, tasks.locked_by, tasks.attempts, tasks.locked_until) \
     SELECT asked.n, renewed.locked_until, \
       renewed.id IS NULL AND EXISTS ( \
         SELECT 1 FROM tasks c WHERE c.id = asked.id AND c.status = 'cancelled' AND c.attempts = asked.attempt) \
     FROM asked LEFT JOIN renewed ON renewed.id = asked.id AND renewed.locked_by = asked.worker \
       AND renewed.attempts = asked.attempt \
     ORDER BY asked.n";

/// Records a batch of attempt ends, each fenced by its own holder and attempt
/// ($1..$7 per-task arrays), and answers the finished rows whole.
pub static FINISH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH mine AS ( \
           SELECT t.id, u.status, u.result, u.error, u.run_at \
           FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::jsonb[], $5::text[], $6::timestamptz[], $7::text[]) \
             AS u(id, attempt, status, result, error, run_at, worker) \
           JOIN tasks t ON t.id = u.id \
           WHERE t.status || '' = 'running' AND t.locked_by = u.worker AND t.attempts = u.attempt \
           ORDER BY t.id FOR UPDATE OF t) \
         UPDATE tasks SET status = mine.status, \
           result = CASE WHEN mine.status = 'completed' THEN mine.result ELSE tasks.result END, \
           last_error = coalesce(mine.error, tasks.last_error), \
           run_at = coalesce(mine.run_at, tasks.run_at), \
           finished_at = CASE WHEN mine.status = 'queued' THEN NULL ELSE now() END, \
           updated_at = now(), locked_by = NULL, locked_until = NULL \
         FROM mine WHERE tasks.id = mine.id \
         RETURNING {COLUMNS}"
    )
});

/// [`FINISH`] answering only the ids of the rows it changed (the in-process completer's).
pub static FINISH_IDS: LazyLock<String> =
    LazyLock::new(|| FINISH.replace(&format!("RETURNING {COLUMNS}"), "RETURNING tasks.id"));

/// Attempt ends as the per-task arrays of [`FINISH`].
pub(super) struct FinishArrays<'a> {
    ids: Vec<Uuid>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    results: Vec<Option<&'a Value>>,
    errors: Vec<Option<&'a str>>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    workers: Vec<&'a str>,
}

impl<'a> FinishArrays<'a> {
    pub(super) fn of(ends: impl ExactSizeIterator<Item = &'a AttemptEnd>) -> Self {
        let n = ends.len();
        let mut a = FinishArrays {
            ids: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            results: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            workers: Vec::with_capacity(n),
        };
        for end in ends {
            #[allow(clippy::type_complexity)]
            let (status, result, error, run_at): (_, Option<&Value>, Option<&str>, Option<DateTime<Utc>>) =
                match &end.finish {
                    Finish::Completed { result } => (TaskStatus::Completed, Some(result), None, None),
                    Finish::Retry { error, run_at } => (TaskStatus::Queued, None, Some(error), Some(*run_at)),
                    Finish::Failed { error } => (TaskStatus::Failed, None, Some(error), None),
                };
            a.ids.push(end.held.id.0);
            a.attempts.push(end.held.token.attempt);
            a.statuses.push(status.as_str());
            a.results.push(result);
            a.errors.push(error);
            a.run_ats.push(run_at);
            a.workers.push(&end.held.token.worker.0);
        }
        a
    }

    /// Runs `sql` ([`FINISH`] or [`FINISH_IDS`]) with these arrays (see [`query_batch`]).
    pub(super) async fn query(&self, client: &deadpool_postgres::Object, sql: &str) -> StoreResult<Vec<Row>> {
        let [ids, attempts, statuses, results, errors, run_ats, workers] = self.params();
        query_batch(
            client,
            sql,
            &[
                (ids, Type::UUID_ARRAY),
                (attempts, Type::INT4_ARRAY),
                (statuses, Type::TEXT_ARRAY),
                (results, Type::JSONB_ARRAY),
                (errors, Type::TEXT_ARRAY),
                (run_ats, Type::TIMESTAMPTZ_ARRAY),
                (workers, Type::TEXT_ARRAY),
            ],
            self.ids.len(),
        )
        .await
    }

    /// The parameters of [`FINISH`], for a caller that runs it in its own transaction.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [&self.ids, &self.attempts, &self.statuses, &self.results, &self.errors, &self.run_ats, &self.workers]
    }
}

/// Returns tasks whose lease expired to the queue after the retry backoff, or to `failed`
/// when their attempts are used up ($1 base µs, $2 cap µs, $3 smallest jitter factor; the
/// formula of `RetryPolicy::delay`); answers each rescued attempt.
pub const RESCUE: &str = "WITH expired AS ( \
       SELECT id, locked_by AS worker FROM tasks WHERE status = 'running' AND locked_until < now() \
       ORDER BY id FOR UPDATE SKIP LOCKED) \
     UPDATE tasks SET \
       status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
       finished_at = CASE WHEN attempts >= max_attempts THEN now() ELSE NULL END, \
       run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE now() + \
         least($2::float8, $1::float8 * (1::bigint << (least(greatest(attempts, 1), 30) - 1))) \
         * ($3::float8 + (1 - $3::float8) * random()) * interval '1 microsecond' END, \
       last_error = format('lease %s of worker %s expired while running (attempt %s)', \
         to_char(locked_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
         coalesce(locked_by, 'unknown'), attempts), \
       locked_by = NULL, locked_until = NULL, updated_at = now() \
     FROM expired WHERE tasks.id = expired.id \
     RETURNING tasks.id, tasks.attempts, expired.worker, tasks.status, tasks.cwom_issue_id, tasks.started_at";

/// Hands attempts back to the queue without counting them ($1 ids, $2 holders, $3 attempts).
pub const RELEASE: &str = "WITH mine AS ( \
       SELECT t.id FROM unnest($1::uuid[], $2::text[], $3::int4[]) AS u(id, worker, attempt) \
       JOIN tasks t ON t.id = u.id \
       WHERE t.status || '' = 'running' AND t.locked_by = u.worker AND t.attempts = u.attempt \
       ORDER BY t.id FOR UPDATE OF t) \
     UPDATE tasks SET status = 'queued', attempts = tasks.attempts - 1, updated_at = now(), \
       locked_by = NULL, locked_until = NULL, started_at = NULL \
     FROM mine WHERE tasks.id = mine.id RETURNING tasks.id";

/// Takes the leadership $1 for $2 until $3 seconds from now when it is free or expired, or
/// extends it for its holder; a row comes back when $2 leads.
pub const LEAD: &str = "INSERT INTO leaders AS l (name, holder, expires_at) \
       VALUES ($1, $2, now() + $3 * interval '1 second') \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
       WHERE l.holder = excluded.holder OR l.expires_at < now() \
     RETURNING holder";

/// Adds a batch with `COPY … FROM STDIN (FORMAT binary)` in one transaction: all or nothing,
/// one statement so one notification, and about half the server time of the `unnest` INSERT
/// for 100,000 rows (no parameter arrays to decode, no executor per row). Batches with
/// idempotency keys (which need `ON CONFLICT`) or start times take the INSERT.
async fn copy_batch(client: &mut deadpool_postgres::Object, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskId>> {
    let types = COPIED.map(Col::sql_type);
    let tx = client.transaction().await.map_err(pg_err)?;
    let sink = tx.copy_in(COPY_TASKS.as_str()).await.map_err(pg_err)?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    for t in &tasks {
        writer.as_mut().write(&COPIED.map(|c| value(t, c))).await.map_err(pg_err)?;
    }
    writer.finish().await.map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(tasks.into_iter().map(|t| t.id).collect())
}

#[async_trait]
impl IntakeStore for PgStore {
    async fn enqueue(&self, task: NewTask) -> Result<Task, EnqueueError> {
        self.intake.enqueue(task).await
    }

    async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, EnqueueError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        if tasks.iter().all(|t| t.idempotency_key.is_none() && t.run_at.is_none()) {
            return Ok(copy_batch(&mut client, tasks).await?);
        }
        let n = tasks.len();
        let refs: Vec<&NewTask> = tasks.iter().collect();
        let columns = Columns::of(&refs);
        let tx = client.transaction().await.map_err(pg_err)?;
        let stmt = tx.prepare_cached(&format!("{} RETURNING id", *INSERT_UNNEST)).await.map_err(pg_err)?;
        let rows = tx.query(&stmt, &columns.params()).await.map_err(pg_err)?;
        if rows.len() < n {
            // Some key was taken: nothing of the batch is kept. Name the task that holds it.
            let inserted: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
            tx.rollback().await.map_err(pg_err)?;
            let skipped = tasks.iter().find(|t| !inserted.contains(&t.id.0));
            let key = skipped.and_then(|t| t.idempotency_key.clone());
            let existing = client
                .query_opt("SELECT id FROM tasks WHERE idempotency_key = $1", &[&key])
                .await
                .map_err(pg_err)?
                .map(|r| TaskId(r.get(0)))
                // The key was repeated inside the batch itself: name the first holder.
                .or_else(|| tasks.iter().find(|t| t.idempotency_key == key).map(|t| t.id))
                .ok_or_else(|| StoreError::internal("batch insert skipped a row without a key"))?;
            return Err(EnqueueError::Duplicate { existing });
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(columns.ids.into_iter().map(TaskId).collect())
    }
}

/// Fills in `parents` of the claimed steps among `tasks`, with one read for all of them:
/// a join from the batch, not `task_id = ANY($1)`, which the planner may answer by matching
/// every edge of the table against the whole batch.
async fn attach_parents(client: &deadpool_postgres::Object, tasks: &mut [Task]) -> StoreResult<()> {
    let steps: Vec<Uuid> = tasks.iter().filter(|t| t.workflow_id.is_some()).map(|t| t.id.0).collect();
    if steps.is_empty() {
        return Ok(());
    }
    let rows = query_batch(
        client,
        "SELECT d.task_id, p.step_key, p.id, p.status, p.result, p.last_error \
         FROM unnest($1::uuid[]) AS s(id) JOIN task_dependencies d ON d.task_id = s.id \
         JOIN tasks p ON p.id = d.parent_id",
        &[(&steps, Type::UUID_ARRAY)],
        steps.len(),
    )
    .await?;
    let mut by_step: HashMap<Uuid, Parents> = HashMap::new();
    for r in &rows {
        let status: TaskStatus = r.get::<_, &str>(3).parse().map_err(StoreError::internal)?;
        let outcome = ParentOutcome::new(TaskId(r.get(2)), status, r.get::<_, Option<Value>>(4), r.get(5));
        by_step.entry(r.get(0)).or_default().insert(r.get::<_, Option<String>>(1).unwrap_or_default(), outcome);
    }
    for t in tasks.iter_mut().filter(|t| t.workflow_id.is_some()) {
        t.parents = Some(by_step.remove(&t.id.0).unwrap_or_default());
    }
    Ok(())
}

#[async_trait]
impl AttemptStore for PgStore {
    /// While no queue has a control this is the plain claim, pipelined with the read of the
    /// controlled queues (one round trip). Once the last claim saw one, limited queues are
    /// claimed from first, one at a time under their lock (so a deep unlimited backlog cannot
    /// starve them), then the other queues around the controlled ones ([`CLAIM_AROUND`]).
    async fn claim(&self, params: &ClaimParams) -> StoreResult<Vec<Task>> {
        let mut client = self.claim_client().await?;
        let list = client.prepare_cached(super::queues::CONTROLLED_LIST).await.map_err(pg_err)?;
        let mut tasks = Vec::new();
        let controlled = if self.controlled_seen.load(Ordering::Relaxed) {
            let controlled = client.query(&list, &[]).await.map_err(pg_err)?;
            claim_limited_queues(&mut client, &controlled, params, &mut tasks).await?;
            if tasks.len() < params.limit {
                let around = client.prepare_cached(&CLAIM_AROUND).await.map_err(pg_err)?;
                let rest = params.limit - tasks.len();
                tasks.extend(tasks_from_rows(&fast_claim(&client, &around, params, rest).await?)?);
            }
            controlled
        } else {
            let fast = client.prepare_cached(&CLAIM).await.map_err(pg_err)?;
            let (rows, controlled) =
                futures_util::try_join!(fast_claim(&client, &fast, params, params.limit), async {
                    client.query(&list, &[]).await.map_err(pg_err)
                })?;
            tasks = tasks_from_rows(&rows)?;
            claim_limited_queues(&mut client, &controlled, params, &mut tasks).await?;
            controlled
        };
        self.controlled_seen.store(!controlled.is_empty(), Ordering::Relaxed);
        tasks.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)));
        // Only a claim that took workflow steps reads more.
        attach_parents(&client, &mut tasks).await?;
        let unresolved = crate::store::tasks::resolve_claimed(&mut tasks);
        if !unresolved.is_empty() {
            drop(client);
            self.finish(&unresolved).await?;
        }
        Ok(tasks)
    }

    async fn renew(&self, params: RenewParams<'_>) -> StoreResult<Vec<LeaseState>> {
        if params.attempts.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.worker_client().await?;
        let stmt = client.prepare_cached(RENEW).await.map_err(pg_err)?;
        let f = Fences::of(params.attempts);
        let rows =
            client.query(&stmt, &[&f.ids, &f.workers, &f.attempts, &lease_secs(params.lease)]).await.map_err(pg_err)?;
        // One row per attempt asked, in the order asked.
        Ok(rows
            .iter()
            .map(|r| match (r.get::<_, Option<DateTime<Utc>>>(1), r.get::<_, bool>(2)) {
                (Some(until), _) => LeaseState::Held { until },
                (None, true) => LeaseState::Cancelled,
                (None, false) => LeaseState::Lost,
            })
            .collect())
    }

    async fn finish(&self, ends: &[AttemptEnd]) -> StoreResult<Vec<TaskId>> {
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.worker_client().await?;
        let rows = FinishArrays::of(ends.iter()).query(&client, &FINISH_IDS).await?;
        Ok(rows.iter().map(|r| TaskId(r.get(0))).collect())
    }

    async fn finish_reporting(&self, end: &AttemptEnd) -> StoreResult<Option<Task>> {
        // Coalesced with the other remote ends arriving now: one UPDATE for all of them.
        self.ends.finish(end.clone()).await
    }

    async fn release(&self, attempts: &[Held]) -> StoreResult<Vec<TaskId>> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        // Durable: a worker told "released" must find the task queued after a crash.
        let client = self.client().await?;
        let f = Fences::of(attempts);
        let rows = query_batch(
            &client,
            RELEASE,
            &[(&f.ids, Type::UUID_ARRAY), (&f.workers, Type::TEXT_ARRAY), (&f.attempts, Type::INT4_ARRAY)],
            f.ids.len(),
        )
        .await?;
        Ok(rows.iter().map(|r| TaskId(r.get(0))).collect())
    }

    async fn holds(&self, attempt: &Held) -> StoreResult<bool> {
        let client = self.worker_client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM tasks WHERE id = $1 AND status || '' = 'running' AND locked_by = $2 AND attempts = $3",
                &[&attempt.id.0, &attempt.token.worker.0, &attempt.token.attempt],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.is_some())
    }

    async fn running_count(&self, worker: &WorkerId) -> StoreResult<u64> {
        let client = self.worker_client().await?;
        let row = client
            .query_one("SELECT count(*) FROM tasks WHERE status = 'running' AND locked_by = $1", &[&worker.0])
            .await
            .map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

#[async_trait]
impl OperatorStore for PgStore {
    async fn cancel(&self, id: TaskId) -> Result<Task, CancelError> {
        let mut client = self.client().await?;
        // The update and the notification commit together: a client never hears an error
        // about a cancel that took effect, nor sees a cancel whose daemon was never told.
        let tx = client.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now(), \
                       last_error = CASE WHEN old.was = 'running' THEN 'cancelled while running' \
                                         ELSE tasks.last_error END, \
                       locked_by = NULL, locked_until = NULL \
                     FROM (SELECT id, status AS was FROM tasks WHERE id = $1 FOR UPDATE) old \
                     WHERE tasks.id = old.id AND old.was IN ('waiting', 'queued', 'running') \
                     RETURNING {COLUMNS}, old.was"
                ),
                &[&id.0],
            )
            .await
            .map_err(pg_err)?;
        if let Some(row) = &row {
            if row.get::<_, &str>("was") == "running" {
                // Tell whichever daemon runs it to stop the handler now.
                tx.execute("SELECT pg_notify($1, $2)", &[&CANCEL_CHANNEL, &id.to_string()]).await.map_err(pg_err)?;
            }
        }
        tx.commit().await.map_err(pg_err)?;
        if let Some(row) = row {
            return Ok(task_from_row(&row)?);
        }
        match status_of(&client, id).await? {
            None => Err(CancelError::NotFound(id)),
            Some(status) => Err(CancelError::NotCancellable { id, status }),
        }
    }

    async fn cancel_many(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskId>> {
        let mut client = self.client().await?;
        // As `cancel`: the updates and the notifications to running tasks' daemons commit
        // together. Rows are locked in id order, so two bulk cancels never deadlock.
        let tx = client.transaction().await.map_err(pg_err)?;
        let rows = tx
            .query(
                "WITH old AS ( \
                   SELECT id, status AS was FROM tasks \
                   WHERE id = ANY($1) AND status IN ('waiting', 'queued', 'running') ORDER BY id FOR UPDATE) \
                 UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now(), \
                   last_error = CASE WHEN old.was = 'running' THEN 'cancelled while running' \
                                     ELSE tasks.last_error END, \
                   locked_by = NULL, locked_until = NULL \
                 FROM old WHERE tasks.id = old.id AND old.was IN ('waiting', 'queued', 'running') \
                 RETURNING tasks.id, old.was",
                &[&uuids(ids)],
            )
            .await
            .map_err(pg_err)?;
        let running: Vec<String> =
            rows.iter().filter(|r| r.get::<_, &str>(1) == "running").map(|r| r.get::<_, Uuid>(0).to_string()).collect();
        if !running.is_empty() {
            tx.execute("SELECT pg_notify($1, x) FROM unnest($2::text[]) AS x", &[&CANCEL_CHANNEL, &running])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(rows.iter().map(|r| TaskId(r.get(0))).collect())
    }

    async fn retry(&self, id: TaskId) -> Result<Task, RetryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE tasks SET {RETRY_RESET}, attempts = 0, run_at = now(), updated_at = now(), \
                       finished_at = NULL, started_at = NULL, locked_by = NULL, locked_until = NULL \
                     WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING {COLUMNS}"
                ),
                &[&id.0],
            )
            .await
            .map_err(pg_err)?;
        if let Some(row) = row {
            return Ok(task_from_row(&row)?);
        }
        match status_of(&client, id).await? {
            None => Err(RetryError::NotFound(id)),
            Some(status) => Err(RetryError::NotRetryable { id, status }),
        }
    }

    async fn retry_many(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskId>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "UPDATE tasks SET {RETRY_RESET}, attempts = 0, run_at = now(), updated_at = now(), \
                       finished_at = NULL, started_at = NULL, locked_by = NULL, locked_until = NULL \
                     WHERE id = ANY($1) AND status IN ('failed', 'cancelled') RETURNING id"
                ),
                &[&uuids(ids)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| TaskId(r.get(0))).collect())
    }
}

#[async_trait]
impl TaskReads for PgStore {
    async fn get(&self, id: TaskId) -> StoreResult<Option<Task>> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1")).await.map_err(pg_err)?;
        let row = client.query_opt(&stmt, &[&id.0]).await.map_err(pg_err)?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        let client = self.client().await?;
        let (sql, params) = filtered(COLUMNS, filter, true);
        let stmt = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&stmt, &refs).await.map_err(pg_err)?;
        tasks_from_rows(&rows)
    }

    async fn list_ids(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskId>> {
        let client = self.client().await?;
        let (sql, params) = filtered("id", filter, false);
        let stmt = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&stmt, &refs).await.map_err(pg_err)?;
        Ok(rows.iter().map(|r| TaskId(r.get(0))).collect())
    }

    async fn next_scheduled(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let client = self.worker_client().await?;
        let stmt = client.prepare_cached(NEXT_SCHEDULED).await.map_err(pg_err)?;
        let row = client.query_one(&stmt, &[]).await.map_err(pg_err)?;
        Ok(row.get(0))
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(TaskStatus, u64)>> {
        let client = self.client().await?;
        let rows = client.query("SELECT status, count(*) FROM tasks GROUP BY status", &[]).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((r.get::<_, &str>(0).parse().map_err(StoreError::internal)?, r.get::<_, i64>(1) as u64)))
            .collect()
    }

    async fn queued_by_type(&self) -> StoreResult<Vec<(String, u64)>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT type, count(*) FROM tasks WHERE status = 'queued' GROUP BY type", &[])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect())
    }

    async fn overview(&self, cap: u64, since: DateTime<Utc>) -> StoreResult<Overview> {
        let client = self.client().await?;
        let limit = cap.saturating_add(1).min(i64::MAX as u64) as i64;
        // Each status counted through tasks_status_idx, reading at most `cap + 1` entries.
        let statuses: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        let rows = client
            .query(
                "SELECT s, (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = s LIMIT $2) AS t) \
                 FROM unnest($1::text[]) AS s",
                &[&statuses, &limit],
            )
            .await
            .map_err(pg_err)?;
        let mut by_status = Vec::new();
        for r in &rows {
            let status: TaskStatus = r.get::<_, &str>(0).parse().map_err(StoreError::internal)?;
            by_status.push((status, Count::of(r.get::<_, i64>(1) as u64, cap)));
        }
        let rows = client
            .query(
                "SELECT queue, count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'running') \
                 FROM (SELECT queue, status FROM tasks WHERE status IN ('queued', 'running') LIMIT $1) AS t \
                 GROUP BY queue ORDER BY queue",
                &[&limit],
            )
            .await
            .map_err(pg_err)?;
        let active_by_queue: Vec<(String, u64, u64)> =
            rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64)).collect();
        let active: u64 = active_by_queue.iter().map(|(_, q, r)| q + r).sum();
        // Ids are time-ordered, so the first queued id in the index is the oldest task.
        let oldest = client
            .query_opt("SELECT created_at FROM tasks WHERE status = 'queued' ORDER BY id LIMIT 1", &[])
            .await
            .map_err(pg_err)?
            .map(|r| r.get::<_, DateTime<Utc>>(0));
        let rows = client
            .query(
                "SELECT date_trunc('minute', finished_at) AS m, \
                   count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed') \
                 FROM tasks WHERE finished_at >= $1 AND finished_at IS NOT NULL \
                 GROUP BY m ORDER BY m",
                &[&since],
            )
            .await
            .map_err(pg_err)?;
        let per_minute = rows
            .iter()
            .map(|r| MinuteCounts {
                minute: r.get(0),
                completed: r.get::<_, i64>(1) as u64,
                failed: r.get::<_, i64>(2) as u64,
            })
            .filter(|m| m.completed + m.failed > 0)
            .collect();
        Ok(Overview {
            by_status,
            active_by_queue,
            active_by_queue_capped: active > cap,
            oldest_queued_at: oldest,
            per_minute,
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg_err)?;
        Ok(())
    }
}

#[async_trait]
impl MaintenanceStore for PgStore {
    async fn rescue_expired(&self, retry: &RetryPolicy) -> StoreResult<Vec<Rescued>> {
        let (base_us, cap_us, jitter_min) = backoff_params(retry);
        let client = self.worker_client().await?;
        let stmt = client.prepare_cached(RESCUE).await.map_err(pg_err)?;
        let rows = client.query(&stmt, &[&(base_us as f64), &(cap_us as f64), &jitter_min]).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(Rescued {
                    id: TaskId(r.get(0)),
                    attempt: r.get(1),
                    worker: r.get(2),
                    status: r.get::<_, &str>(3).parse().map_err(StoreError::internal)?,
                    cwom_issue_id: r.get(4),
                    started_at: r.get(5),
                })
            })
            .collect()
    }

    async fn lead(&self, params: LeadParams<'_>) -> StoreResult<bool> {
        let client = self.worker_client().await?;
        let stmt = client.prepare_cached(LEAD).await.map_err(pg_err)?;
        let row =
            client.query_opt(&stmt, &[&params.name, &params.holder, &lease_secs(params.ttl)]).await.map_err(pg_err)?;
        Ok(row.is_some())
    }

    async fn resign(&self, name: &str, holder: &str) -> StoreResult<()> {
        let client = self.worker_client().await?;
        client
            .execute("DELETE FROM leaders WHERE name = $1 AND holder = $2", &[&name, &holder])
            .await
            .map_err(pg_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_fences_every_row_by_its_own_holder() {
        assert!(FINISH.contains("$7::text[]") && FINISH.contains("t.locked_by = u.worker"), "{}", *FINISH);
        assert!(!FINISH.contains("= $7 ") && FINISH.contains("RETURNING tasks.id, tasks.type"));
        assert!(FINISH_IDS.ends_with("FROM mine WHERE tasks.id = mine.id RETURNING tasks.id"), "{}", *FINISH_IDS);
    }

    /// Runs under `make test`, which starts the PostgreSQL named by `TEST_DATABASE_URL`.
    #[tokio::test]
    async fn the_codec_names_every_column_of_the_migrated_table() {
        let url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL is not set: run `make test`");
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let schema = format!("codec_{}", Uuid::new_v4().simple());
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let scoped = format!("{url}{}options=-csearch_path%3D{schema}", if url.contains('?') { "&" } else { "?" });
        super::super::migrate(&scoped).await.unwrap();
        let rows = client
            .query(
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'tasks'",
                &[&schema],
            )
            .await
            .unwrap();
        client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
        let mut table: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut codec: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        table.sort();
        codec.sort();
        assert_eq!(codec, table, "task_columns! and the migrated table disagree");
    }
}
