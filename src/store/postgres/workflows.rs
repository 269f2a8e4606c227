//! Workflows on PostgreSQL: a workflow stored whole in one transaction, a running step's
//! spawn (its new steps and edges in one transaction, under the locks that keep the counts
//! true), read back with its steps, listed (the parents a claimed step carries are read by the claim, in
//! `tasks.rs`). The release of waiting steps is
//! the statement trigger `tasks_release_ended_steps` of
//! `migrations/postgres/V14__release_per_statement.sql`.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::tasks::{task_from_row, Columns, FinishArrays, COLUMNS, FINISH, INSERT_STEPS};
use super::{pg_err, PgStore};
use crate::approval::{Decision, DecisionRecord};
use crate::store::error::{DecideError, NotAwaiting, SpawnError, StoreError, StoreResult, WorkflowCreateError};
use crate::store::tasks::{AttemptEnd, Finish};
use crate::store::workflows::{ordered_counts, Spawn, Spawned, StepCounts, WorkflowStore};
use crate::task::{NewTask, Task, TaskId, TaskStatus};
use crate::workflow::{
    CreatedStep, CreatedWorkflow, NewWorkflow, SpawnedSteps, StepView, StepsRetried, StoredGraph, StoredStep,
    WorkflowFilter, WorkflowId, WorkflowStatus, WorkflowSummary, WorkflowView,
};

/// How often a spawn that PostgreSQL chose as a deadlock's victim is tried again (it can
/// meet the end of a parent it names, whose trigger locks that parent's dependants).
const SPAWN_TRIES: usize = 3;

impl PgStore {
    async fn spawn_once(&self, spawn: &Spawn) -> Result<Spawned, SpawnError> {
        let id = spawn.held.id;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let Some(row) = tx
            .query_opt("SELECT workflow_id, schedule_name, scheduled_for FROM tasks WHERE id = $1", &[&id.0])
            .await
            .map_err(pg_err)?
        else {
            return Err(SpawnError::NotFound(id));
        };
        let (workflow, schedule, tick): (Option<Uuid>, Option<String>, Option<DateTime<Utc>>) =
            (row.get(0), row.get(1), row.get(2));
        // The workflow's row first: spawns into one workflow go one at a time, so the keys
        // and edges read below stay true until this commits. Nothing else locks it.
        if let Some(w) = workflow {
            tx.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", &[&w]).await.map_err(pg_err)?;
        }
        // The fence, under the spawner's lock: its end waits for this commit.
        let held = tx
            .query_opt(
                "SELECT 1 FROM tasks WHERE id = $1 AND status = 'running' AND locked_by = $2 AND attempts = $3 \
                 FOR UPDATE",
                &[&id.0, &spawn.held.token.worker.0, &spawn.held.token.attempt],
            )
            .await
            .map_err(pg_err)?;
        if held.is_none() {
            return Err(SpawnError::LeaseLost(id));
        }
        let Some(workflow) = workflow else {
            return Err(SpawnError::NotAWorkflowStep(id));
        };
        let rows = tx
            .query("SELECT id, step_key, status FROM tasks WHERE workflow_id = $1", &[&workflow])
            .await
            .map_err(pg_err)?;
        let mut steps = Vec::with_capacity(rows.len());
        for r in &rows {
            steps.push(StoredStep {
                task_id: TaskId(r.get(0)),
                key: r.get::<_, Option<String>>(1).unwrap_or_default(),
                status: r.get::<_, &str>(2).parse().map_err(StoreError::internal)?,
            });
        }
        let edges: Vec<(TaskId, TaskId)> = tx
            .query(
                "SELECT d.task_id, d.parent_id FROM task_dependencies d JOIN tasks t ON t.id = d.task_id \
                 WHERE t.workflow_id = $1",
                &[&workflow],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| (TaskId(r.get(0)), TaskId(r.get(1))))
            .collect();
        let mut graph = StoredGraph { spawner: id, steps, edges };
        // The stored parents the new steps name, then the spawner's dependants, each set in
        // id order, their statuses read again under the lock: a parent that ends meanwhile
        // waits for this commit, and its trigger then sees the new edges (or this spawn waits
        // for its end and counts it). Parents before dependants, as a parent's end locks
        // its dependants after itself.
        let by_key: HashMap<&str, Uuid> = graph.steps.iter().map(|s| (s.key.as_str(), s.task_id.0)).collect();
        let named: Vec<Uuid> = {
            let mut named: Vec<Uuid> = spawn
                .steps
                .iter()
                .flat_map(|s| s.depends_on.iter())
                .filter_map(|k| by_key.get(k.as_str()).copied())
                .collect();
            named.sort();
            named.dedup();
            named
        };
        let dependants: Vec<Uuid> = graph.edges.iter().filter(|(_, p)| *p == id).map(|(s, _)| s.0).collect();
        let mut fresh: HashMap<Uuid, String> = HashMap::new();
        for (ids, lock) in [(&named, "FOR SHARE"), (&dependants, "FOR UPDATE")] {
            if ids.is_empty() {
                continue;
            }
            let rows = tx
                .query(&format!("SELECT id, status FROM tasks WHERE id = ANY($1) ORDER BY id {lock}"), &[ids])
                .await
                .map_err(pg_err)?;
            fresh.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
        }
        for s in &mut graph.steps {
            if let Some(status) = fresh.get(&s.task_id.0) {
                s.status = status.parse().map_err(StoreError::internal)?;
            }
        }
        let plan = graph.plan(&spawn.steps).map_err(SpawnError::Invalid)?;
        let tasks = spawn.step_tasks(schedule, tick);
        let columns = Columns::of(&tasks.iter().map(|t| &**t).collect::<Vec<&NewTask>>());
        let statuses: Vec<&str> = plan.statuses.iter().map(|s| s.as_str()).collect();
        let keys: Vec<&str> = spawn.steps.iter().map(|s| s.key.as_str()).collect();
        let modes: Vec<&str> = spawn.steps.iter().map(|s| s.on_parent_failure.as_str()).collect();
        let mut params = columns.params();
        params.extend_from_slice(&[&statuses as &(dyn ToSql + Sync), &keys, &modes, &plan.pending, &workflow]);
        tx.execute(INSERT_STEPS.as_str(), &params).await.map_err(pg_err)?;
        let children: Vec<Uuid> = plan.edges.iter().map(|e| e.step.0).collect();
        let parents: Vec<Uuid> = plan.edges.iter().map(|e| e.parent.0).collect();
        let counted: Vec<bool> = plan.edges.iter().map(|e| e.counted).collect();
        if !children.is_empty() {
            tx.execute(
                "INSERT INTO task_dependencies (task_id, parent_id, counted) \
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bool[])",
                &[&children, &parents, &counted],
            )
            .await
            .map_err(pg_err)?;
        }
        if !plan.waiting_dependants.is_empty() {
            let waiting: Vec<Uuid> = plan.waiting_dependants.iter().map(|t| t.0).collect();
            tx.execute(
                "UPDATE tasks SET pending_parents = pending_parents + $2, updated_at = now() \
                 WHERE id = ANY($1) AND status = 'waiting'",
                &[&waiting, &(spawn.steps.len() as i32)],
            )
            .await
            .map_err(pg_err)?;
        }
        // The end last, in this transaction: its release trigger finds the dependants already
        // waiting for the new steps.
        let ended = match &spawn.completes {
            None => None,
            Some(result) => {
                let finish = Finish::Completed { result: result.clone() };
                let end = AttemptEnd { held: spawn.held.clone(), finish };
                let arrays = FinishArrays::of(std::iter::once(&end));
                let row = tx.query_opt(FINISH.as_str(), &arrays.params()).await.map_err(pg_err)?;
                // Held under this transaction's lock since the fence was read.
                let row = row.ok_or(SpawnError::LeaseLost(id))?;
                Some(task_from_row(&row)?)
            }
        };
        tx.commit().await.map_err(pg_err)?;
        let steps = spawn
            .steps
            .iter()
            .zip(&plan.statuses)
            .map(|(s, status)| CreatedStep { key: s.key.clone(), task_id: s.task.id, status: *status })
            .collect();
        Ok(Spawned { steps: SpawnedSteps { workflow_id: WorkflowId(workflow), steps }, ended })
    }
}

/// A workflow's columns and what its steps say of it: status (the rule of
/// [`WorkflowStatus::of`], in SQL), step count, when the last step ended. `w` is the
/// workflows row.
const SUMMARY: &str = "w.id, w.name, w.idempotency_key, w.cwom_issue_id, w.created_at, \
     (SELECT CASE WHEN count(*) FILTER (WHERE t.status IN ('waiting', 'queued', 'running')) > 0 THEN 'running' \
                  WHEN count(*) FILTER (WHERE t.status = 'failed') > 0 THEN 'failed' \
                  WHEN count(*) FILTER (WHERE t.status = 'cancelled') > 0 THEN 'cancelled' \
                  ELSE 'completed' END FROM tasks t WHERE t.workflow_id = w.id) AS status, \
     (SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id) AS step_count, \
     (SELECT max(t.finished_at) FROM tasks t WHERE t.workflow_id = w.id) AS last_finished";

fn summary_from_row(row: &Row) -> StoreResult<WorkflowSummary> {
    let status: WorkflowStatus = row.get::<_, &str>("status").parse().map_err(StoreError::internal)?;
    let last: Option<DateTime<Utc>> = row.get("last_finished");
    Ok(WorkflowSummary {
        workflow_id: WorkflowId(row.get("id")),
        name: row.get("name"),
        status,
        idempotency_key: row.get("idempotency_key"),
        cwom_issue_id: row.get("cwom_issue_id"),
        created_at: row.get("created_at"),
        finished_at: if status == WorkflowStatus::Running { None } else { last },
        step_count: row.get::<_, i64>("step_count") as u64,
    })
}

/// Stores a workflow whole inside `tx` (the caller commits): the workflow row, its steps and
/// their edges. A schedule's fire calls it in the transaction of its exactly-once key.
pub(super) async fn insert_workflow(
    tx: &deadpool_postgres::Transaction<'_>,
    wf: &NewWorkflow,
) -> Result<CreatedWorkflow, WorkflowCreateError> {
    let inserted = tx
        .query_opt(
            "INSERT INTO workflows (id, name, idempotency_key, cwom_issue_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id",
            &[&wf.id.0, &wf.name, &wf.idempotency_key, &wf.cwom_issue_id],
        )
        .await
        .map_err(pg_err)?;
    if inserted.is_none() {
        // The key's holder committed (ON CONFLICT waited for it if it was in flight).
        let row = tx
            .query_one("SELECT id FROM workflows WHERE idempotency_key = $1", &[&wf.idempotency_key])
            .await
            .map_err(pg_err)?;
        return Err(WorkflowCreateError::Duplicate { existing: WorkflowId(row.get(0)) });
    }
    let tasks: Vec<&NewTask> = wf.steps.iter().map(|s| &s.task).collect();
    let columns = Columns::of(&tasks);
    let statuses: Vec<&str> = wf.steps.iter().map(|s| NewWorkflow::initial_status(s).as_str()).collect();
    let keys: Vec<&str> = wf.steps.iter().map(|s| s.key.as_str()).collect();
    let modes: Vec<&str> = wf.steps.iter().map(|s| s.on_parent_failure.as_str()).collect();
    let pending: Vec<i32> = wf.steps.iter().map(|s| s.depends_on.len() as i32).collect();
    let mut params = columns.params();
    params.extend_from_slice(&[&statuses as &(dyn ToSql + Sync), &keys, &modes, &pending, &wf.id.0]);
    tx.execute(INSERT_STEPS.as_str(), &params).await.map_err(pg_err)?;
    let id_of: HashMap<&str, Uuid> = wf.steps.iter().map(|s| (s.key.as_str(), s.task.id.0)).collect();
    let (mut children, mut parents) = (Vec::new(), Vec::new());
    for s in &wf.steps {
        for p in &s.depends_on {
            children.push(s.task.id.0);
            parents.push(id_of[p.as_str()]);
        }
    }
    if !children.is_empty() {
        tx.execute(
            "INSERT INTO task_dependencies (task_id, parent_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])",
            &[&children, &parents],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(CreatedWorkflow {
        workflow_id: wf.id,
        status: WorkflowStatus::Running,
        steps: wf
            .steps
            .iter()
            .map(|s| CreatedStep { key: s.key.clone(), task_id: s.task.id, status: NewWorkflow::initial_status(s) })
            .collect(),
    })
}
/// What ends an approval, after `UPDATE tasks SET`: counted as an attempt that began when
/// the step began waiting for its decision (`updated_at`, set by the release), and
/// ended now ($2).
const APPROVAL_END: &str = "attempts = attempts + 1, started_at = updated_at, finished_at = $2, updated_at = $2, \
     locked_by = NULL, locked_until = NULL";

/// An approval step awaiting its decision (the fence of its end).
const AWAITING: &str = "type = 'approval' AND workflow_id IS NOT NULL AND status = 'waiting' AND pending_parents = 0";

#[async_trait]
impl WorkflowStore for PgStore {
    async fn decide(&self, id: TaskId, record: &DecisionRecord) -> Result<Task, DecideError> {
        let client = self.client().await?;
        let (status, error) = match record.decision {
            Decision::Approve => ("completed", None),
            Decision::Reject => ("failed", Some(record.rejection())),
        };
        let row = client
            .query_opt(
                &format!(
                    "UPDATE tasks SET status = $3, result = $4, last_error = $5, {APPROVAL_END} \
                     WHERE id = $1 AND {AWAITING} RETURNING {COLUMNS}"
                ),
                &[&id.0, &record.at, &status, &record.to_value(), &error],
            )
            .await
            .map_err(pg_err)?;
        if let Some(row) = row {
            return Ok(task_from_row(&row)?);
        }
        let row = client
            .query_opt("SELECT type, workflow_id IS NOT NULL, status FROM tasks WHERE id = $1", &[&id.0])
            .await
            .map_err(pg_err)?;
        let Some(row) = row else { return Err(DecideError::NotFound(id)) };
        let status = row.get::<_, &str>(2).parse().map_err(StoreError::internal)?;
        Err(DecideError::NotAwaiting { id, status, why: NotAwaiting::of(row.get(0), row.get(1), status) })
    }

    async fn expire_approvals(&self, limit: u32) -> StoreResult<Vec<Task>> {
        let client = self.client().await?;
        // SKIP LOCKED: a step a decision holds now is that decision's; the outer status
        // check is the fence once the lock is ours.
        let rows = client
            .query(
                &format!(
                    "UPDATE tasks SET status = 'failed', last_error = $1, {APPROVAL_END} \
                     WHERE id IN (SELECT id FROM tasks WHERE {AWAITING} \
                                    AND jsonb_typeof(payload->'expires_after_s') = 'number' \
                                    AND updated_at + (payload->>'expires_after_s')::float8 * interval '1 second' <= $2 \
                                  ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                       AND {AWAITING} RETURNING {COLUMNS}"
                ),
                &[&crate::approval::EXPIRED, &Utc::now(), &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(task_from_row).collect()
    }

    async fn spawn_steps(&self, spawn: &Spawn) -> Result<Spawned, SpawnError> {
        let mut tries = 1;
        loop {
            match self.spawn_once(spawn).await {
                Err(SpawnError::Store(e)) if e.code() == Some("40P01") && tries < SPAWN_TRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn retry_workflow(&self, id: WorkflowId) -> StoreResult<Option<StepsRetried>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Every step locked, in id order as the release trigger locks dependants: a parent
        // ending now waits for this commit, and its trigger then sees the reset edges.
        let steps = tx
            .query("SELECT id, status FROM tasks WHERE workflow_id = $1 ORDER BY id FOR UPDATE", &[&id.0])
            .await
            .map_err(pg_err)?;
        if steps.is_empty() {
            let exists = tx.query_opt("SELECT 1 FROM workflows WHERE id = $1", &[&id.0]).await.map_err(pg_err)?;
            return Ok(exists.map(|_| StepsRetried::default()));
        }
        let status: HashMap<Uuid, String> = steps.iter().map(|r| (r.get(0), r.get(1))).collect();
        let rerun: Vec<Uuid> =
            steps.iter().filter(|r| matches!(r.get::<_, &str>(1), "failed" | "cancelled")).map(|r| r.get(0)).collect();
        if rerun.is_empty() {
            return Ok(Some(StepsRetried::default()));
        }
        let edges: Vec<(Uuid, Uuid)> = tx
            .query("SELECT task_id, parent_id FROM task_dependencies WHERE task_id = ANY($1)", &[&rerun])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let pending = crate::store::workflows::pending_after_retry(&rerun, &edges, |p| {
            status.get(p).is_some_and(|s| s == "completed")
        });
        tx.execute(
            "UPDATE task_dependencies d SET counted = (p.status = 'completed') FROM tasks p \
             WHERE p.id = d.parent_id AND d.task_id = ANY($1)",
            &[&rerun],
        )
        .await
        .map_err(pg_err)?;
        // The same reset as `POST /tasks/{id}/retry`; a step that goes to `queued` fires V8's
        // wake-up trigger, one back to `waiting` waits for its parents' trigger.
        // An approval goes back to awaiting its decision (or its parents), never to `queued`;
        // its wait starts again now (`updated_at`), and so does its expiry.
        let requeued = tx
            .query(
                "UPDATE tasks SET status = CASE WHEN u.pending = 0 AND tasks.type <> 'approval' THEN 'queued' \
                                              ELSE 'waiting' END, \
                   pending_parents = u.pending, attempts = 0, run_at = now(), updated_at = now(), \
                   finished_at = NULL, started_at = NULL, locked_by = NULL, locked_until = NULL, \
                   result = CASE WHEN tasks.type = 'approval' THEN NULL ELSE tasks.result END \
                 FROM unnest($1::uuid[], $2::int4[]) AS u(id, pending) WHERE tasks.id = u.id RETURNING tasks.status",
                &[&rerun, &pending],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .filter(|r| r.get::<_, &str>(0) == "queued")
            .count() as u64;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(StepsRetried { requeued, reopened: pending.len() as u64 - requeued }))
    }

    async fn create_workflow(&self, wf: &NewWorkflow) -> Result<CreatedWorkflow, WorkflowCreateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let created = insert_workflow(&tx, wf).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(created)
    }

    async fn get_workflow(&self, id: WorkflowId) -> StoreResult<Option<WorkflowView>> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(&format!("SELECT {SUMMARY} FROM workflows w WHERE w.id = $1"), &[&id.0])
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let summary = summary_from_row(&row)?;
        let rows = client
            .query(
                "SELECT t.id, t.step_key, t.type, t.status, t.on_parent_failure, t.attempts, t.max_attempts, \
                   t.last_error, t.created_at, t.started_at, t.finished_at, \
                   array(SELECT p.step_key FROM task_dependencies d JOIN tasks p ON p.id = d.parent_id \
                         WHERE d.task_id = t.id ORDER BY p.step_key) \
                 FROM tasks t WHERE t.workflow_id = $1 ORDER BY t.id",
                &[&id.0],
            )
            .await
            .map_err(pg_err)?;
        let steps = rows
            .iter()
            .map(|r| {
                Ok(StepView {
                    task_id: TaskId(r.get(0)),
                    key: r.get::<_, Option<String>>(1).unwrap_or_default(),
                    task_type: r.get(2),
                    status: r.get::<_, &str>(3).parse().map_err(StoreError::internal)?,
                    on_parent_failure: r
                        .get::<_, Option<&str>>(4)
                        .unwrap_or("cancel")
                        .parse()
                        .map_err(StoreError::internal)?,
                    attempts: r.get(5),
                    max_attempts: r.get(6),
                    last_error: r.get(7),
                    created_at: r.get(8),
                    started_at: r.get(9),
                    finished_at: r.get(10),
                    depends_on: r.get::<_, Vec<Option<String>>>(11).into_iter().flatten().collect(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(WorkflowView { summary, steps }))
    }

    async fn list_workflows(&self, filter: &WorkflowFilter) -> StoreResult<Vec<WorkflowSummary>> {
        let client = self.client().await?;
        let mut conditions: Vec<String> = Vec::new();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        if let Some(name) = &filter.name {
            params.push(Box::new(name.clone()));
            conditions.push(format!("w.name = ${}", params.len()));
        }
        if let Some(before) = filter.before {
            params.push(Box::new(before.0));
            conditions.push(format!("w.id < ${}", params.len()));
        }
        let mut sql = format!("SELECT * FROM (SELECT {SUMMARY} FROM workflows w");
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        sql.push_str(") s");
        if let Some(status) = filter.status {
            params.push(Box::new(status.as_str()));
            sql.push_str(&format!(" WHERE s.status = ${}", params.len()));
        }
        params.push(Box::new(filter.limit as i64));
        sql.push_str(&format!(" ORDER BY s.id DESC LIMIT ${}", params.len()));
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&sql, &refs).await.map_err(pg_err)?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn unfinished_steps(&self, id: WorkflowId) -> StoreResult<Option<Vec<TaskId>>> {
        let client = self.client().await?;
        if client.query_opt("SELECT 1 FROM workflows WHERE id = $1", &[&id.0]).await.map_err(pg_err)?.is_none() {
            return Ok(None);
        }
        let rows = client
            .query(
                "SELECT id FROM tasks WHERE workflow_id = $1 AND status IN ('waiting', 'queued', 'running') ORDER BY id",
                &[&id.0],
            )
            .await
            .map_err(pg_err)?;
        Ok(Some(rows.iter().map(|r| TaskId(r.get(0))).collect()))
    }

    async fn step_counts(&self, ids: &[WorkflowId]) -> StoreResult<StepCounts> {
        if ids.is_empty() {
            return Ok(StepCounts::new());
        }
        let client = self.client().await?;
        let ids: Vec<Uuid> = ids.iter().map(|w| w.0).collect();
        let rows = client
            .query("SELECT workflow_id, status, count(*) FROM tasks WHERE workflow_id = ANY($1) GROUP BY 1, 2", &[&ids])
            .await
            .map_err(pg_err)?;
        let mut counts = StepCounts::new();
        for r in &rows {
            let status: TaskStatus = r.get::<_, &str>(1).parse().map_err(StoreError::internal)?;
            counts.entry(WorkflowId(r.get(0))).or_default().push((status, r.get::<_, i64>(2) as u64));
        }
        Ok(ordered_counts(counts))
    }
}
