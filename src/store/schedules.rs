//! The schedule store: schedules as rows, and the one transaction that fires a tick.
//!
//! [`ScheduleStore::fire`] is where exactly-once and the overlap policies live. In one
//! transaction, holding the schedule's row (`FOR UPDATE` on PostgreSQL; SQLite has one
//! writer), it
//! 1. refuses a fire made from a stale copy of the schedule (its `updated_at` changed: a
//!    `PUT` takes effect from its next tick, never from a tick computed before it);
//! 2. inserts the key `(schedule, kind, instant)` into `schedule_fires`; a key already
//!    there means another daemon (or this one, before a restart) dealt with the tick;
//! 3. applies the overlap policy to the schedule's tasks still waiting, queued or running
//!    (a fired workflow's steps are its tasks);
//! 4. inserts the task, or the workflow with all its steps, each with `schedule_name` and
//!    `scheduled_for`, and moves the cursor.
//!
//! Whatever the number of daemons, restarts and kills, a tick fires at most once, and a
//! tick that was fired is never fired again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::error::{ScheduleError, StoreResult};
use crate::schedule::{FireKind, FireOutcome, Schedule, ScheduleSpec, Source, Work};

/// Fire one tick (or one trigger) of a schedule.
#[derive(Debug, Clone)]
pub struct FireParams {
    pub name: String,
    pub kind: FireKind,
    /// The tick, or the trigger's instant: part of the exactly-once key.
    pub scheduled_for: DateTime<Utc>,
    /// The `updated_at` of the schedule the fire was computed from.
    pub version: DateTime<Utc>,
    /// The task or workflow to start (`schedule_name` and `scheduled_for` set on each task).
    pub work: Work,
}

/// What [`ScheduleStore::fire`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    Done(FireOutcome),
    /// The schedule changed since the caller read it: read it again.
    Stale,
}

/// A fingerprint of the schedules as the ticker keeps them: it changes whenever a schedule
/// is created, replaced, paused, resumed or deleted (each of these moves `updated_at` to the
/// store's clock, so the latest change moves, or the count does), and whenever a tick is
/// held back by `buffer_one` or released. Fires and passed ticks leave it alone: a daemon
/// learns of another's fire from the fire's own key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulesFingerprint {
    pub count: i64,
    pub latest_change: Option<DateTime<Utc>>,
    /// Schedules holding a buffered tick.
    pub buffered: i64,
}

/// Schedules and their fires.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Stores a new schedule; its cursor starts now (no tick before its creation fires).
    async fn create_schedule(&self, spec: &ScheduleSpec, source: Source) -> Result<Schedule, ScheduleError>;

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>>;

    /// Every schedule, by name.
    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>>;

    /// One aggregate over the schedules (see [`SchedulesFingerprint`]): what the ticker
    /// reads every second instead of every schedule.
    async fn schedules_fingerprint(&self) -> StoreResult<SchedulesFingerprint>;

    /// Replaces a schedule's spec (and source); the cursor moves to now, so the new pattern
    /// takes effect from its next tick. Its fires stay.
    async fn replace_schedule(&self, spec: &ScheduleSpec, source: Source) -> Result<Schedule, ScheduleError>;

    /// Deletes a schedule and its fire keys; the tasks it fired stay.
    async fn delete_schedule(&self, name: &str) -> Result<(), ScheduleError>;

    /// Pauses or resumes. Resuming moves the cursor to now: ticks of the pause never fire.
    async fn set_paused(&self, name: &str, paused: bool) -> Result<Schedule, ScheduleError>;

    /// Fires one tick or trigger (see the module's doc).
    async fn fire(&self, params: &FireParams) -> Result<Fired, ScheduleError>;

    /// Moves the cursor to `through` (never backwards): ticks up to there that did not
    /// fire were missed and skipped by the catch-up rules.
    async fn pass_ticks(&self, name: &str, through: DateTime<Utc>) -> StoreResult<()>;

    /// Fires the tick `buffer_one` held back, if there is one and none of the schedule's
    /// tasks is waiting, queued or running any more; `work` is what it starts
    /// (`scheduled_for` is set here, to the buffered tick). Answers what it did.
    async fn release_buffered(&self, name: &str, work: &Work) -> Result<Option<FireOutcome>, ScheduleError>;
}
