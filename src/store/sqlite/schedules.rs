//! Schedules on SQLite: [`ScheduleStore`]. The fire runs in one immediate transaction (the
//! file has one writer at a time, so it holds the schedule as `FOR UPDATE` would); the
//! daemon that fired wakes its own worker through the intake.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::tasks::insert_task;
use super::{conversion, micros, sql_err, time_from_sql, SqliteStore};
use crate::schedule::{FireKind, FireOutcome, Overlap, Schedule, ScheduleSpec, Source, Started, Work};
use crate::store::error::{ScheduleError, StoreError, StoreResult, WorkflowCreateError};
use crate::store::schedules::{FireParams, Fired, ScheduleStore, SchedulesFingerprint};
use crate::task::TaskId;
use crate::workflow::WorkflowId;

const COLUMNS: &str = "name, cron, timezone, target, template, catch_up, catch_up_window_s, overlap, paused, \
                       source, created_at, updated_at, fired_through, last_fired_at, last_task_id, buffered_for, \
                       last_workflow_id";

fn time(row: &Row, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    time_from_sql(row.get_ref(idx)?).map_err(|m| conversion(idx, m))
}

fn opt_time(row: &Row, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        v => time_from_sql(v).map(Some).map_err(|m| conversion(idx, m)),
    }
}

fn schedule_from_row(row: &Row) -> rusqlite::Result<Schedule> {
    let template: String = row.get(4)?;
    let template: serde_json::Value = serde_json::from_str(&template).map_err(|e| conversion(4, e.to_string()))?;
    let cron: String = row.get(1)?;
    let zone: String = row.get(2)?;
    let target: String = row.get(3)?;
    let catch_up: String = row.get(5)?;
    let overlap: String = row.get(7)?;
    let spec = ScheduleSpec::stored(
        row.get(0)?,
        &cron,
        &zone,
        &target,
        template,
        &catch_up,
        row.get(6)?,
        &overlap,
        row.get(8)?,
    )
    .map_err(|m| conversion(0, m))?;
    let source: String = row.get(9)?;
    let uuid_at = |idx: usize| -> rusqlite::Result<Option<uuid::Uuid>> {
        let text: Option<String> = row.get(idx)?;
        text.map(|s| s.parse().map_err(|e: uuid::Error| conversion(idx, e.to_string()))).transpose()
    };
    Ok(Schedule {
        spec,
        source: source.parse().map_err(|m| conversion(9, m))?,
        created_at: time(row, 10)?,
        updated_at: time(row, 11)?,
        fired_through: time(row, 12)?,
        last_fired_at: opt_time(row, 13)?,
        last_task_id: uuid_at(14)?.map(TaskId),
        buffered_for: opt_time(row, 15)?,
        last_workflow_id: uuid_at(16)?.map(WorkflowId),
    })
}

fn get(conn: &Connection, name: &str) -> StoreResult<Option<Schedule>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM schedules WHERE name = ?1"))
        .map_err(sql_err)?
        .query_row([name], schedule_from_row)
        .optional()
        .map_err(sql_err)
}

/// A version later than `previous`: SQLite times are the daemon's clock, which two writes
/// in one microsecond would otherwise share.
fn next_version(previous: i64) -> i64 {
    micros(Utc::now()).max(previous + 1)
}

/// Starts a fire's work inside `tx`: the task, or the workflow with its steps.
fn insert_work(tx: &rusqlite::Transaction<'_>, work: &Work, now: i64) -> StoreResult<Started> {
    match work {
        Work::Task(task) => {
            insert_task(tx, task, now)?;
            Ok(Started::Task(task.id))
        }
        Work::Workflow(wf) => match super::workflows::insert_workflow(tx, wf, now)? {
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
fn record_fired(conn: &Connection, name: &str, kind: FireKind, at: i64, started: Started, now: i64) -> StoreResult<()> {
    let (task, workflow) = match started {
        Started::Task(t) => (Some(t.to_string()), None),
        Started::Workflow(w) => (None, Some(w.to_string())),
    };
    conn.execute(
        "UPDATE schedule_fires SET outcome = 'fired', task_id = ?4, workflow_id = ?5 \
         WHERE schedule_name = ?1 AND kind = ?2 AND scheduled_for = ?3",
        params![name, kind.as_str(), at, task, workflow],
    )
    .map_err(sql_err)?;
    conn.execute(
        "UPDATE schedules SET last_fired_at = ?2, last_task_id = ?3, last_workflow_id = ?4 WHERE name = ?1",
        params![name, now, task, workflow],
    )
    .map_err(sql_err)?;
    Ok(())
}

fn active(conn: &Connection, name: &str) -> StoreResult<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, status FROM tasks WHERE schedule_name = ?1 AND status IN ('waiting', 'queued', 'running') \
             ORDER BY id",
        )
        .map_err(sql_err)?;
    let rows = stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
}

fn fire(conn: &mut Connection, p: &FireParams) -> Result<Fired, ScheduleError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
    let row: Option<(i64, bool, i64, String, Option<i64>)> = tx
        .query_row(
            "SELECT updated_at, paused, fired_through, overlap, buffered_for FROM schedules WHERE name = ?1",
            [&p.name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(sql_err)?;
    let Some((version, paused, fired_through, overlap, buffered_for)) = row else {
        return Err(ScheduleError::NotFound(p.name.clone()));
    };
    if version != micros(p.version) {
        return Ok(Fired::Stale);
    }
    let tick = p.kind == FireKind::Tick;
    let at = micros(p.scheduled_for);
    if tick && paused {
        return Ok(Fired::Done(FireOutcome::Paused));
    }
    if tick && fired_through >= at {
        return Ok(Fired::Done(FireOutcome::AlreadyDone));
    }
    let now = micros(Utc::now());
    let keyed = tx
        .execute(
            "INSERT INTO schedule_fires (schedule_name, kind, scheduled_for, outcome, fired_at) \
             VALUES (?1, ?2, ?3, 'fired', ?4) ON CONFLICT DO NOTHING",
            params![p.name, p.kind.as_str(), at, now],
        )
        .map_err(sql_err)?;
    if tick {
        tx.execute("UPDATE schedules SET fired_through = max(fired_through, ?2) WHERE name = ?1", params![p.name, at])
            .map_err(sql_err)?;
    }
    if keyed == 0 {
        tx.commit().map_err(sql_err)?;
        return Ok(Fired::Done(FireOutcome::AlreadyDone));
    }
    let overlap: Overlap = if tick { overlap.parse().map_err(StoreError::internal)? } else { Overlap::Allow };
    let active = if overlap == Overlap::Allow { Vec::new() } else { active(&tx, &p.name)? };
    let held_back = match overlap {
        _ if active.is_empty() => None,
        Overlap::Skip => Some("skipped"),
        Overlap::BufferOne if buffered_for.is_none() => Some("buffered"),
        Overlap::BufferOne => Some("skipped"),
        Overlap::Allow | Overlap::CancelOther => None,
    };
    if let Some(outcome) = held_back {
        tx.execute(
            "UPDATE schedule_fires SET outcome = ?4 WHERE schedule_name = ?1 AND kind = ?2 AND scheduled_for = ?3",
            params![p.name, p.kind.as_str(), at, outcome],
        )
        .map_err(sql_err)?;
        if outcome == "buffered" {
            tx.execute("UPDATE schedules SET buffered_for = ?2 WHERE name = ?1", params![p.name, at])
                .map_err(sql_err)?;
        }
        tx.commit().map_err(sql_err)?;
        return Ok(Fired::Done(if outcome == "buffered" { FireOutcome::Buffered } else { FireOutcome::Skipped }));
    }
    let mut cancelled = Vec::new();
    if overlap == Overlap::CancelOther {
        let message = format!("cancelled by schedule {} (overlap: cancel_other)", p.name);
        let mut stmt = tx
            .prepare_cached(
                "UPDATE tasks SET status = 'cancelled', finished_at = ?2, updated_at = ?2, \
                   last_error = CASE WHEN status = 'running' THEN ?3 ELSE last_error END, \
                   locked_by = NULL, locked_until = NULL \
                 WHERE id = ?1 AND status IN ('waiting', 'queued', 'running')",
            )
            .map_err(sql_err)?;
        // SQLite runs a row trigger as each row changes, so a cancelled step's `run`
        // dependant can be queued by the release before its own turn here: it is still in
        // `active` (and still unfinished), so its turn cancels it.
        for (id, _) in &active {
            stmt.execute(params![id, now, message]).map_err(sql_err)?;
            cancelled.push(id.parse().map_err(|e: uuid::Error| StoreError::internal(e.to_string()))?);
        }
    }
    let started = insert_work(&tx, &p.work, now)?;
    record_fired(&tx, &p.name, p.kind, at, started, now)?;
    tx.commit().map_err(sql_err)?;
    Ok(Fired::Done(FireOutcome::Fired { started, cancelled }))
}

fn release_buffered(conn: &mut Connection, name: &str, work: &Work) -> Result<Option<FireOutcome>, ScheduleError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
    let row: Option<Option<i64>> = tx
        .query_row("SELECT buffered_for FROM schedules WHERE name = ?1", [name], |r| r.get(0))
        .optional()
        .map_err(sql_err)?;
    let Some(buffered) = row else { return Err(ScheduleError::NotFound(name.to_string())) };
    let Some(at) = buffered else { return Ok(None) };
    if !active(&tx, name)?.is_empty() {
        return Ok(None);
    }
    let tick = DateTime::from_timestamp_micros(at).ok_or_else(|| StoreError::internal("buffered tick out of range"))?;
    let now = micros(Utc::now());
    let started = insert_work(&tx, &work.clone().at(tick), now)?;
    record_fired(&tx, name, FireKind::Tick, at, started, now)?;
    tx.execute("UPDATE schedules SET buffered_for = NULL WHERE name = ?1", [name]).map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    Ok(Some(FireOutcome::Fired { started, cancelled: Vec::new() }))
}

/// A spec as the values of `name, cron, timezone, target, template, catch_up,
/// catch_up_window_s, overlap, paused, source`: `?1`..`?10` of both the insert and the
/// replace (`template` as JSON text).
struct SpecValues<'a> {
    spec: &'a ScheduleSpec,
    cron: &'a str,
    zone: &'a str,
    target: &'static str,
    template: String,
    catch_up: &'a str,
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
            template: template.to_string(),
            catch_up: spec.catch_up.as_str(),
            overlap: spec.overlap.as_str(),
            source: source.as_str(),
        }
    }

    /// The ten values, then `last` as `?11`.
    fn with<'b>(&'b self, last: &'b i64) -> [&'b dyn ToSql; 11] {
        [
            &self.spec.name,
            &self.cron,
            &self.zone,
            &self.target,
            &self.template,
            &self.catch_up,
            &self.spec.catch_up_window_s,
            &self.overlap,
            &self.spec.paused,
            &self.source,
            last,
        ]
    }
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn create_schedule(&self, spec: &ScheduleSpec, source: Source) -> Result<Schedule, ScheduleError> {
        let spec = spec.clone();
        self.call(move |conn| {
            let now = micros(Utc::now());
            let n = conn
                .execute(
                    "INSERT INTO schedules (name, cron, timezone, target, template, catch_up, catch_up_window_s, \
                       overlap, paused, source, created_at, updated_at, fired_through) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?11) ON CONFLICT (name) DO NOTHING",
                    SpecValues::of(&spec, source).with(&now).as_slice(),
                )
                .map_err(sql_err)?;
            if n == 0 {
                return Ok(Err(ScheduleError::Exists(spec.name.clone())));
            }
            Ok(get(conn, &spec.name)?.ok_or_else(|| StoreError::internal("created schedule missing").into()))
        })
        .await?
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let name = name.to_string();
        self.call(move |conn| get(conn, &name)).await
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.call(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name")).map_err(sql_err)?;
            let rows = stmt.query_map([], schedule_from_row).map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
        })
        .await
    }

    async fn schedules_fingerprint(&self) -> StoreResult<SchedulesFingerprint> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT count(*), max(updated_at), count(buffered_for) FROM schedules")
                .map_err(sql_err)?;
            stmt.query_row([], |row| {
                Ok(SchedulesFingerprint { count: row.get(0)?, latest_change: opt_time(row, 1)?, buffered: row.get(2)? })
            })
            .map_err(sql_err)
        })
        .await
    }

    async fn replace_schedule(&self, spec: &ScheduleSpec, source: Source) -> Result<Schedule, ScheduleError> {
        let spec = spec.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
            let Some(old) = get(&tx, &spec.name)? else {
                return Ok(Err(ScheduleError::NotFound(spec.name.clone())));
            };
            let version = next_version(micros(old.updated_at));
            tx.execute(
                "UPDATE schedules SET cron = ?2, timezone = ?3, target = ?4, template = ?5, catch_up = ?6, \
                   catch_up_window_s = ?7, overlap = ?8, paused = ?9, source = ?10, updated_at = ?11, \
                   fired_through = max(fired_through, ?11) WHERE name = ?1",
                SpecValues::of(&spec, source).with(&version).as_slice(),
            )
            .map_err(sql_err)?;
            let new = get(&tx, &spec.name)?.ok_or_else(|| StoreError::internal("replaced schedule missing"))?;
            tx.commit().map_err(sql_err)?;
            Ok(Ok(new))
        })
        .await?
    }

    async fn delete_schedule(&self, name: &str) -> Result<(), ScheduleError> {
        let name = name.to_string();
        self.call(move |conn| {
            let n = conn.execute("DELETE FROM schedules WHERE name = ?1", [&name]).map_err(sql_err)?;
            Ok(if n == 0 { Err(ScheduleError::NotFound(name)) } else { Ok(()) })
        })
        .await?
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<Schedule, ScheduleError> {
        let name = name.to_string();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
            let Some(old) = get(&tx, &name)? else { return Ok(Err(ScheduleError::NotFound(name))) };
            let version = next_version(micros(old.updated_at));
            tx.execute(
                "UPDATE schedules SET paused = ?2, updated_at = ?3, \
                   fired_through = CASE WHEN paused AND NOT ?2 THEN max(fired_through, ?3) ELSE fired_through END \
                 WHERE name = ?1",
                params![name, paused, version],
            )
            .map_err(sql_err)?;
            let new = get(&tx, &name)?.ok_or_else(|| StoreError::internal("paused schedule missing"))?;
            tx.commit().map_err(sql_err)?;
            Ok(Ok(new))
        })
        .await?
    }

    async fn fire(&self, p: &FireParams) -> Result<Fired, ScheduleError> {
        let p = p.clone();
        self.call(move |conn| Ok(fire(conn, &p))).await?
    }

    async fn pass_ticks(&self, name: &str, through: DateTime<Utc>) -> StoreResult<()> {
        let name = name.to_string();
        self.call(move |conn| {
            conn.execute(
                "UPDATE schedules SET fired_through = ?2 WHERE name = ?1 AND fired_through < ?2",
                params![name, micros(through)],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn release_buffered(&self, name: &str, work: &Work) -> Result<Option<FireOutcome>, ScheduleError> {
        let (name, work) = (name.to_string(), work.clone());
        self.call(move |conn| Ok(release_buffered(conn, &name, &work))).await?
    }
}
