//! Scheduling: the service behind `/schedules`, the schedules file and the ticker.
//!
//! [`Schedules`] creates, replaces, pauses, resumes, deletes and triggers schedules, and
//! fires ticks for the ticker (`maintenance/ticker.rs`). Every fire goes through
//! [`Intake::fire`]: the task is checked like any enqueue and written with its
//! exactly-once key in one transaction. A change made here wakes this daemon's ticker at
//! once ([`Schedules::changed`]); other daemons see it within a second, when the
//! fingerprint their tickers read ([`Schedules::fingerprint`]) moves.
//!
//! [`Schedules::apply_file`] applies `JCT_SCHEDULES_FILE` at start-up: schedules it names
//! are created or replaced (and owned by the file); file-owned ones it no longer names are
//! removed; those made through the API are never touched.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::intake::{Intake, IntakeError};
use crate::schedule::{FireKind, FireOutcome, Schedule, ScheduleSpec, Source, Work};
use crate::store::{FireParams, Fired, ScheduleError, ScheduleStore, SchedulesFingerprint, StoreError};
use crate::task::InvalidField;

/// Why a schedule operation did nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchedulingError {
    /// The schedule is not valid; names the field.
    #[error("{0}")]
    Invalid(InvalidField),
    #[error("a schedule named {0:?} already exists")]
    Exists(String),
    #[error("no schedule named {0:?}")]
    NotFound(String),
    /// The fire's task was refused by the intake (or its write failed).
    #[error(transparent)]
    Intake(IntakeError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<ScheduleError> for SchedulingError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Exists(n) => SchedulingError::Exists(n),
            ScheduleError::NotFound(n) => SchedulingError::NotFound(n),
            ScheduleError::Store(e) => SchedulingError::Store(e),
        }
    }
}

impl From<StoreError> for SchedulingError {
    fn from(e: StoreError) -> Self {
        SchedulingError::Store(e)
    }
}

impl From<IntakeError> for SchedulingError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::NoSchedule(n) => SchedulingError::NotFound(n),
            IntakeError::Store(e) => SchedulingError::Store(e),
            other => SchedulingError::Intake(other),
        }
    }
}

/// What applying the schedules file did, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// Named by the file but made through the API: left alone.
    pub skipped: Vec<String>,
}

/// The schedules service of one daemon.
pub struct Schedules {
    store: Arc<dyn ScheduleStore>,
    intake: Arc<Intake>,
    changed: Arc<Notify>,
}

/// A fresh trace id for a fired task.
fn trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Schedules {
    pub fn new(store: Arc<dyn ScheduleStore>, intake: Arc<Intake>) -> Self {
        Schedules { store, intake, changed: Arc::new(Notify::new()) }
    }

    /// Notified on every change made through this service (the ticker waits on it).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    fn touched(&self) {
        self.changed.notify_one();
    }

    /// Checks the task a spec's fires will enqueue (or each step of its workflow) with the
    /// intake (type, admission, CWOM link), naming the field under `task` (or
    /// `workflow.steps[i]`).
    async fn admit(&self, spec: &ScheduleSpec) -> Result<(), SchedulingError> {
        let sample = spec.target.fire(&spec.name, Utc::now(), trace_id()).map_err(SchedulingError::Invalid)?;
        self.intake.admits_work(&sample).await.map_err(|(index, e)| {
            let prefix = match &sample {
                Work::Task(_) => "task".to_string(),
                Work::Workflow(_) => format!("workflow.steps[{index}]"),
            };
            let field = match &e {
                IntakeError::UnknownType { .. } | IntakeError::StepOnlyType(_) => "type",
                IntakeError::MissingIssue(_) => "cwom_issue_id",
                IntakeError::Store(e) => return SchedulingError::Store(e.clone()),
                _ => "payload",
            };
            SchedulingError::Invalid(InvalidField::new(format!("{prefix}.{field}"), e.to_string()))
        })
    }

    pub async fn create(&self, spec: &ScheduleSpec) -> Result<Schedule, SchedulingError> {
        self.admit(spec).await?;
        let s = self.store.create_schedule(spec, Source::Api).await?;
        tracing::info!(schedule = %s.spec.name, cron = %s.spec.timing.cron.as_str(), "schedule created");
        self.touched();
        Ok(s)
    }

    pub async fn replace(&self, spec: &ScheduleSpec) -> Result<Schedule, SchedulingError> {
        self.admit(spec).await?;
        let s = self.store.replace_schedule(spec, Source::Api).await?;
        tracing::info!(schedule = %s.spec.name, "schedule replaced");
        self.touched();
        Ok(s)
    }

    pub async fn get(&self, name: &str) -> Result<Schedule, SchedulingError> {
        self.store.get_schedule(name).await?.ok_or_else(|| SchedulingError::NotFound(name.to_string()))
    }

    pub async fn list(&self) -> Result<Vec<Schedule>, SchedulingError> {
        Ok(self.store.list_schedules().await?)
    }

    /// What changes when the schedules do (the ticker's cheap look, every second).
    pub async fn fingerprint(&self) -> Result<SchedulesFingerprint, SchedulingError> {
        Ok(self.store.schedules_fingerprint().await?)
    }

    pub async fn delete(&self, name: &str) -> Result<(), SchedulingError> {
        self.store.delete_schedule(name).await?;
        tracing::info!(schedule = name, "schedule deleted");
        self.touched();
        Ok(())
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Schedule, SchedulingError> {
        let s = self.store.set_paused(name, paused).await?;
        tracing::info!(schedule = name, paused, "schedule paused or resumed");
        self.touched();
        Ok(s)
    }

    /// Fires the schedule once now, whatever its pattern, pause and overlap policy, under a
    /// key of its own (the trigger's instant), so no tick is used up.
    pub async fn trigger(&self, name: &str) -> Result<FireOutcome, SchedulingError> {
        // A concurrent change makes the fire stale: read again, a few times.
        for _ in 0..5 {
            let schedule = self.get(name).await?;
            let now = Utc::now();
            match self.fire(&schedule, FireKind::Trigger, now).await? {
                Fired::Done(outcome) => return Ok(outcome),
                Fired::Stale => continue,
            }
        }
        Err(SchedulingError::Store(StoreError::unavailable("the schedule kept changing; try again")))
    }

    /// Fires one tick (or trigger) of `schedule` as read at its `updated_at`.
    pub async fn fire(&self, schedule: &Schedule, kind: FireKind, at: DateTime<Utc>) -> Result<Fired, SchedulingError> {
        let spec = &schedule.spec;
        let work = spec.target.fire(&spec.name, at, trace_id()).map_err(SchedulingError::Invalid)?;
        let params =
            FireParams { name: spec.name.clone(), kind, scheduled_for: at, version: schedule.updated_at, work };
        let fired = self.intake.fire(&params).await?;
        if let Fired::Done(outcome) = &fired {
            tracing::debug!(schedule = %spec.name, kind = %kind, at = %at, ?outcome, "schedule tick");
        }
        Ok(fired)
    }

    /// Moves a schedule's cursor past ticks the catch-up rules did not fire.
    pub async fn pass_ticks(&self, name: &str, through: DateTime<Utc>) -> Result<(), SchedulingError> {
        Ok(self.store.pass_ticks(name, through).await?)
    }

    /// Fires the tick `buffer_one` held back, when the previous fires are over.
    pub async fn release_buffered(&self, schedule: &Schedule) -> Result<Option<FireOutcome>, SchedulingError> {
        let spec = &schedule.spec;
        let at = schedule.buffered_for.unwrap_or_else(Utc::now);
        let work = spec.target.fire(&spec.name, at, trace_id()).map_err(SchedulingError::Invalid)?;
        Ok(self.intake.release_buffered(&spec.name, &work).await?)
    }

    /// Applies the schedules file (see the module's doc). Stops at the first schedule the
    /// intake refuses, naming it.
    pub async fn apply_file(&self, specs: &[ScheduleSpec]) -> Result<FileReport, SchedulingError> {
        let mut report = FileReport::default();
        let existing = self.store.list_schedules().await?;
        for spec in specs {
            self.admit(spec).await.map_err(|e| match e {
                SchedulingError::Invalid(f) => {
                    SchedulingError::Invalid(InvalidField::new(format!("{}.{}", spec.name, f.field), f.reason))
                }
                other => other,
            })?;
            match existing.iter().find(|s| s.spec.name == spec.name) {
                None => {
                    self.store.create_schedule(spec, Source::File).await?;
                    report.created.push(spec.name.clone());
                }
                Some(s) if s.source == Source::Api => report.skipped.push(spec.name.clone()),
                Some(s) if s.spec == *spec => {}
                Some(_) => {
                    self.store.replace_schedule(spec, Source::File).await?;
                    report.updated.push(spec.name.clone());
                }
            }
        }
        for s in existing.iter().filter(|s| s.source == Source::File) {
            if !specs.iter().any(|spec| spec.name == s.spec.name) {
                match self.store.delete_schedule(&s.spec.name).await {
                    Ok(()) | Err(ScheduleError::NotFound(_)) => report.removed.push(s.spec.name.clone()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.touched();
        Ok(report)
    }
}
