//! The schedule ticker: fires every schedule's ticks at their instant.
//!
//! It runs on every daemon, not only the maintenance leader: a leader killed with SIGKILL
//! would otherwise leave ticks unfired until its lease ran out. Exactly once comes from the
//! data ([`crate::store::ScheduleStore::fire`]), so daemons racing for one tick cost one
//! short transaction each and fire it once.
//!
//! It keeps every schedule in memory with the next tick to look at, and sleeps until the
//! earliest of them (never a coarse poll), until its own daemon changes a schedule
//! ([`Schedules::changed`]), or until the look period ([`SCHEDULE_LOOK_EVERY`]). A look
//! reads one aggregate, [`Schedules::fingerprint`], and reads every schedule again only
//! when it moved (another daemon's change), and retries the ticks `buffer_one` holds back
//! while there are any. So an idle schedule costs nothing between its ticks: neither a row
//! read nor a cron computation. On each wake it fires what
//! [`crate::schedule::Timing::due`] says is due of the schedules whose next tick has come,
//! oldest first; a tick is never fired before its instant.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::schedule::{FireKind, FireOutcome, Schedule};
use crate::scheduling::{Schedules, SchedulingError};
use crate::shutdown::Shutdown;
use crate::store::{Fired, SchedulesFingerprint};
use crate::tunables::{SCHEDULE_LATE_GRACE, SCHEDULE_LOOK_EVERY, SCHEDULE_RETRY_AFTER};

/// The ticker of one daemon.
pub struct Ticker {
    schedules: Arc<Schedules>,
}

/// One schedule as the ticker keeps it.
struct Entry {
    schedule: Schedule,
    /// When to look at the schedule next; `None` right after a read (look at once: missed
    /// ticks are caught up).
    next: Option<DateTime<Utc>>,
}

impl Entry {
    fn due_by(&self, now: DateTime<Utc>) -> bool {
        !self.schedule.spec.paused && self.next.is_none_or(|t| t <= now)
    }
}

impl Ticker {
    pub fn new(schedules: Arc<Schedules>) -> Self {
        Ticker { schedules }
    }

    /// Runs until shutdown is asked (a fire in flight finishes: it is one transaction).
    pub async fn run(self, shutdown: Shutdown) {
        let changed = self.schedules.changed();
        let mut cache: Vec<Entry> = Vec::new();
        // `None`: read every schedule at the next look, whatever the fingerprint.
        let mut seen: Option<SchedulesFingerprint> = None;
        let mut look_at = Instant::now();
        loop {
            if Instant::now() >= look_at {
                look_at = Instant::now() + SCHEDULE_LOOK_EVERY;
                if let Err(e) = self.look(&mut cache, &mut seen).await {
                    tracing::warn!(error = %e, "cannot read the schedules; retrying");
                    look_at = Instant::now() + SCHEDULE_RETRY_AFTER;
                }
            }
            let now = Utc::now();
            for entry in cache.iter_mut().filter(|e| e.due_by(now)) {
                if shutdown.is_stopping() {
                    return;
                }
                match self.tick(&mut entry.schedule).await {
                    Ok(true) => {
                        // From `now`, read before the tick: a tick that came while it
                        // fired is looked at on the next wake, never skipped.
                        entry.next = entry.schedule.spec.timing.next_after(now.max(entry.schedule.fired_through));
                    }
                    Ok(false) => {
                        seen = None;
                        look_at = Instant::now();
                    }
                    Err(e) => {
                        tracing::warn!(schedule = %entry.schedule.spec.name, error = %e, "schedule fire failed");
                        entry.next = Some(now + SCHEDULE_RETRY_AFTER);
                    }
                }
            }
            let now = Utc::now();
            let next_tick = cache
                .iter()
                .filter(|e| !e.schedule.spec.paused)
                .map(|e| e.next.unwrap_or(now))
                .min()
                .map(|t| Instant::now() + (t - now).to_std().unwrap_or(Duration::ZERO));
            let wake_at = next_tick.map_or(look_at, |t| t.min(look_at));
            tokio::select! {
                _ = shutdown.stopping() => return,
                _ = changed.notified() => {
                    seen = None;
                    look_at = Instant::now();
                }
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// The periodic look: reads every schedule again when the fingerprint moved (or `seen`
    /// was cleared), and retries the buffered ticks while there are any.
    async fn look(
        &self,
        cache: &mut Vec<Entry>,
        seen: &mut Option<SchedulesFingerprint>,
    ) -> Result<(), SchedulingError> {
        let fingerprint = self.schedules.fingerprint().await?;
        if *seen != Some(fingerprint) {
            // Read after the fingerprint: the copy is at least as new as what it describes.
            let all = self.schedules.list().await?;
            *cache = all.into_iter().map(|schedule| Entry { schedule, next: None }).collect();
            *seen = Some(fingerprint);
        }
        if fingerprint.buffered > 0 {
            self.release_buffered(cache).await;
        }
        Ok(())
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
                    Ok(Some(FireOutcome::Fired { started, .. })) => {
                        schedule.buffered_for = None;
                        schedule.started(started);
                    }
                    Ok(_) => {}
                    Err(SchedulingError::NotFound(_)) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            match self.schedules.fire(schedule, FireKind::Tick, *at).await {
                Ok(Fired::Done(outcome)) => {
                    if let FireOutcome::Fired { started, .. } = &outcome {
                        schedule.started(*started);
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

    async fn release_buffered(&self, cache: &[Entry]) {
        for schedule in cache.iter().map(|e| &e.schedule).filter(|s| s.buffered_for.is_some()) {
            match self.schedules.release_buffered(schedule).await {
                Ok(_) | Err(SchedulingError::NotFound(_)) => {}
                Err(e) => tracing::warn!(schedule = %schedule.spec.name, error = %e, "buffered fire failed"),
            }
        }
    }
}
