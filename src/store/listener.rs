//! The optional listener: a database that can notify turns its notifications into
//! wake-ups, so the worker claims at once instead of at its next poll.
//!
//! A notification is only a hint; the worker always claims through the table. Whoever
//! runs a listener hands it a [`NotificationSink`] (the wake-up fan-out,
//! `crate::wakeups`) and reads its [`ListenerStatus`] (for `/ready` and `/metrics`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::shutdown::Shutdown;
use crate::task::TaskId;

/// Where a listener delivers what it hears.
pub trait NotificationSink: Send + Sync + 'static {
    /// Tasks were inserted or became claimable again (or the connection came back and
    /// some may have): claim.
    fn tasks_claimable(&self);
    /// A running task was cancelled, perhaps through another daemon: stop it if it runs here.
    fn task_cancelled(&self, id: TaskId);
}

/// Whether the listener's connection is up right now.
#[derive(Debug, Default)]
pub struct ListenerStatus(AtomicBool);

impl ListenerStatus {
    pub fn is_connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed)
    }
}

#[async_trait]
pub trait Listener: Send + Sync + 'static {
    /// Listens until shutdown, reconnecting whenever the connection is lost.
    async fn run(&self, sink: Arc<dyn NotificationSink>, status: Arc<ListenerStatus>, shutdown: Shutdown);
}
