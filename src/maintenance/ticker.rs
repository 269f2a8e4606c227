//! The schedule ticker: fires every schedule's ticks at their instant.
//!
//! It runs on every daemon, not only the maintenance leader: a leader killed with SIGKILL
//! would otherwise leave ticks unfired until its lease ran out. Exactly once comes from the
//! data ([`crate::store::ScheduleStore::fire`]), so daemons racing for one tick cost one
//! short transaction each and fire it once.
//!
//! It keeps every schedule in memory and sleeps until the earliest next tick among them
//! (never a coarse poll), until its own daemon changes a schedule
//! ([`Schedules::changed`]), or until the re-read period
//! ([`SCHEDULE_REREAD_EVERY`]) that shows other daemons' changes and releases ticks
//! `buffer_one` held back. On each wake it fires what [`crate::schedule::Timing::due`]
//! says is due, oldest first; a tick is never fired before its instant.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use crate::schedule::{FireKind, FireOutcome, Schedule};
use crate::scheduling::{Schedules, SchedulingError};
use crate::shutdown::Shutdown;
use crate::store::Fired;
use crate::tunables::{SCHEDULE_LATE_GRACE, SCHEDULE_REREAD_EVERY, SCHEDULE_RETRY_AFTER};

/// The ticker of one daemon.
pub struct Ticker {
    schedules: Arc<Schedules>,
}

impl Ticker {
    pub fn new(schedules: Arc<Schedules>) -> Self {
        Ticker { schedules }
    }

    /// Runs until shutdown is asked (a fire in flight finishes: it is one transaction).
    pub async fn run(self, shutdown: Shutdown) {
        let changed = self.schedules.changed();
        let mut cache: Vec<Schedule> = Vec::new();
        let mut reread_at = Instant::now();
        loop {
            if Instant::now() >= reread_at {
                match self.schedules.list().await {
                    Ok(all) => {
                        cache = all;
                        reread_at = Instant::now() + SCHEDULE_REREAD_EVERY;
                        self.release_buffered(&cache).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the schedules; retrying");
                        reread_at = Instant::now() + SCHEDULE_RETRY_AFTER;
                    }
                }
            }
            let mut stale = false;
            for schedule in cache.iter_mut().filter(|s| !s.spec.paused) {
                if shutdown.is_stopping() {
                    return;
                }
                match self.tick(schedule).await {
                    Ok(true) => {}
                    Ok(false) => stale = true,
                    Err(e) => {
                        tracing::warn!(schedule = %schedule.spec.name, error = %e, "schedule fire failed");
                        reread_at = reread_at.min(Instant::now() + SCHEDULE_RETRY_AFTER);
                    }
                }
            }
            if stale {
                reread_at = Instant::now();
                continue;
            }
            let now = Utc::now();
            let next_tick = cache
                .iter()
                .filter(|s| !s.spec.paused)
                .filter_map(|s| s.spec.timing.next_after(now.max(s.fired_through)))
                .min()
                .map(|t| Instant::now() + (t - Utc::now()).to_std().unwrap_or(Duration::ZERO));
            let wake_at = next_tick.map_or(reread_at, |t| t.min(reread_at));
            tokio::select! {
                _ = shutdown.stopping() => return,
                _ = changed.notified() => reread_at = Instant::now(),
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Fires what is due of one schedule; `Ok(false)` when the copy in memory is stale.
    async fn tick(&self, schedule: &mut Schedule) -> Result<bool, SchedulingError> {
        let spec = &schedule.spec;
        let due =
            spec.timing.due(schedule.fired_through, Utc::now(), spec.catch_up, spec.window(), SCHEDULE_LATE_GRACE);
        for at in &due.fire {
            // A tick `buffer_one` held back goes first, if the fires before it are over:
            // ticks fire in order, and the held one is not starved by the next.
            if schedule.buffered_for.is_some() {
                match self.schedules.release_buffered(schedule).await {
                    Ok(Some(FireOutcome::Fired { task_id, .. })) => {
                        schedule.buffered_for = None;
                        schedule.last_task_id = Some(task_id);
                    }
                    Ok(_) => {}
                    Err(SchedulingError::NotFound(_)) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            match self.schedules.fire(schedule, FireKind::Tick, *at).await {
                Ok(Fired::Done(outcome)) => {
                    if let FireOutcome::Fired { task_id, .. } = &outcome {
                        schedule.last_task_id = Some(*task_id);
                        schedule.last_fired_at = Some(Utc::now());
                    }
                    if outcome == FireOutcome::Buffered {
                        schedule.buffered_for = Some(*at);
                    }
                    schedule.fired_through = schedule.fired_through.max(*at);
                }
                Ok(Fired::Stale) | Err(SchedulingError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if let Some(through) = due.through {
            if through > schedule.fired_through {
                match self.schedules.pass_ticks(&schedule.spec.name, through).await {
                    Ok(()) => schedule.fired_through = through,
                    Err(SchedulingError::NotFound(_)) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(true)
    }

    async fn release_buffered(&self, cache: &[Schedule]) {
        for schedule in cache.iter().filter(|s| s.buffered_for.is_some()) {
            match self.schedules.release_buffered(schedule).await {
                Ok(_) | Err(SchedulingError::NotFound(_)) => {}
                Err(e) => tracing::warn!(schedule = %schedule.spec.name, error = %e, "buffered fire failed"),
            }
        }
    }
}
