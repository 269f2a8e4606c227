//! The buffer: claimed tasks waiting for a slot, in claim order.
//!
//! The producer fills it; a slot whose task ended takes the next one itself
//! ([`Buffer::take`]), without a round trip through the producer (free the slot, wake the
//! producer, spawn a new executor), which with few slots is what limits a drain of short
//! tasks. The take that leaves the buffer at its refill mark wakes the producer to claim more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::task::Task;

/// Claimed tasks waiting for a slot, in claim order.
#[derive(Debug, Default)]
pub struct Buffer {
    tasks: Mutex<VecDeque<Task>>,
    /// At or below this length the producer wants to claim more.
    refill_at: AtomicUsize,
    /// Wakes the producer when a take leaves the buffer at `refill_at` or below.
    low: Notify,
}

impl Buffer {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Appends freshly claimed tasks.
    pub fn extend(&self, tasks: Vec<Task>) {
        self.lock().extend(tasks);
    }

    /// The next task for an idle slot the producer starts (wakes nobody).
    pub fn pop(&self) -> Option<Task> {
        self.lock().pop_front()
    }

    /// Empties the buffer (shutdown: these tasks go back to the queue).
    pub fn drain(&self) -> Vec<Task> {
        std::mem::take(&mut *self.lock()).into()
    }

    /// Sets the length at or below which a take wakes the producer.
    pub fn set_refill_mark(&self, mark: usize) {
        self.refill_at.store(mark, Ordering::Relaxed);
    }

    /// Resolves when a take left the buffer at the refill mark or below.
    pub async fn low(&self) {
        self.low.notified().await
    }

    /// The next task for a slot that just ended one.
    pub fn take(&self) -> Option<Task> {
        let mut tasks = self.lock();
        let task = tasks.pop_front()?;
        if tasks.len() <= self.refill_at.load(Ordering::Relaxed) {
            self.low.notify_one();
        }
        Some(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn queued_task() -> Task {
        let now = Utc::now();
        let id = crate::task::TaskId::new();
        Task {
            id,
            task_id: id,
            task_type: "echo".into(),
            payload: serde_json::json!({}),
            status: crate::task::TaskStatus::Running,
            queue: "default".into(),
            priority: 0,
            run_at: now,
            attempts: 1,
            max_attempts: 3,
            timeout_seconds: 60,
            idempotency_key: None,
            trace_id: None,
            locked_by: None,
            locked_until: None,
            result: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            started_at: Some(now),
            finished_at: None,
            cwom_issue_id: None,
            schedule_name: None,
            scheduled_for: None,
            concurrency_key: None,
            workflow_id: None,
            step_key: None,
            parents: None,
        }
    }

    #[test]
    fn slots_take_in_claim_order_and_wake_the_producer_at_the_refill_mark() {
        use futures_util::FutureExt;
        let buffer = Buffer::default();
        buffer.set_refill_mark(2);
        let tasks: Vec<Task> = (0..5).map(|_| queued_task()).collect();
        let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
        buffer.extend(tasks);
        let woken = || buffer.low.notified().now_or_never().is_some();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(buffer.take().map(|t| t.id), Some(*id), "take {i} follows claim order");
            let left = ids.len() - i - 1;
            assert_eq!(woken(), left <= 2, "with {left} left");
        }
        assert!(buffer.take().is_none());
        assert!(!woken(), "an empty take wakes nobody");
    }
}
