//! The worker: claims tasks, runs them, writes their ends back.
//!
//! Split as River splits a queue client, one service per concern:
//! - [`producer`] waits for a wake-up (NOTIFY, an in-process enqueue, a rescue), the poll
//!   timer or the next scheduled `run_at`, and claims for the free slots plus, for short
//!   tasks, a buffer ahead of them;
//! - [`buffer`] holds claimed tasks waiting for a slot;
//! - [`executor`] runs claimed tasks on a slot through the attempt lifecycle
//!   ([`crate::attempt`]), taking the next buffered one itself;
//! - [`completer`] batches the attempts' ends into fenced store writes;
//! - [`heartbeat`] renews the leases of the tasks it holds, and stops those it lost.
//!
//! [`Worker::run`] wires them and drains them on shutdown. The rest of the process tells
//! the worker there may be work, or that a task it runs was cancelled, through the wake-up
//! fan-out ([`crate::wakeups::Fanout`]). Expired leases (of every daemon) are the
//! maintenance rescuer's ([`crate::maintenance::rescuer`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::attempt::{Lifecycle, StopReason};
use crate::handlers::Registry;
use crate::lease::Held;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::TaskStore;
use crate::task::{TaskId, WorkerId};
use crate::tunables::{HANDLER_STOP_SLACK, MAX_UNFINISHED, RUN_TIME_EWMA_SHIFT, STOP_GRACE};
use crate::wakeups::Fanout;

pub mod buffer;
pub mod completer;
pub mod executor;
pub mod heartbeat;
pub mod producer;

/// The worker's knobs (from [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub id: WorkerId,
    /// Tasks run at once.
    pub slots: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub shutdown_grace: Duration,
    /// How long a handler asked to stop may take to return before it is dropped.
    pub stop_grace: Duration,
}

#[derive(Debug)]
struct Running {
    /// The attempt number the claim returned: with the worker's id, the fence.
    attempt: i32,
    token: CancellationToken,
    reason: Option<StopReason>,
    /// The handler is done and its end is on its way to the store: a heartbeat that finds
    /// the row no longer running has only raced the completer.
    ended: bool,
    /// A place among the [`MAX_UNFINISHED`]; given back when the task is let go.
    _unfinished: OwnedSemaphorePermit,
}

/// Tasks this daemon holds a lease on, from claim until their end is written (or they
/// are handed back), with the token that interrupts each one.
///
/// The heartbeat renews the leases of exactly these; cancellation finds them here.
#[derive(Debug, Default)]
pub struct InFlight {
    tasks: Mutex<HashMap<TaskId, Running>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Running>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking a claimed task (its lease is ours from now on).
    fn hold(
        &self,
        id: TaskId,
        attempt: i32,
        shutdown: &Shutdown,
        unfinished: OwnedSemaphorePermit,
    ) -> CancellationToken {
        let token = shutdown.hard_token().child_token();
        let running = Running { attempt, token: token.clone(), reason: None, ended: false, _unfinished: unfinished };
        self.lock().insert(id, running);
        token
    }

    /// The token that interrupts a held task.
    fn token(&self, id: TaskId) -> Option<CancellationToken> {
        self.lock().get(&id).map(|r| r.token.clone())
    }

    /// Removes the task, returning why it was stopped, if it was.
    fn remove(&self, id: TaskId) -> Option<StopReason> {
        self.lock().remove(&id).and_then(|r| r.reason)
    }

    /// Asks the task's handler to stop; returns false if the task does not run here.
    pub fn stop(&self, id: TaskId, reason: StopReason) -> bool {
        match self.lock().get_mut(&id) {
            Some(running) => {
                running.reason.get_or_insert(reason);
                running.token.cancel();
                true
            }
            None => false,
        }
    }

    /// Marks the handler done (its end is sent to the completer).
    fn mark_ended(&self, id: TaskId) {
        if let Some(running) = self.lock().get_mut(&id) {
            running.ended = true;
        }
    }

    /// Stops a held task whose lease a heartbeat could not renew; false when it is not
    /// held or already ended (then nothing is wrong).
    fn lost(&self, id: TaskId) -> bool {
        let ended = self.lock().get(&id).is_none_or(|r| r.ended);
        !ended && self.stop(id, StopReason::LeaseLost)
    }

    /// Why the task was asked to stop, if it was.
    fn reason(&self, id: TaskId) -> Option<StopReason> {
        self.lock().get(&id).and_then(|r| r.reason)
    }

    /// The fences of every held attempt, for a lease renewal.
    pub fn held(&self, worker: &WorkerId) -> Vec<Held> {
        self.lock().iter().map(|(id, r)| Held::new(*id, worker.clone(), r.attempt)).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything the worker's services share.
pub struct Worker {
    pub store: Arc<dyn TaskStore>,
    pub registry: Arc<Registry>,
    /// The types it has handlers for: it claims only these.
    pub claim_types: Vec<String>,
    /// Starts and ends each attempt (trace folder, CWOM Run, retry policy).
    pub lifecycle: Arc<Lifecycle>,
    pub settings: WorkerSettings,
    /// The process's wake-up fan-out: "there may be work now", and cancels.
    pub wake: Arc<Fanout>,
    pub in_flight: Arc<InFlight>,
    /// Places for tasks between claim and written end ([`MAX_UNFINISHED`]).
    pub unfinished: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// Moving average of handler run time in µs (`u64::MAX`: none yet); sizes prefetch.
    pub run_time_ewma_us: AtomicU64,
}

/// How long a handler asked to stop may take: long enough for a program's group to get
/// SIGTERM, the kill grace, SIGKILL, and the handler's clean-up.
pub fn stop_grace(kill_grace: Duration) -> Duration {
    STOP_GRACE.max(kill_grace + HANDLER_STOP_SLACK)
}

impl Worker {
    /// A worker with nothing in flight yet.
    pub fn new(
        store: Arc<dyn TaskStore>,
        registry: Arc<Registry>,
        lifecycle: Arc<Lifecycle>,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
        wake: Arc<Fanout>,
    ) -> Self {
        let in_flight = Arc::new(InFlight::default());
        let stops = in_flight.clone();
        // A cancel heard here (the API, or NOTIFY from another daemon's) stops the task now.
        wake.on_cancel(move |id| {
            stops.stop(id, StopReason::Cancelled);
        });
        Worker {
            store,
            claim_types: registry.types().into_iter().map(String::from).collect(),
            registry,
            lifecycle,
            settings,
            wake,
            in_flight,
            unfinished: Arc::new(Semaphore::new(MAX_UNFINISHED)),
            metrics,
            run_time_ewma_us: AtomicU64::new(u64::MAX),
        }
    }

    /// The moving average of recent handler run times, once there is one.
    pub fn average_run(&self) -> Option<Duration> {
        match self.run_time_ewma_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Folds one run time into the average (weight 1/[`RUN_TIME_EWMA_SHIFT`]).
    fn record_run(&self, took: Duration) {
        let sample = took.as_micros().min(u64::MAX as u128 - 1) as u64;
        let w = RUN_TIME_EWMA_SHIFT;
        let _ = self.run_time_ewma_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            Some(if old == u64::MAX { sample } else { old - old / w + sample / w })
        });
    }

    /// Runs until `shutdown`, then drains: running tasks get the grace period, the rest
    /// are interrupted and handed back, and every attempt's end is written before return.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let slots = Arc::new(Semaphore::new(self.settings.slots));
        let (completer, completions) = completer::channel();
        let completer_task = tokio::spawn(completer::run(
            self.store.clone(),
            self.wake.clone(),
            self.in_flight.clone(),
            completions,
            shutdown.clone(),
            self.settings.shutdown_grace,
        ));
        let heartbeat_task = tokio::spawn(heartbeat::run(self.clone(), shutdown.clone()));

        producer::run(&self, &slots, &completer, &shutdown).await;

        // Drain: wait for every slot to come back, or for the grace period to end.
        let all = self.settings.slots as u32;
        let drained = tokio::time::timeout(self.settings.shutdown_grace, slots.acquire_many(all)).await;
        if drained.is_err() {
            tracing::warn!(
                running = self.in_flight.len(),
                grace_s = self.settings.shutdown_grace.as_secs_f64(),
                "grace period over: interrupting running tasks and handing them back"
            );
            shutdown.trigger_hard();
            let _ = slots.acquire_many(all).await;
        }
        drop(completer);
        let _ = completer_task.await;
        heartbeat_task.abort();
        tracing::info!("worker stopped");
    }
}
