//! Workflows on SQLite: a workflow stored whole in one transaction, a running step's spawn
//! (in one immediate transaction: no other writer, so nothing it reads changes before it
//! commits), read back with its steps, listed (the parents a claimed step carries are read by the claim, in
//! `tasks.rs`). The release of waiting steps is
//! the `tasks_release_dependants` trigger of `migrations/sqlite/V11__workflows.sql`, as
//! `V13__approvals.sql` redefined it.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::tasks::{insert_step, parse, task_from_row, write_end, Placement, COLUMNS};
use super::{conversion, micros, sql_err, time_from_sql, SqliteStore};
use crate::approval::{Decision, DecisionRecord};
use crate::store::error::{DecideError, NotAwaiting, SpawnError, StoreError, StoreResult, WorkflowCreateError};
use crate::store::tasks::{AttemptEnd, Finish};
use crate::store::workflows::{ordered_counts, Spawn, Spawned, StepCounts, WorkflowStore};
use crate::task::{Task, TaskId, TaskStatus};
use crate::workflow::{
    CreatedStep, CreatedWorkflow, NewWorkflow, SpawnedSteps, StepView, StepsRetried, StoredGraph, StoredStep,
    WorkflowFilter, WorkflowId, WorkflowStatus, WorkflowSummary, WorkflowView,
};

/// A workflow's columns and what its steps say of it (see the PostgreSQL driver's).
const SUMMARY: &str = "w.id AS id, w.name, w.idempotency_key, w.cwom_issue_id, w.created_at, \
     (SELECT CASE WHEN sum(t.status IN ('waiting', 'queued', 'running')) > 0 THEN 'running' \
                  WHEN sum(t.status = 'failed') > 0 THEN 'failed' \
                  WHEN sum(t.status = 'cancelled') > 0 THEN 'cancelled' \
                  ELSE 'completed' END FROM tasks t WHERE t.workflow_id = w.id) AS status, \
     (SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id) AS step_count, \
     (SELECT max(t.finished_at) FROM tasks t WHERE t.workflow_id = w.id) AS last_finished";

fn opt_time(row: &Row, idx: usize) -> rusqlite::Result<Option<chrono::DateTime<Utc>>> {
    match row.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        v => time_from_sql(v).map(Some).map_err(|m| conversion(idx, m)),
    }
}

fn summary_from_row(row: &Row) -> rusqlite::Result<WorkflowSummary> {
    let status: WorkflowStatus = parse(5, &row.get::<_, String>(5)?)?;
    let last = opt_time(row, 7)?;
    Ok(WorkflowSummary {
        workflow_id: parse(0, &row.get::<_, String>(0)?)?,
        name: row.get(1)?,
        status,
        idempotency_key: row.get(2)?,
        cwom_issue_id: row.get(3)?,
        created_at: time_from_sql(row.get_ref(4)?).map_err(|m| conversion(4, m))?,
        finished_at: if status == WorkflowStatus::Running { None } else { last },
        step_count: row.get::<_, i64>(6)? as u64,
    })
}

/// Stores a workflow whole inside `tx` (the caller commits): the workflow row, its steps and
/// their edges. A schedule's fire calls it in the transaction of its exactly-once key.
pub(super) fn insert_workflow(
    tx: &rusqlite::Transaction<'_>,
    wf: &NewWorkflow,
    now: i64,
) -> StoreResult<Result<CreatedWorkflow, WorkflowCreateError>> {
    let id = wf.id.to_string();
    let inserted = tx
        .execute(
            "INSERT INTO workflows (id, name, idempotency_key, cwom_issue_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            params![id, wf.name, wf.idempotency_key, wf.cwom_issue_id, now],
        )
        .map_err(sql_err)?;
    if inserted == 0 {
        let holder: String = tx
            .query_row("SELECT id FROM workflows WHERE idempotency_key = ?1", [&wf.idempotency_key], |r| r.get(0))
            .map_err(sql_err)?;
        let existing = holder
            .parse()
            .map_err(|e| StoreError::internal(format!("unreadable workflow id {holder:?}")).caused_by(e))?;
        return Ok(Err(WorkflowCreateError::Duplicate { existing }));
    }
    for step in &wf.steps {
        let status = NewWorkflow::initial_status(step);
        let at = Placement {
            status: status.as_str(),
            key: step.key.as_str(),
            on_parent_failure: step.on_parent_failure.as_str(),
            pending_parents: step.depends_on.len() as i64,
            workflow_id: &id,
        };
        insert_step(tx, &step.task, now, &at)?;
    }
    let id_of: HashMap<&str, String> = wf.steps.iter().map(|s| (s.key.as_str(), s.task.id.to_string())).collect();
    {
        let mut edge =
            tx.prepare_cached("INSERT INTO task_dependencies (task_id, parent_id) VALUES (?1, ?2)").map_err(sql_err)?;
        for s in &wf.steps {
            let child = s.task.id.to_string();
            for p in &s.depends_on {
                edge.execute(params![child, id_of[p.as_str()]]).map_err(sql_err)?;
            }
        }
    }
    Ok(Ok(CreatedWorkflow {
        workflow_id: wf.id,
        status: WorkflowStatus::Running,
        steps: wf
            .steps
            .iter()
            .map(|s| CreatedStep { key: s.key.clone(), task_id: s.task.id, status: NewWorkflow::initial_status(s) })
            .collect(),
    }))
}
/// What ends an approval (see the PostgreSQL driver's): `?2` is now.
const APPROVAL_END: &str = "attempts = attempts + 1, started_at = updated_at, finished_at = ?2, updated_at = ?2, \
     locked_by = NULL, locked_until = NULL";

/// An approval step awaiting its decision (the fence of its end).
const AWAITING: &str = "type = 'approval' AND workflow_id IS NOT NULL AND status = 'waiting' AND pending_parents = 0";

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn decide(&self, id: TaskId, record: &DecisionRecord) -> Result<Task, DecideError> {
        let (status, error) = match record.decision {
            Decision::Approve => ("completed", None),
            Decision::Reject => ("failed", Some(record.rejection())),
        };
        let result = record.to_value().to_string();
        let at = micros(record.at);
        self.call(move |conn| {
            // One statement: the one writer of the file runs it and its release trigger whole,
            // so of two decisions the second finds the step no longer waiting.
            let decided = conn
                .prepare_cached(&format!(
                    "UPDATE tasks SET status = ?3, result = ?4, last_error = ?5, {APPROVAL_END} \
                     WHERE id = ?1 AND {AWAITING} RETURNING {COLUMNS}"
                ))
                .map_err(sql_err)?
                .query_row(params![id.to_string(), at, status, result, error], task_from_row)
                .optional()
                .map_err(sql_err)?;
            if let Some(task) = decided {
                return Ok(Ok(task));
            }
            let row: Option<(String, bool, String)> = conn
                .query_row(
                    "SELECT type, workflow_id IS NOT NULL, status FROM tasks WHERE id = ?1",
                    [id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(sql_err)?;
            let Some((task_type, is_step, status)) = row else { return Ok(Err(DecideError::NotFound(id))) };
            let status: TaskStatus = status.parse().map_err(StoreError::internal)?;
            Ok(Err(DecideError::NotAwaiting { id, status, why: NotAwaiting::of(&task_type, is_step, status) }))
        })
        .await?
    }

    async fn expire_approvals(&self, limit: u32) -> StoreResult<Vec<Task>> {
        self.call(move |conn| {
            let now = micros(Utc::now());
            let mut stmt = conn
                .prepare_cached(&format!(
                    "UPDATE tasks SET status = 'failed', last_error = ?1, {APPROVAL_END} \
                     WHERE id IN (SELECT id FROM tasks WHERE {AWAITING} \
                                    AND json_type(payload, '$.expires_after_s') IN ('integer', 'real') \
                                    AND updated_at + CAST(json_extract(payload, '$.expires_after_s') * 1000000 AS INTEGER) <= ?2 \
                                  ORDER BY id LIMIT ?3) \
                       AND {AWAITING} RETURNING {COLUMNS}"
                ))
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![crate::approval::EXPIRED, now, limit], task_from_row)
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            Ok(rows)
        })
        .await
    }

    async fn spawn_steps(&self, spawn: &Spawn) -> Result<Spawned, SpawnError> {
        let spawn = spawn.clone();
        let spawned = self
            .call(move |conn| {
                let now = micros(Utc::now());
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_err)?;
                let id = spawn.held.id;
                let sid = id.to_string();
                type Spawner = (Option<String>, String, Option<String>, i32, Option<String>, Option<DateTime<Utc>>);
                let row: Option<Spawner> = tx
                    .query_row(
                        "SELECT workflow_id, status, locked_by, attempts, schedule_name, scheduled_for \
                         FROM tasks WHERE id = ?1",
                        [&sid],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, opt_time(r, 5)?)),
                    )
                    .optional()
                    .map_err(sql_err)?;
                let Some((workflow, status, holder, attempts, schedule, tick)) = row else {
                    return Ok(Err(SpawnError::NotFound(id)));
                };
                let token = &spawn.held.token;
                if status != "running"
                    || holder.as_deref() != Some(token.worker.0.as_str())
                    || attempts != token.attempt
                {
                    return Ok(Err(SpawnError::LeaseLost(id)));
                }
                let Some(workflow) = workflow else {
                    return Ok(Err(SpawnError::NotAWorkflowStep(id)));
                };
                let steps = tx
                    .prepare_cached("SELECT id, step_key, status FROM tasks WHERE workflow_id = ?1")
                    .map_err(sql_err)?
                    .query_map([&workflow], |r| {
                        Ok(StoredStep {
                            task_id: parse(0, &r.get::<_, String>(0)?)?,
                            key: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                            status: parse(2, &r.get::<_, String>(2)?)?,
                        })
                    })
                    .map_err(sql_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql_err)?;
                let edges = tx
                    .prepare_cached(
                        "SELECT d.task_id, d.parent_id FROM task_dependencies d JOIN tasks t ON t.id = d.task_id \
                         WHERE t.workflow_id = ?1",
                    )
                    .map_err(sql_err)?
                    .query_map([&workflow], |r| {
                        Ok((parse::<TaskId>(0, &r.get::<_, String>(0)?)?, parse::<TaskId>(1, &r.get::<_, String>(1)?)?))
                    })
                    .map_err(sql_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql_err)?;
                let graph = StoredGraph { spawner: id, steps, edges };
                let plan = match graph.plan(&spawn.steps) {
                    Ok(plan) => plan,
                    Err(invalid) => return Ok(Err(SpawnError::Invalid(invalid))),
                };
                let tasks = spawn.step_tasks(schedule, tick);
                for ((step, task), (status, pending)) in
                    spawn.steps.iter().zip(&tasks).zip(plan.statuses.iter().zip(&plan.pending))
                {
                    let at = Placement {
                        status: status.as_str(),
                        key: step.key.as_str(),
                        on_parent_failure: step.on_parent_failure.as_str(),
                        pending_parents: i64::from(*pending),
                        workflow_id: &workflow,
                    };
                    insert_step(&tx, task, now, &at)?;
                }
                {
                    let mut edge = tx
                        .prepare_cached(
                            "INSERT INTO task_dependencies (task_id, parent_id, counted) VALUES (?1, ?2, ?3)",
                        )
                        .map_err(sql_err)?;
                    for e in &plan.edges {
                        edge.execute(params![e.step.to_string(), e.parent.to_string(), e.counted]).map_err(sql_err)?;
                    }
                    let mut wait = tx
                        .prepare_cached(
                            "UPDATE tasks SET pending_parents = pending_parents + ?2, updated_at = ?3 \
                             WHERE id = ?1 AND status = 'waiting'",
                        )
                        .map_err(sql_err)?;
                    for d in &plan.waiting_dependants {
                        wait.execute(params![d.to_string(), spawn.steps.len() as i64, now]).map_err(sql_err)?;
                    }
                }
                // The end last, as on PostgreSQL: its release trigger finds the dependants
                // already waiting for the new steps.
                let ended = match &spawn.completes {
                    None => None,
                    Some(result) => {
                        let finish = Finish::Completed { result: result.clone() };
                        let end = AttemptEnd { held: spawn.held.clone(), finish };
                        match write_end(&tx, &end, now)? {
                            Some((task, _)) => Some(task),
                            None => return Ok(Err(SpawnError::LeaseLost(id))),
                        }
                    }
                };
                tx.commit().map_err(sql_err)?;
                let workflow_id: WorkflowId = workflow
                    .parse()
                    .map_err(|_| StoreError::internal(format!("unreadable workflow id {workflow:?}")))?;
                let steps = spawn
                    .steps
                    .iter()
                    .zip(&plan.statuses)
                    .map(|(s, status)| CreatedStep { key: s.key.clone(), task_id: s.task.id, status: *status })
                    .collect();
                Ok(Ok(Spawned { steps: SpawnedSteps { workflow_id, steps }, ended }))
            })
            .await??;
        // New queued steps, or the spawner's end (which frees its slot): local claimers hear.
        self.slots_freed(spawned.ended.is_some() || spawned.steps.steps.iter().any(|s| s.status == TaskStatus::Queued));
        Ok(spawned)
    }

    async fn retry_workflow(&self, id: WorkflowId) -> StoreResult<Option<StepsRetried>> {
        self.call(move |conn| {
            // One immediate transaction: no other writer (no parent's end) until it commits.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_err)?;
            let wid = id.to_string();
            let steps: Vec<(String, String)> = tx
                .prepare_cached("SELECT id, status FROM tasks WHERE workflow_id = ?1 ORDER BY id")
                .map_err(sql_err)?
                .query_map([&wid], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql_err)?;
            if steps.is_empty() {
                let exists = tx
                    .query_row("SELECT 1 FROM workflows WHERE id = ?1", [&wid], |_| Ok(()))
                    .optional()
                    .map_err(sql_err)?;
                return Ok(exists.map(|_| StepsRetried::default()));
            }
            let status: HashMap<String, String> = steps.iter().cloned().collect();
            let rerun: Vec<String> =
                steps.into_iter().filter(|(_, s)| s == "failed" || s == "cancelled").map(|(i, _)| i).collect();
            if rerun.is_empty() {
                return Ok(Some(StepsRetried::default()));
            }
            let mut edges = Vec::new();
            {
                let mut stmt =
                    tx.prepare_cached("SELECT parent_id FROM task_dependencies WHERE task_id = ?1").map_err(sql_err)?;
                for step in &rerun {
                    let parents = stmt.query_map([step], |r| r.get::<_, String>(0)).map_err(sql_err)?;
                    for p in parents {
                        edges.push((step.clone(), p.map_err(sql_err)?));
                    }
                }
            }
            let completed = |p: &String| status.get(p).is_some_and(|s| s == "completed");
            let pending = crate::store::workflows::pending_after_retry(&rerun, &edges, completed);
            let now = micros(Utc::now());
            let mut requeued = 0u64;
            {
                let mut counted = tx
                    .prepare_cached("UPDATE task_dependencies SET counted = ?3 WHERE task_id = ?1 AND parent_id = ?2")
                    .map_err(sql_err)?;
                for (step, parent) in &edges {
                    counted.execute(params![step, parent, completed(parent)]).map_err(sql_err)?;
                }
                // The same reset as `POST /tasks/{id}/retry`; an approval goes back to awaiting
                // its decision (or its parents), never to `queued` (see the PostgreSQL driver).
                let mut reset = tx
                    .prepare_cached(
                        "UPDATE tasks SET status = CASE WHEN ?2 = 0 AND type <> 'approval' THEN 'queued' \
                                                      ELSE 'waiting' END, \
                           pending_parents = ?2, attempts = 0, run_at = ?3, updated_at = ?3, \
                           finished_at = NULL, started_at = NULL, locked_by = NULL, locked_until = NULL, \
                           result = CASE WHEN type = 'approval' THEN NULL ELSE result END \
                         WHERE id = ?1 RETURNING status = 'queued'",
                    )
                    .map_err(sql_err)?;
                for (step, n) in rerun.iter().zip(&pending) {
                    let queued: bool = reset.query_row(params![step, n, now], |r| r.get(0)).map_err(sql_err)?;
                    requeued += u64::from(queued);
                }
            }
            tx.commit().map_err(sql_err)?;
            Ok(Some(StepsRetried { requeued, reopened: pending.len() as u64 - requeued }))
        })
        .await
    }

    async fn create_workflow(&self, wf: &NewWorkflow) -> Result<CreatedWorkflow, WorkflowCreateError> {
        let wf = wf.clone();
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            let created = insert_workflow(&tx, &wf, micros(Utc::now()))?;
            if created.is_ok() {
                tx.commit().map_err(sql_err)?;
            }
            Ok(created)
        })
        .await?
    }

    async fn get_workflow(&self, id: WorkflowId) -> StoreResult<Option<WorkflowView>> {
        self.call(move |conn| {
            let id = id.to_string();
            let Some(summary) = conn
                .query_row(&format!("SELECT {SUMMARY} FROM workflows w WHERE w.id = ?1"), [&id], summary_from_row)
                .optional()
                .map_err(sql_err)?
            else {
                return Ok(None);
            };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT t.id, t.step_key, t.type, t.status, t.on_parent_failure, t.attempts, t.max_attempts, \
                       t.last_error, t.created_at, t.started_at, t.finished_at, \
                       (SELECT json_group_array(k) FROM (SELECT p.step_key AS k FROM task_dependencies d \
                          JOIN tasks p ON p.id = d.parent_id WHERE d.task_id = t.id ORDER BY p.step_key)) \
                     FROM tasks t WHERE t.workflow_id = ?1 ORDER BY t.id",
                )
                .map_err(sql_err)?;
            let steps = stmt
                .query_map([&id], |r| {
                    let deps: String = r.get(11)?;
                    Ok(StepView {
                        task_id: parse(0, &r.get::<_, String>(0)?)?,
                        key: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        task_type: r.get(2)?,
                        status: parse(3, &r.get::<_, String>(3)?)?,
                        on_parent_failure: parse(
                            4,
                            &r.get::<_, Option<String>>(4)?.unwrap_or_else(|| "cancel".into()),
                        )?,
                        attempts: r.get(5)?,
                        max_attempts: r.get(6)?,
                        last_error: r.get(7)?,
                        created_at: time_from_sql(r.get_ref(8)?).map_err(|m| conversion(8, m))?,
                        started_at: opt_time(r, 9)?,
                        finished_at: opt_time(r, 10)?,
                        depends_on: serde_json::from_str(&deps).map_err(|e| conversion(11, e.to_string()))?,
                    })
                })
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            Ok(Some(WorkflowView { summary, steps }))
        })
        .await
    }

    async fn list_workflows(&self, filter: &WorkflowFilter) -> StoreResult<Vec<WorkflowSummary>> {
        use rusqlite::types::Value as V;
        let filter = filter.clone();
        self.call(move |conn| {
            let mut conditions: Vec<String> = Vec::new();
            let mut values: Vec<V> = Vec::new();
            if let Some(name) = &filter.name {
                values.push(V::Text(name.clone()));
                conditions.push(format!("w.name = ?{}", values.len()));
            }
            if let Some(before) = filter.before {
                values.push(V::Text(before.to_string()));
                conditions.push(format!("w.id < ?{}", values.len()));
            }
            let mut sql = format!("SELECT * FROM (SELECT {SUMMARY} FROM workflows w");
            if !conditions.is_empty() {
                sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
            }
            sql.push_str(") s");
            if let Some(status) = filter.status {
                values.push(V::Text(status.as_str().into()));
                sql.push_str(&format!(" WHERE s.status = ?{}", values.len()));
            }
            values.push(V::Integer(filter.limit as i64));
            sql.push_str(&format!(" ORDER BY s.id DESC LIMIT ?{}", values.len()));
            let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), summary_from_row).map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
        })
        .await
    }

    async fn unfinished_steps(&self, id: WorkflowId) -> StoreResult<Option<Vec<TaskId>>> {
        self.call(move |conn| {
            let id = id.to_string();
            let exists = conn
                .query_row("SELECT 1 FROM workflows WHERE id = ?1", [&id], |_| Ok(()))
                .optional()
                .map_err(sql_err)?
                .is_some();
            if !exists {
                return Ok(None);
            }
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM tasks WHERE workflow_id = ?1 AND status IN ('waiting', 'queued', 'running') \
                     ORDER BY id",
                )
                .map_err(sql_err)?;
            let ids = stmt
                .query_map([&id], |r| parse::<TaskId>(0, &r.get::<_, String>(0)?))
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            Ok(Some(ids))
        })
        .await
    }

    async fn step_counts(&self, ids: &[WorkflowId]) -> StoreResult<StepCounts> {
        if ids.is_empty() {
            return Ok(StepCounts::new());
        }
        let ids = serde_json::Value::from(ids.iter().map(|w| w.to_string()).collect::<Vec<_>>()).to_string();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT workflow_id, status, count(*) FROM tasks \
                     WHERE workflow_id IN (SELECT value FROM json_each(?1)) GROUP BY 1, 2",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([&ids], |r| {
                    Ok((
                        parse::<WorkflowId>(0, &r.get::<_, String>(0)?)?,
                        parse::<TaskStatus>(1, &r.get::<_, String>(1)?)?,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })
                .map_err(sql_err)?;
            let mut counts = StepCounts::new();
            for row in rows {
                let (id, status, n) = row.map_err(sql_err)?;
                counts.entry(id).or_default().push((status, n));
            }
            Ok(ordered_counts(counts))
        })
        .await
    }
}
