//! Schedules on SQLite: [`ScheduleStore`]. The fire runs in one immediate transaction (the
//! file has one writer at a time, so it holds the schedule as `FOR UPDATE` would); the
//! daemon that fired wakes its own worker through the intake.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::tasks::insert_task;
use super::{conversion, micros, sql_err, time_from_sql, SqliteStore};
use crate::schedule::{FireKind, FireOutcome, Overlap, Schedule, ScheduleSpec, Source};
use crate::store::error::{ScheduleError, StoreError, StoreResult};
use crate::store::schedules::{FireParams, Fired, ScheduleStore, SchedulesFingerprint};
use crate::task::{NewTask, TaskId};

const COLUMNS: &str = "name, cron, timezone, task, catch_up, catch_up_window_s, overlap, paused, source, \
                       created_at, updated_at, fired_through, last_fired_at, last_task_id, buffered_for";

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
    let task: String = row.get(3)?;
    let task: serde_json::Value = serde_json::from_str(&task).map_err(|e| conversion(3, e.to_string()))?;
    let cron: String = row.get(1)?;
    let zone: String = row.get(2)?;
    let catch_up: String = row.get(4)?;
    let overlap: String = row.get(6)?;
    let spec = ScheduleSpec::stored(row.get(0)?, &cron, &zone, task, &catch_up, row.get(5)?, &overlap, row.get(7)?)
        .map_err(|m| conversion(0, m))?;
    let source: String = row.get(8)?;
    let last_task: Option<String> = row.get(13)?;
    Ok(Schedule {
        spec,
        source: source.parse().map_err(|m| conversion(8, m))?,
        created_at: time(row, 9)?,
        updated_at: time(row, 10)?,
        fired_through: time(row, 11)?,
        last_fired_at: opt_time(row, 12)?,
        last_task_id: last_task
            .map(|s| s.parse().map_err(|e: uuid::Error| conversion(13, e.to_string())))
            .transpose()?,
        buffered_for: opt_time(row, 14)?,
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

fn record_fired(conn: &Connection, name: &str, kind: FireKind, at: i64, task: TaskId, now: i64) -> StoreResult<()> {
    conn.execute(
        "UPDATE schedule_fires SET outcome = 'fired', task_id = ?4 \
         WHERE schedule_name = ?1 AND kind = ?2 AND scheduled_for = ?3",
        params![name, kind.as_str(), at, task.to_string()],
    )
    .map_err(sql_err)?;
    conn.execute(
        "UPDATE schedules SET last_fired_at = ?2, last_task_id = ?3 WHERE name = ?1",
        params![name, now, task.to_string()],
    )
    .map_err(sql_err)?;
    Ok(())
}

fn active(conn: &Connection, name: &str) -> StoreResult<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, status FROM tasks WHERE schedule_name = ?1 AND status IN ('queued', 'running') ORDER BY id",
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
                 WHERE id = ?1 AND status IN ('queued', 'running')",
            )
            .map_err(sql_err)?;
        for (id, _) in &active {
            stmt.execute(params![id, now, message]).map_err(sql_err)?;
            cancelled.push(id.parse().map_err(|e: uuid::Error| StoreError::internal(e.to_string()))?);
        }
    }
    insert_task(&tx, &p.task, now)?;
    record_fired(&tx, &p.name, p.kind, at, p.task.id, now)?;
    tx.commit().map_err(sql_err)?;
    Ok(Fired::Done(FireOutcome::Fired { task_id: p.task.id, cancelled }))
}

fn release_buffered(conn: &mut Connection, name: &str, task: &NewTask) -> Result<Option<FireOutcome>, ScheduleError> {
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
    let mut task = task.clone();
    task.scheduled_for = DateTime::from_timestamp_micros(at);
    let now = micros(Utc::now());
    insert_task(&tx, &task, now)?;
    record_fired(&tx, name, FireKind::Tick, at, task.id, now)?;
    tx.execute("UPDATE schedules SET buffered_for = NULL WHERE name = ?1", [name]).map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    Ok(Some(FireOutcome::Fired { task_id: task.id, cancelled: Vec::new() }))
}

/// A spec as the values of `name, cron, timezone, task, catch_up, catch_up_window_s, overlap,
/// paused, source`: `?1`..`?9` of both the insert and the replace (`task` as JSON text).
struct SpecValues<'a> {
    spec: &'a ScheduleSpec,
    cron: &'a str,
    zone: &'a str,
    task: &'a str,
    catch_up: &'a str,
    overlap: &'a str,
    source: &'a str,
}

impl<'a> SpecValues<'a> {
    fn of(spec: &'a ScheduleSpec, task: &'a str, source: Source) -> Self {
        SpecValues {
            spec,
            cron: spec.timing.cron.as_str(),
            zone: spec.timing.zone.name(),
            task,
            catch_up: spec.catch_up.as_str(),
            overlap: spec.overlap.as_str(),
            source: source.as_str(),
        }
    }

    /// The nine values, then `last` as `?10`.
    fn with(&self, last: &'a i64) -> [&dyn ToSql; 10] {
        [
            &self.spec.name,
            &self.cron,
            &self.zone,
            &self.task,
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
            let task = serde_json::to_string(&spec.task).map_err(|e| StoreError::internal(e.to_string()))?;
            let n = conn
                .execute(
                    "INSERT INTO schedules (name, cron, timezone, task, catch_up, catch_up_window_s, overlap, \
                       paused, source, created_at, updated_at, fired_through) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10) ON CONFLICT (name) DO NOTHING",
                    SpecValues::of(&spec, &task, source).with(&now).as_slice(),
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
            let task = serde_json::to_string(&spec.task).map_err(|e| StoreError::internal(e.to_string()))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
            let Some(old) = get(&tx, &spec.name)? else {
                return Ok(Err(ScheduleError::NotFound(spec.name.clone())));
            };
            let version = next_version(micros(old.updated_at));
            tx.execute(
                "UPDATE schedules SET cron = ?2, timezone = ?3, task = ?4, catch_up = ?5, catch_up_window_s = ?6, \
                   overlap = ?7, paused = ?8, source = ?9, updated_at = ?10, \
                   fired_through = max(fired_through, ?10) WHERE name = ?1",
                SpecValues::of(&spec, &task, source).with(&version).as_slice(),
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

    async fn release_buffered(&self, name: &str, task: &NewTask) -> Result<Option<FireOutcome>, ScheduleError> {
        let (name, task) = (name.to_string(), task.clone());
        self.call(move |conn| Ok(release_buffered(conn, &name, &task))).await?
    }
}
