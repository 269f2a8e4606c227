//! The PostgreSQL store: tokio-postgres on deadpool pools.
//!
//! Every hot operation is one round trip with a cached prepared statement: the claim is a
//! `FOR UPDATE SKIP LOCKED` CTE plus `UPDATE … RETURNING`, a whole batch of finished
//! attempts is one `UPDATE … FROM unnest(…)`, and concurrent enqueues are folded into one
//! INSERT by the `intake` module. Times come from the database clock (`now()`), so several daemons
//! on several hosts agree on leases and schedules.
//!
//! Two pools, because two kinds of write need different durability. Enqueues (and the API's
//! other writes) commit durably: a 201 means the task survives a crash. The worker's
//! bookkeeping (claim, heartbeat, finish, release, rescue) commits with
//! `synchronous_commit = off`: a commit lost in a database crash only means the task is
//! claimed or run again, which at-least-once delivery already allows, and not waiting for
//! the WAL flush on every claim and finish is most of the drain rate. Those connections
//! also pin their plans ([`WORKER_SETTINGS`]); the claim has connections and planner
//! settings of its own ([`CLAIM_SETTINGS`]).
//!
//! Heartbeat, finish and release test `status || '' = 'running'`, not `status = 'running'`.
//! Right after a bulk load the table's statistics say every row is queued, and the planner
//! then believes `tasks_lease_idx` (the running rows) holds one row: it walks that index
//! and matches every running row against the whole batch, 0.6 s per statement, until
//! autovacuum analyzes the table up to a minute later (measured: a 100,000-task drain fell
//! from 30,000/s to 1,600/s). The expression does not imply the partial index's
//! predicate, so the batch's ids always drive the lookup through the primary key.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::{lease_secs, ClaimParams, Finish, Outcome, Store, StoreError, StoreResult};
use crate::task::{NewTask, Task, TaskFilter, TaskId, TaskStatus, WorkerId};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The channel the insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "jct_tasks";

/// The channel a cancelled running task's id is sent on, for the daemon running it.
pub const CANCEL_CHANNEL: &str = "jct_cancel";

/// Claims up to $1 due tasks for worker $2 with a lease of $3 seconds.
pub const CLAIM: &str = "WITH next AS ( \
       SELECT id FROM tasks WHERE status = 'queued' AND run_at <= now() \
       ORDER BY priority DESC, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
     UPDATE tasks SET status = 'running', attempts = tasks.attempts + 1, locked_by = $2, \
       locked_until = now() + $3 * interval '1 second', started_at = now(), updated_at = now() \
     FROM next WHERE tasks.id = next.id RETURNING tasks.*";

/// Settings of the worker's bookkeeping connections (claim, heartbeat, finish, release,
/// rescue).
///
/// `synchronous_commit = off`: see the module doc. The rest pins the plans. Every statement
/// there reaches its rows by id (or through a partial index), so a join is always a nested
/// loop over the primary key, and a custom plan, which sees the batch's real size and this
/// daemon's worker id, is where the planner went wrong on a table it knew little about:
/// right after a bulk load (never analyzed) the finish's custom plan expected one running
/// row for this worker, seq-scanned the table and matched every row it found against all
/// 512 outcomes of the batch, 0.55 s per finish and most of a 100,000-task drain
/// (auto_explain). The generic plan expects a few ids and looks each one up through the
/// primary key whatever the statistics say, and is planned once per connection.
pub const WORKER_SETTINGS: &[(&str, &str)] = &[
    ("synchronous_commit", "off"),
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// What the claim's own connections set on top of [`WORKER_SETTINGS`]: no bitmap scans.
/// A table that has never been analyzed makes the planner expect a few hundred queued
/// rows, and it then prefers a bitmap scan of every queued row plus a sort to the claim
/// index's ordered scan: 50 ms per claim on a 50,000-task backlog instead of 2.4 ms
/// (measured), until autovacuum analyzes the table. Only the claim runs without them: the
/// heartbeat's and release's lookups of many ids use them. (The worker's join settings
/// matter to the claim too: its generic plan guesses a tenth of the table for `LIMIT $1`,
/// and with hash joins allowed it joins the claimed ids by hashing a scan of the whole
/// table, 65 ms per claim on a 200,000-task backlog.)
pub const CLAIM_SETTINGS: &[(&str, &str)] = &[("enable_bitmapscan", "off")];

/// Renews the leases of running tasks this worker holds ($1 ids, $2 worker, $3 seconds).
pub const HEARTBEAT: &str = "WITH mine AS ( \
       SELECT id FROM tasks WHERE id = ANY($1) AND status || '' = 'running' AND locked_by = $2 \
       ORDER BY id FOR UPDATE) \
     UPDATE tasks SET locked_until = now() + $3 * interval '1 second' \
     FROM mine WHERE tasks.id = mine.id RETURNING tasks.id";

/// Records a batch of attempt ends, each fenced by worker and attempt
/// ($1..$6 per-task arrays, $7 worker).
pub const FINISH: &str = "WITH mine AS ( \
       SELECT t.id, u.status, u.result, u.error, u.run_at \
       FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::jsonb[], $5::text[], $6::timestamptz[]) \
         AS u(id, attempt, status, result, error, run_at) \
       JOIN tasks t ON t.id = u.id \
       WHERE t.status || '' = 'running' AND t.locked_by = $7 AND t.attempts = u.attempt \
       ORDER BY t.id FOR UPDATE OF t) \
     UPDATE tasks SET status = mine.status, \
       result = CASE WHEN mine.status = 'completed' THEN mine.result ELSE tasks.result END, \
       last_error = coalesce(mine.error, tasks.last_error), \
       run_at = coalesce(mine.run_at, tasks.run_at), \
       finished_at = CASE WHEN mine.status = 'queued' THEN NULL ELSE now() END, \
       updated_at = now(), locked_by = NULL, locked_until = NULL \
     FROM mine WHERE tasks.id = mine.id \
     RETURNING tasks.id";

/// Hands running tasks back to the queue without counting the attempt ($1 ids, $2 worker).
pub const RELEASE: &str = "WITH mine AS ( \
       SELECT id FROM tasks WHERE id = ANY($1) AND status || '' = 'running' AND locked_by = $2 \
       ORDER BY id FOR UPDATE) \
     UPDATE tasks SET status = 'queued', attempts = tasks.attempts - 1, updated_at = now(), \
       locked_by = NULL, locked_until = NULL, started_at = NULL \
     FROM mine WHERE tasks.id = mine.id";

/// Serialises migrations across daemons starting at once (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x004a_4354_5f6d_6967; // "JCT_mig"

mod intake;

use intake::{Columns, Intake, INSERT_UNNEST};

/// A task store in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    /// Durable commits: enqueue, cancel, reads, and the CWOM layer.
    pool: Pool,
    /// [`WORKER_SETTINGS`]: the worker's finish/lease bookkeeping.
    worker_pool: Pool,
    /// The same plus [`CLAIM_SETTINGS`]: claims only (a daemon has one in flight at a time).
    claim_pool: Pool,
    intake: Intake,
}

impl PgStore {
    /// Migrates the database (under an advisory lock) and opens a pool of `pool_size`.
    pub async fn connect(url: &str, pool_size: usize) -> StoreResult<Self> {
        migrate(url).await?;
        Self::connect_no_migrate(url, pool_size)
    }

    /// A pool without running migrations (for tools that know the schema is current).
    pub fn connect_no_migrate(url: &str, pool_size: usize) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Internal(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("jct");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let pool = build_pool(config.clone(), pool_size.max(2))?;
        let worker = with_settings(config, WORKER_SETTINGS);
        let worker_pool = build_pool(worker.clone(), 4)?;
        let claim_pool = build_pool(with_settings(worker, CLAIM_SETTINGS), 2)?;
        let intake = Intake::start(pool.clone());
        Ok(PgStore { pool, worker_pool, claim_pool, intake })
    }

    /// A pooled connection with durable commits (shared with the CWOM layer).
    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        checkout(&self.pool).await
    }

    /// A pooled connection for the worker's bookkeeping (commits not waited for).
    async fn worker_client(&self) -> StoreResult<deadpool_postgres::Object> {
        checkout(&self.worker_pool).await
    }
}

async fn checkout(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// `config` with server settings added to its startup options (`-c name=value`).
fn with_settings(mut config: tokio_postgres::Config, settings: &[(&str, &str)]) -> tokio_postgres::Config {
    let mut options = config.get_options().unwrap_or_default().to_string();
    for (name, value) in settings {
        options.push_str(&format!(" -c {name}={value}"));
    }
    config.options(options.trim_start());
    config
}

fn build_pool(config: tokio_postgres::Config, size: usize) -> StoreResult<Pool> {
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Internal(format!("cannot build pool: {e}")))
}

/// Runs the embedded migrations on their own connection, one daemon at a time.
pub async fn migrate(url: &str) -> StoreResult<()> {
    let (mut client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(pg_err)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_err)?;
    let result = embedded::migrations::runner().run_async(&mut client).await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    drop(client);
    let _ = driver.await;
    result.map(|_| ()).map_err(|e| StoreError::Internal(format!("migration failed: {e}")))
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    // tokio-postgres displays a server error as just "db error": keep its code and words.
    let text = match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", e, db.code().code(), db.message()),
        None => e.to_string(),
    };
    match e.code() {
        Some(code)
            if code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS =>
        {
            StoreError::Unavailable(text)
        }
        Some(_) => StoreError::Internal(text),
        // No SQLSTATE: the socket broke or never opened.
        None => StoreError::Unavailable(text),
    }
}

pub(super) fn task_from_row(row: &Row) -> StoreResult<Task> {
    let get = |e: tokio_postgres::Error| StoreError::Internal(format!("unreadable task row: {e}"));
    let id = TaskId(row.try_get::<_, Uuid>("id").map_err(get)?);
    let status: &str = row.try_get("status").map_err(get)?;
    Ok(Task {
        id,
        task_id: id,
        task_type: row.try_get("type").map_err(get)?,
        payload: row.try_get("payload").map_err(get)?,
        status: status.parse().map_err(StoreError::Internal)?,
        queue: row.try_get("queue").map_err(get)?,
        priority: row.try_get("priority").map_err(get)?,
        run_at: row.try_get("run_at").map_err(get)?,
        attempts: row.try_get("attempts").map_err(get)?,
        max_attempts: row.try_get("max_attempts").map_err(get)?,
        timeout_seconds: row.try_get("timeout_seconds").map_err(get)?,
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        trace_id: row.try_get("trace_id").map_err(get)?,
        locked_by: row.try_get("locked_by").map_err(get)?,
        locked_until: row.try_get("locked_until").map_err(get)?,
        result: row.try_get("result").map_err(get)?,
        last_error: row.try_get("last_error").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        started_at: row.try_get("started_at").map_err(get)?,
        finished_at: row.try_get("finished_at").map_err(get)?,
        cwom_issue_id: row.try_get("cwom_issue_id").map_err(get)?,
    })
}

fn tasks_from_rows(rows: &[Row]) -> StoreResult<Vec<Task>> {
    rows.iter().map(task_from_row).collect()
}

fn uuids(ids: &[TaskId]) -> Vec<Uuid> {
    ids.iter().map(|i| i.0).collect()
}

/// The columns a batch without idempotency keys or start times sends through COPY; the
/// table's defaults fill the rest (`run_at` = `now()` by the database clock).
const COPY_TASKS: &str = "COPY tasks (id, type, payload, queue, priority, max_attempts, timeout_seconds, trace_id, \
     cwom_issue_id) FROM STDIN (FORMAT binary)";

/// Adds a batch with `COPY … FROM STDIN (FORMAT binary)` in one transaction: all or nothing,
/// one statement so one notification, and about half the server time of the `unnest` INSERT
/// for 100,000 rows (no parameter arrays to decode, no executor per row). Batches with
/// idempotency keys (which need `ON CONFLICT`) or start times take the INSERT.
async fn copy_batch(client: &mut deadpool_postgres::Object, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskId>> {
    const TYPES: [Type; 9] =
        [Type::UUID, Type::TEXT, Type::JSONB, Type::TEXT, Type::INT4, Type::INT4, Type::INT4, Type::TEXT, Type::TEXT];
    let tx = client.transaction().await.map_err(pg_err)?;
    let sink = tx.copy_in(COPY_TASKS).await.map_err(pg_err)?;
    let writer = BinaryCopyInWriter::new(sink, &TYPES);
    let mut writer = std::pin::pin!(writer);
    for t in &tasks {
        writer
            .as_mut()
            .write(&[
                &t.id.0,
                &t.task_type,
                &t.payload,
                &t.queue,
                &t.priority,
                &t.max_attempts,
                &t.timeout_seconds,
                &t.trace_id,
                &t.cwom_issue_id,
            ])
            .await
            .map_err(pg_err)?;
    }
    writer.finish().await.map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(tasks.into_iter().map(|t| t.id).collect())
}

#[async_trait]
impl Store for PgStore {
    async fn enqueue(&self, task: NewTask) -> StoreResult<Task> {
        self.intake.enqueue(task).await
    }

    async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskId>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        if tasks.iter().all(|t| t.idempotency_key.is_none() && t.run_at.is_none()) {
            return copy_batch(&mut client, tasks).await;
        }
        let n = tasks.len();
        let columns = Columns::of(tasks.iter());
        let tx = client.transaction().await.map_err(pg_err)?;
        let stmt = tx.prepare_cached(&format!("{INSERT_UNNEST} RETURNING id")).await.map_err(pg_err)?;
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
                .ok_or_else(|| StoreError::Internal("batch insert skipped a row without a key".into()))?;
            return Err(StoreError::Duplicate { existing });
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(columns.ids.into_iter().map(TaskId).collect())
    }

    async fn claim(&self, params: &ClaimParams) -> StoreResult<Vec<Task>> {
        let client = checkout(&self.claim_pool).await?;
        let stmt = client.prepare_cached(CLAIM).await.map_err(pg_err)?;
        let rows = client
            .query(&stmt, &[&(params.limit as i64), &params.worker.0, &lease_secs(params.lease)])
            .await
            .map_err(pg_err)?;
        let mut tasks = tasks_from_rows(&rows)?;
        tasks.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)));
        Ok(tasks)
    }

    async fn heartbeat(&self, worker: &WorkerId, ids: &[TaskId], lease: Duration) -> StoreResult<Vec<TaskId>> {
        let client = self.worker_client().await?;
        let stmt = client.prepare_cached(HEARTBEAT).await.map_err(pg_err)?;
        let rows = client.query(&stmt, &[&uuids(ids), &worker.0, &lease_secs(lease)]).await.map_err(pg_err)?;
        Ok(rows.iter().map(|r| TaskId(r.get(0))).collect())
    }

    async fn finish(&self, worker: &WorkerId, outcomes: &[Outcome]) -> StoreResult<Vec<TaskId>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let n = outcomes.len();
        let (mut ids, mut attempts, mut statuses) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut results, mut errors, mut run_ats) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for o in outcomes {
            ids.push(o.id.0);
            attempts.push(o.attempt);
            let (status, result, error, run_at): (_, Option<&Value>, Option<&str>, Option<DateTime<Utc>>) =
                match &o.finish {
                    Finish::Completed { result } => (TaskStatus::Completed, Some(result), None, None),
                    Finish::Retry { error, run_at } => (TaskStatus::Queued, None, Some(error), Some(*run_at)),
                    Finish::Failed { error } => (TaskStatus::Failed, None, Some(error), None),
                };
            statuses.push(status.as_str());
            results.push(result);
            errors.push(error);
            run_ats.push(run_at);
        }
        let client = self.worker_client().await?;
        let stmt = client.prepare_cached(FINISH).await.map_err(pg_err)?;
        let rows = client
            .query(&stmt, &[&ids, &attempts, &statuses, &results, &errors, &run_ats, &worker.0])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| TaskId(r.get(0))).collect())
    }

    async fn release(&self, worker: &WorkerId, ids: &[TaskId]) -> StoreResult<u64> {
        let client = self.worker_client().await?;
        let stmt = client.prepare_cached(RELEASE).await.map_err(pg_err)?;
        client.execute(&stmt, &[&uuids(ids), &worker.0]).await.map_err(pg_err)
    }

    async fn cancel(&self, id: TaskId) -> StoreResult<Task> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now(), \
                   last_error = CASE WHEN old.was = 'running' THEN 'cancelled while running' \
                                     ELSE tasks.last_error END, \
                   locked_by = NULL, locked_until = NULL \
                 FROM (SELECT id, status AS was FROM tasks WHERE id = $1 FOR UPDATE) old \
                 WHERE tasks.id = old.id AND old.was IN ('queued', 'running') \
                 RETURNING tasks.*, old.was",
                &[&id.0],
            )
            .await
            .map_err(pg_err)?;
        if let Some(row) = &row {
            if row.get::<_, &str>("was") == "running" {
                // Tell whichever daemon runs it to stop the handler now.
                client
                    .execute("SELECT pg_notify($1, $2)", &[&CANCEL_CHANNEL, &id.to_string()])
                    .await
                    .map_err(pg_err)?;
            }
        }
        if let Some(row) = row {
            return task_from_row(&row);
        }
        let row = client.query_opt("SELECT status FROM tasks WHERE id = $1", &[&id.0]).await.map_err(pg_err)?;
        match row {
            None => Err(StoreError::NotFound),
            Some(row) => {
                Err(StoreError::WrongState { status: row.get::<_, &str>(0).parse().map_err(StoreError::Internal)? })
            }
        }
    }

    async fn get(&self, id: TaskId) -> StoreResult<Option<Task>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT * FROM tasks WHERE id = $1").await.map_err(pg_err)?;
        let row = client.query_opt(&stmt, &[&id.0]).await.map_err(pg_err)?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT * FROM tasks \
                 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR type = $2) \
                   AND ($3::text IS NULL OR queue = $3) \
                 ORDER BY id DESC LIMIT $4 OFFSET $5",
            )
            .await
            .map_err(pg_err)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &filter.status.map(TaskStatus::as_str),
                    &filter.task_type,
                    &filter.queue,
                    &(filter.limit as i64),
                    &(filter.offset as i64),
                ],
            )
            .await
            .map_err(pg_err)?;
        tasks_from_rows(&rows)
    }

    async fn rescue_expired(&self) -> StoreResult<u64> {
        let client = self.worker_client().await?;
        client
            .execute(
                "UPDATE tasks SET \
                   status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
                   finished_at = CASE WHEN attempts >= max_attempts THEN now() ELSE NULL END, \
                   last_error = 'lease expired while running on ' || coalesce(locked_by, 'an unknown worker'), \
                   locked_by = NULL, locked_until = NULL, updated_at = now() \
                 WHERE id IN (SELECT id FROM tasks WHERE status = 'running' AND locked_until < now() \
                              ORDER BY id FOR UPDATE SKIP LOCKED)",
                &[],
            )
            .await
            .map_err(pg_err)
    }

    async fn next_scheduled(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let client = self.worker_client().await?;
        let stmt = client
            .prepare_cached("SELECT min(run_at) FROM tasks WHERE status = 'queued' AND run_at > now()")
            .await
            .map_err(pg_err)?;
        let row = client.query_one(&stmt, &[]).await.map_err(pg_err)?;
        Ok(row.get(0))
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(TaskStatus, u64)>> {
        let client = self.client().await?;
        let rows = client.query("SELECT status, count(*) FROM tasks GROUP BY status", &[]).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((r.get::<_, &str>(0).parse().map_err(StoreError::Internal)?, r.get::<_, i64>(1) as u64)))
            .collect()
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg_err)?;
        Ok(())
    }
}
