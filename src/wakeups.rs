//! Wake-ups: the one fan-out that tells everyone waiting for work that there may be some,
//! and tells the in-process worker that a task it runs was cancelled.
//!
//! Fed by the database's listener (NOTIFY from the insert and "became claimable"
//! triggers, and `jct_cancel`), by the intake after every enqueue, and by every state
//! change this process makes that frees a task (retry, release, deregister, a retried
//! attempt, a rescue). Read by the in-process producer and by every waiting long-poll
//! claim of the worker protocol, through [`Fanout::subscribe`].
//!
//! A wake-up is only a hint: whoever wakes claims through the table. It is a generation
//! counter in a watch channel, so a wake-up that arrives between a waiter's look at the
//! table and its wait is never lost (the waiter subscribed before it looked).

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::store::NotificationSink;
use crate::task::TaskId;

type CancelHook = Arc<dyn Fn(TaskId) + Send + Sync>;

/// The process's wake-up fan-out.
pub struct Fanout {
    work: watch::Sender<u64>,
    /// The in-process worker's way to stop a task it runs (none in the `api` role).
    cancel: RwLock<Option<CancelHook>>,
}

/// One waiter's view of the fan-out: [`WorkWatch::changed`] returns once there may be new
/// work since the last return (or since the subscription).
pub struct WorkWatch(watch::Receiver<u64>);

impl WorkWatch {
    /// Waits for the next wake-up; returns false when the fan-out is gone.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

impl Fanout {
    pub fn new() -> Arc<Fanout> {
        let (work, _) = watch::channel(0);
        Arc::new(Fanout { work, cancel: RwLock::new(None) })
    }

    /// There may be claimable work now: wake every waiter.
    pub fn work_available(&self) {
        self.work.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// A waiter that sees every wake-up from now on.
    pub fn subscribe(&self) -> WorkWatch {
        WorkWatch(self.work.subscribe())
    }

    /// A task was cancelled (here or through another daemon): stop it if it runs here.
    pub fn cancelled(&self, id: TaskId) {
        let hook = self.cancel.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hook) = hook {
            hook(id);
        }
    }

    /// Sets how a cancel reaches the in-process worker.
    pub fn on_cancel(&self, hook: impl Fn(TaskId) + Send + Sync + 'static) {
        *self.cancel.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(hook));
    }

    /// The sink the database's listener delivers to.
    pub fn sink(self: &Arc<Self>) -> Arc<dyn NotificationSink> {
        Arc::new(ListenerSink(self.clone()))
    }
}

struct ListenerSink(Arc<Fanout>);

impl NotificationSink for ListenerSink {
    fn tasks_claimable(&self) {
        self.0.work_available();
    }

    fn task_cancelled(&self, id: TaskId) {
        self.0.cancelled(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_up_before_the_wait_is_not_lost_and_cancels_reach_the_hook() {
        let fanout = Fanout::new();
        let mut watch = fanout.subscribe();
        fanout.work_available();
        let woke = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await;
        assert_eq!(woke.ok(), Some(true));
        let again = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(again.is_err(), "one wake-up is seen once");

        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        fanout.cancelled(TaskId::new());
        fanout.on_cancel(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        });
        fanout.sink().task_cancelled(TaskId::new());
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
