//! Ends: many remote workers' attempt ends, few statements.
//!
//! Each `complete` or `fail` of the worker protocol is a request of its own, and a worker
//! with many slots sends many at once. One fenced UPDATE per end would make the database's
//! per-statement and per-commit cost the limit of a remote drain, so ends that arrive while
//! a write is in flight wait and go together in the next one, as the intake does for
//! enqueues. Every end still gets its own answer: its task as stored, or `None` when the
//! fence (holder and attempt) refused it.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::checkout;
use super::tasks::{task_from_row, FinishArrays, FINISH};
use crate::store::error::{StoreError, StoreResult};
use crate::store::tasks::AttemptEnd;
use crate::task::{Task, TaskId};
use crate::tunables::{ENDS_LANES, ENDS_MAX_ROWS, ENDS_QUEUE};

type Answer = StoreResult<Option<Task>>;

struct Pending {
    end: AttemptEnd,
    reply: oneshot::Sender<Answer>,
}

/// The queue in front of the coalescing writers.
#[derive(Clone)]
pub(super) struct Ends {
    tx: mpsc::Sender<Pending>,
}

impl Ends {
    /// Starts the writer lanes on `pool`; they stop when every `Ends` is dropped.
    pub(super) fn start(pool: Pool) -> Ends {
        let (tx, rx) = mpsc::channel(ENDS_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..ENDS_LANES {
            tokio::spawn(lane(pool.clone(), rx.clone()));
        }
        Ends { tx }
    }

    pub(super) async fn finish(&self, end: AttemptEnd) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { end, reply }).await.map_err(|_| StoreError::internal("attempt-end writer stopped"))?;
        answer.await.map_err(|_| StoreError::internal("attempt-end writer dropped a request"))?
    }
}

/// Takes whatever is queued (up to [`ENDS_MAX_ROWS`]) and writes it, until the queue closes.
async fn lane(pool: Pool, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    let mut batch = Vec::with_capacity(ENDS_MAX_ROWS);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, ENDS_MAX_ROWS).await == 0 {
                return;
            }
        }
        match write(&pool, &batch).await {
            Ok(mut ended) => {
                for p in batch.drain(..) {
                    let _ = p.reply.send(Ok(ended.remove(&p.end.id())));
                }
            }
            // A failed statement answers for itself only: each end is tried alone, so one
            // that the database refuses cannot fail the others.
            Err(_) if batch.len() > 1 => {
                for p in batch.drain(..) {
                    let answer = write(&pool, std::slice::from_ref(&p)).await.map(|mut e| e.remove(&p.end.id()));
                    let _ = p.reply.send(answer);
                }
            }
            Err(e) => {
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One fenced UPDATE for all `ends`; returns the tasks it changed, by id.
async fn write(pool: &Pool, ends: &[Pending]) -> StoreResult<HashMap<TaskId, Task>> {
    let client = checkout(pool).await?;
    let rows = FinishArrays::of(ends.iter().map(|p| &p.end)).query(&client, &FINISH).await?;
    rows.iter().map(|r| task_from_row(r).map(|t| (t.id, t))).collect()
}
