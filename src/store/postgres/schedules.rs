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
use crate::schedule::{FireKind, FireOutcome, Overlap, Schedule, ScheduleSpec, Source};
use crate::store::error::{ScheduleError, StoreError, StoreResult};
use crate::store::schedules::{FireParams, Fired, ScheduleStore, SchedulesFingerprint};
use crate::task::{NewTask, TaskId};

const COLUMNS: &str = "name, cron, timezone, task, catch_up, catch_up_window_s, overlap, paused, source, \
                       created_at, updated_at, fired_through, last_fired_at, last_task_id, buffered_for";

fn schedule_from_row(row: &Row) -> StoreResult<Schedule> {
    let bad = |e: String| StoreError::internal(format!("unreadable schedule row: {e}"));
    let spec = ScheduleSpec::stored(
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        i64::from(row.get::<_, i32>(5)),
        row.get(6),
        row.get(7),
    )
    .map_err(bad)?;
    let source: &str = row.get(8);
    Ok(Schedule {
        spec,
        source: source.parse().map_err(bad)?,
        created_at: row.get(9),
        updated_at: row.get(10),
        fired_through: row.get(11),
        last_fired_at: row.get(12),
        last_task_id: row.get::<_, Option<Uuid>>(13).map(TaskId),
        buffered_for: row.get(14),
    })
}

/// A spec as the values of `name, cron, timezone, task, catch_up, catch_up_window_s, overlap,
/// paused, source`: `$1`..`$9` of both the insert and the replace.
struct SpecValues<'a> {
    spec: &'a ScheduleSpec,
    cron: &'a str,
    zone: &'a str,
    task: serde_json::Value,
    catch_up: &'a str,
    window: i32,
    overlap: &'a str,
    source: &'a str,
}

impl<'a> SpecValues<'a> {
    fn of(spec: &'a ScheduleSpec, source: Source) -> Self {
        SpecValues {
            spec,
            cron: spec.timing.cron.as_str(),
            zone: spec.timing.zone.name(),
            task: serde_json::to_value(&spec.task).unwrap_or_default(),
            catch_up: spec.catch_up.as_str(),
            window: spec.catch_up_window_s as i32,
            overlap: spec.overlap.as_str(),
            source: source.as_str(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 9] {
        [
            &self.spec.name,
            &self.cron,
            &self.zone,
            &self.task,
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

/// Records a fired task on its key and its schedule.
async fn record_fired(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    kind: FireKind,
    at: DateTime<Utc>,
    task: TaskId,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE schedule_fires SET outcome = 'fired', task_id = $4 \
         WHERE schedule_name = $1 AND kind = $2 AND scheduled_for = $3",
        &[&name, &kind.as_str(), &at, &task.0],
    )
    .await
    .map_err(pg_err)?;
    tx.execute("UPDATE schedules SET last_fired_at = now(), last_task_id = $2 WHERE name = $1", &[&name, &task.0])
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
                    "INSERT INTO schedules (name, cron, timezone, task, catch_up, catch_up_window_s, overlap, \
                       paused, source, fired_through) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now()) \
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
                    "UPDATE schedules SET cron = $2, timezone = $3, task = $4, catch_up = $5, \
                       catch_up_window_s = $6, overlap = $7, paused = $8, source = $9, \
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
                "SELECT id, status FROM tasks WHERE schedule_name = $1 AND status IN ('queued', 'running') \
                 ORDER BY id FOR UPDATE",
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
                 WHERE id = ANY($1) AND status IN ('queued', 'running')",
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
        let task_id = insert_task(&tx, &p.task).await?;
        record_fired(&tx, &p.name, p.kind, p.scheduled_for, task_id).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Fired::Done(FireOutcome::Fired { task_id, cancelled }))
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

    async fn release_buffered(&self, name: &str, task: &NewTask) -> Result<Option<FireOutcome>, ScheduleError> {
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
                "SELECT 1 FROM tasks WHERE schedule_name = $1 AND status IN ('queued', 'running') LIMIT 1",
                &[&name],
            )
            .await
            .map_err(pg_err)?;
        if busy.is_some() {
            return Ok(None);
        }
        let mut task = task.clone();
        task.scheduled_for = Some(tick);
        let task_id = insert_task(&tx, &task).await?;
        record_fired(&tx, name, FireKind::Tick, tick, task_id).await?;
        tx.execute("UPDATE schedules SET buffered_for = NULL WHERE name = $1", &[&name]).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(FireOutcome::Fired { task_id, cancelled: Vec::new() }))
    }
}
