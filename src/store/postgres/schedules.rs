//! Schedules on PostgreSQL: [`ScheduleStore`]. The fire transaction holds the schedule's
//! row `FOR UPDATE`, so daemons firing the same tick at once queue on it; the loser finds
//! the cursor (or the `schedule_fires` key) already past the tick. The fired task's INSERT
//! wakes the fleet through the insert trigger's NOTIFY, at commit.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::tasks::{Columns, INSERT_UNNEST};
use super::{pg_err, PgStore, CANCEL_CHANNEL};
use crate::schedule::{FireKind, FireOutcome, Overlap, Schedule, ScheduleSpec, Source, Started, Work};
use crate::store::error::{ScheduleError, StoreError, StoreResult, WorkflowCreateError};
use crate::store::schedules::{FireParams, Fired, ScheduleStore, SchedulesFingerprint};
use crate::task::{NewTask, TaskId};
use crate::workflow::WorkflowId;

const COLUMNS: &str = "name, cron, timezone, target, template, catch_up, catch_up_window_s, overlap, paused, \
                       source, created_at, updated_at, fired_through, last_fired_at, last_task_id, buffered_for, \
                       last_workflow_id";

fn schedule_from_row(row: &Row) -> StoreResult<Schedule> {
    let bad = |e: String| StoreError::internal(format!("unreadable schedule row: {e}"));
    let spec = ScheduleSpec::stored(
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        i64::from(row.get::<_, i32>(6)),
        row.get(7),
        row.get(8),
    )
    .map_err(bad)?;
    let source: &str = row.get(9);
    Ok(Schedule {
        spec,
        source: source.parse().map_err(bad)?,
        created_at: row.get(10),
        updated_at: row.get(11),
        fired_through: row.get(12),
        last_fired_at: row.get(13),
        last_task_id: row.get::<_, Option<Uuid>>(14).map(TaskId),
        buffered_for: row.get(15),
        last_workflow_id: row.get::<_, Option<Uuid>>(16).map(WorkflowId),
    })
}

/// A spec as the values of `name, cron, timezone, target, template, catch_up,
/// catch_up_window_s, overlap, paused, source`: `$1`..`$10` of both the insert and the replace.
struct SpecValues<'a> {
    spec: &'a ScheduleSpec,
    cron: &'a str,
    zone: &'a str,
    target: &'static str,
    template: serde_json::Value,
    catch_up: &'a str,
    window: i32,
    overlap: &'a str,
    source: &'a str,
}

impl<'a> SpecValues<'a> {
    fn of(spec: &'a ScheduleSpec, source: Source) -> Self {
        let (target, template) = spec.target.stored();
        SpecValues {
            spec,
            cron: spec.timing.cron.as_str(),
            zone: spec.timing.zone.name(),
            target,
            template,
            catch_up: spec.catch_up.as_str(),
            window: spec.catch_up_window_s as i32,
            overlap: spec.overlap.as_str(),
            source: source.as_str(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.spec.name,
            &self.cron,
            &self.zone,
            &self.target,
            &self.template,
            &self.catch_up,
            &self.window,
            &self.overlap,
            &self.spec.paused,
            &self.source,
        ]
    }
}

/// Inserts one task inside `tx`; answers its id.
async fn insert_task(tx: &deadpool_postgres::Transaction<'_>, task: &NewTask) -> StoreResult<TaskId> {
    let refs = [task];
    let columns = Columns::of(&refs);
    let stmt = tx.prepare_cached(&format!("{} RETURNING id", *INSERT_UNNEST)).await.map_err(pg_err)?;
    let row = tx.query_one(&stmt, &columns.params()).await.map_err(pg_err)?;
    Ok(TaskId(row.get(0)))
}

/// Starts a fire's work inside `tx`: the task, or the workflow with its steps.
async fn insert_work(tx: &deadpool_postgres::Transaction<'_>, work: &Work) -> StoreResult<Started> {
    match work {
        Work::Task(task) => Ok(Started::Task(insert_task(tx, task).await?)),
        Work::Workflow(wf) => match super::workflows::insert_workflow(tx, wf).await {
            Ok(created) => Ok(Started::Workflow(created.workflow_id)),
            Err(WorkflowCreateError::Store(e)) => Err(e),
            // A fire's workflow has no idempotency key: its key is the fire's.
            Err(WorkflowCreateError::Duplicate { existing }) => {
                Err(StoreError::internal(format!("a schedule's workflow met the key of workflow {existing}")))
            }
        },
    }
}

/// Records what a fire started on its key and its schedule.
async fn record_fired(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    kind: FireKind,
    at: DateTime<Utc>,
    started: Started,
) -> StoreResult<()> {
    let (task, workflow) = match started {
        Started::Task(t) => (Some(t.0), None),
        Started::Workflow(w) => (None, Some(w.0)),
    };
    tx.execute(
        "UPDATE schedule_fires SET outcome = 'fired', task_id = $4, workflow_id = $5 \
         WHERE schedule_name = $1 AND kind = $2 AND scheduled_for = $3",
        &[&name, &kind.as_str(), &at, &task, &workflow],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "UPDATE schedules SET last_fired_at = now(), last_task_id = $2, last_workflow_id = $3 WHERE name = $1",
        &[&name, &task, &workflow],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(&self, spec: &ScheduleSpec, source: Source) -> Result<Schedule, ScheduleError> {
        let client = self.client().await?;
        let values = SpecValues::of(spec, source);
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO schedules (name, cron, timezone, target, template, catch_up, catch_up_window_s, \
                       overlap, paused, source, fired_through) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now()) \
                     ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
                ),
                &values.params(),
            )
            .await
            .map_err(pg_err)?;
        match row {
            Some(row) => Ok(schedule_from_row(&row)?),
            None => Err(ScheduleError::Exists(spec.name.clone())),
        }
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {COLUMNS} FROM schedules WHERE name = $1"), &[&name])
            .await
            .map_err(pg_err)?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        let client = self.client().await?;
        let rows =
            client.query(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"), &[]).await.map_err(pg_err)?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn schedules_fingerprint(&self) -> StoreResult<SchedulesFingerprint> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*), max(updated_at), count(buffered_for) FROM schedules", &[])
            .await
            .map_err(pg_err)?;
        Ok(SchedulesFingerprint { count: row.get(0), latest_change: row.get(1), buffered: row.get(2) })
    }

    async fn replace_schedule(&self, spec: &ScheduleSpec, source: Source) -> Result<Schedule, ScheduleError> {
        let client = self.client().await?;
        let values = SpecValues::of(spec, source);
        // clock_timestamp(): a replace in the same transaction as its read still gets a
        // version of its own.
        let row = client
            .query_opt(
                &format!(
                    "UPDATE schedules SET cron = $2, timezone = $3, target = $4, template = $5, catch_up = $6, \
                       catch_up_window_s = $7, overlap = $8, paused = $9, source = $10, \
                       updated_at = clock_timestamp(), fired_through = greatest(fired_through, now()) \
                     WHERE name = $1 RETURNING {COLUMNS}"
                ),
                &values.params(),
            )
            .await
            .map_err(pg_err)?;
        match row {
            Some(row) => Ok(schedule_from_row(&row)?),
            None => Err(ScheduleError::NotFound(spec.name.clone())),
        }
    }

    async fn delete_schedule(&self, name: &str) -> Result<(), ScheduleError> {
        let client = self.client().await?;
        let n = client.execute("DELETE FROM schedules WHERE name = $1", &[&name]).await.map_err(pg_err)?;
        if n == 0 {
            return Err(ScheduleError::NotFound(name.to_string()));
        }
        Ok(())
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<Schedule, ScheduleError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE schedules SET paused = $2, updated_at = clock_timestamp(), \
                       fired_through = CASE WHEN paused AND NOT $2 THEN greatest(fired_through, now()) \
                                            ELSE fired_through END \
                     WHERE name = $1 RETURNING {COLUMNS}"
                ),
                &[&name, &paused],
            )
            .await
            .map_err(pg_err)?;
        match row {
            Some(row) => Ok(schedule_from_row(&row)?),
            None => Err(ScheduleError::NotFound(name.to_string())),
        }
    }

    async fn fire(&self, p: &FireParams) -> Result<Fired, ScheduleError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let Some(row) = tx
            .query_opt(
                "SELECT updated_at, paused, fired_through, overlap, buffered_for FROM schedules \
                 WHERE name = $1 FOR UPDATE",
                &[&p.name],
            )
            .await
            .map_err(pg_err)?
        else {
            return Err(ScheduleError::NotFound(p.name.clone()));
        };
        let version: DateTime<Utc> = row.get(0);
        if version != p.version {
            return Ok(Fired::Stale);
        }
        let (paused, fired_through): (bool, DateTime<Utc>) = (row.get(1), row.get(2));
        let buffered_for: Option<DateTime<Utc>> = row.get(4);
        let tick = p.kind == FireKind::Tick;
        if tick && paused {
            return Ok(Fired::Done(FireOutcome::Paused));
        }
        if tick && fired_through >= p.scheduled_for {
            return Ok(Fired::Done(FireOutcome::AlreadyDone));
        }
        let keyed = tx
            .execute(
                "INSERT INTO schedule_fires (schedule_name, kind, scheduled_for, outcome) VALUES ($1, $2, $3, 'fired') \
                 ON CONFLICT DO NOTHING",
                &[&p.name, &p.kind.as_str(), &p.scheduled_for],
            )
            .await
            .map_err(pg_err)?;
        if tick {
            tx.execute(
                "UPDATE schedules SET fired_through = greatest(fired_through, $2) WHERE name = $1",
                &[&p.name, &p.scheduled_for],
            )
            .await
            .map_err(pg_err)?;
        }
        if keyed == 0 {
            tx.commit().await.map_err(pg_err)?;
            return Ok(Fired::Done(FireOutcome::AlreadyDone));
        }
        let overlap: Overlap =
            if tick { row.get::<_, &str>(3).parse().map_err(StoreError::internal)? } else { Overlap::Allow };
        let active: Vec<(Uuid, String)> = if overlap == Overlap::Allow {
            Vec::new()
        } else {
            tx.query(
                "SELECT id, status FROM tasks WHERE schedule_name = $1 \
                   AND status IN ('waiting', 'queued', 'running') ORDER BY id FOR UPDATE",
                &[&p.name],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        };
        let held_back = match overlap {
            _ if active.is_empty() => None,
            Overlap::Skip => Some("skipped"),
            Overlap::BufferOne if buffered_for.is_none() => Some("buffered"),
            Overlap::BufferOne => Some("skipped"),
            Overlap::Allow | Overlap::CancelOther => None,
        };
        if let Some(outcome) = held_back {
            tx.execute(
                "UPDATE schedule_fires SET outcome = $4 WHERE schedule_name = $1 AND kind = $2 AND scheduled_for = $3",
                &[&p.name, &p.kind.as_str(), &p.scheduled_for, &outcome],
            )
            .await
            .map_err(pg_err)?;
            if outcome == "buffered" {
                tx.execute("UPDATE schedules SET buffered_for = $2 WHERE name = $1", &[&p.name, &p.scheduled_for])
                    .await
                    .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)?;
            return Ok(Fired::Done(if outcome == "buffered" { FireOutcome::Buffered } else { FireOutcome::Skipped }));
        }
        let mut cancelled = Vec::new();
        if overlap == Overlap::CancelOther && !active.is_empty() {
            let ids: Vec<Uuid> = active.iter().map(|(id, _)| *id).collect();
            let message = format!("cancelled by schedule {} (overlap: cancel_other)", p.name);
            tx.execute(
                "UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now(), \
                   last_error = CASE WHEN status = 'running' THEN $2 ELSE last_error END, \
                   locked_by = NULL, locked_until = NULL \
                 WHERE id = ANY($1) AND status IN ('waiting', 'queued', 'running')",
                &[&ids, &message],
            )
            .await
            .map_err(pg_err)?;
            let running: Vec<String> =
                active.iter().filter(|(_, s)| s == "running").map(|(id, _)| id.to_string()).collect();
            if !running.is_empty() {
                tx.execute("SELECT pg_notify($1, x) FROM unnest($2::text[]) AS x", &[&CANCEL_CHANNEL, &running])
                    .await
                    .map_err(pg_err)?;
            }
            cancelled = ids.into_iter().map(TaskId).collect();
        }
        let started = insert_work(&tx, &p.work).await?;
        record_fired(&tx, &p.name, p.kind, p.scheduled_for, started).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Fired::Done(FireOutcome::Fired { started, cancelled }))
    }

    async fn pass_ticks(&self, name: &str, through: DateTime<Utc>) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE schedules SET fired_through = $2 WHERE name = $1 AND fired_through < $2",
                &[&name, &through],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn release_buffered(&self, name: &str, work: &Work) -> Result<Option<FireOutcome>, ScheduleError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let Some(row) = tx
            .query_opt("SELECT buffered_for FROM schedules WHERE name = $1 FOR UPDATE", &[&name])
            .await
            .map_err(pg_err)?
        else {
            return Err(ScheduleError::NotFound(name.to_string()));
        };
        let Some(tick) = row.get::<_, Option<DateTime<Utc>>>(0) else { return Ok(None) };
        let busy = tx
            .query_opt(
                "SELECT 1 FROM tasks WHERE schedule_name = $1 AND status IN ('waiting', 'queued', 'running') LIMIT 1",
                &[&name],
            )
            .await
            .map_err(pg_err)?;
        if busy.is_some() {
            return Ok(None);
        }
        let started = insert_work(&tx, &work.clone().at(tick)).await?;
        record_fired(&tx, name, FireKind::Tick, tick, started).await?;
        tx.execute("UPDATE schedules SET buffered_for = NULL WHERE name = $1", &[&name]).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(FireOutcome::Fired { started, cancelled: Vec::new() }))
    }
}
