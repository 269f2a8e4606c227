//! Intake: many single-task enqueues, one INSERT.
//!
//! A transaction that sends NOTIFY holds a cluster-wide lock until its commit is flushed,
//! so single-row notifying INSERTs top out at a few thousand a second however many
//! connections send them. Requests that arrive while an insert is in flight therefore wait in a queue and
//! go together in the next one: one statement, one commit, one notification. Every
//! request still gets its own task, or its own error (a used idempotency key, or a row
//! the database refused): a statement that fails is retried in halves until each request
//! has the answer its own row earns.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::tasks::{task_from_row, Columns, INSERT_UNNEST};
use super::{checkout, pg_err};
use crate::store::error::{EnqueueError, StoreError, StoreResult};
use crate::task::{NewTask, Task, TaskId};
use crate::tunables::{INTAKE_LANES, INTAKE_MAX_ROWS, INTAKE_QUEUE};

type Answer = Result<Task, EnqueueError>;

struct Pending {
    task: NewTask,
    reply: oneshot::Sender<Answer>,
}

/// The queue in front of the coalescing inserters.
#[derive(Clone)]
pub(super) struct Intake {
    tx: mpsc::Sender<Pending>,
}

impl Intake {
    /// Starts the inserter lanes on `pool`; they stop when every `Intake` is dropped.
    pub(super) fn start(pool: Pool) -> Intake {
        let (tx, rx) = mpsc::channel(INTAKE_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..INTAKE_LANES {
            tokio::spawn(lane(pool.clone(), rx.clone()));
        }
        Intake { tx }
    }

    pub(super) async fn enqueue(&self, task: NewTask) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { task, reply }).await.map_err(|_| StoreError::internal("enqueue intake stopped"))?;
        answer.await.map_err(|_| StoreError::internal("enqueue intake dropped a request"))?
    }
}

/// Takes whatever is queued (up to [`INTAKE_MAX_ROWS`]) and inserts it, until the queue
/// closes.
async fn lane(pool: Pool, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    let mut batch = Vec::with_capacity(INTAKE_MAX_ROWS);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, INTAKE_MAX_ROWS).await == 0 {
                return;
            }
        }
        let tasks: Vec<&NewTask> = batch.iter().map(|p| &p.task).collect();
        let mut results = insert_apart(&pool, &tasks).await;
        for p in batch.drain(..) {
            let answer = results
                .remove(&p.task.id)
                .unwrap_or_else(|| Err(StoreError::internal("row missing from the insert").into()));
            let _ = p.reply.send(answer);
        }
    }
}

/// Inserts `tasks` together and, when the statement fails, splits them in halves and tries
/// again, down to single rows: a request's failure is its own, never its neighbours'. A row
/// the database refuses (a constraint or trigger an operator added) costs about
/// `2 · log2(n)` extra statements; a database that is away fails every member at once
/// (each would earn the same answer alone).
fn insert_apart<'a>(
    pool: &'a Pool,
    tasks: &'a [&'a NewTask],
) -> Pin<Box<dyn Future<Output = HashMap<TaskId, Answer>> + Send + 'a>> {
    Box::pin(async move {
        match insert(pool, tasks).await {
            Ok(results) => results,
            Err(e) if tasks.len() == 1 || e.is_unavailable() => {
                tasks.iter().map(|t| (t.id, Err(e.clone().into()))).collect()
            }
            Err(e) => {
                tracing::debug!(rows = tasks.len(), error = %e, "coalesced insert failed; inserting its halves apart");
                let (left, right) = tasks.split_at(tasks.len() / 2);
                let mut results = insert_apart(pool, left).await;
                results.extend(insert_apart(pool, right).await);
                results
            }
        }
    })
}

/// One INSERT for all `tasks`; a task whose idempotency key is taken (by a stored task
/// or an earlier one in the same statement) gets [`EnqueueError::Duplicate`].
async fn insert(pool: &Pool, tasks: &[&NewTask]) -> StoreResult<HashMap<TaskId, Answer>> {
    let client = checkout(pool).await?;
    let columns = Columns::of(tasks);
    let stmt = client
        .prepare_cached(&format!("{} RETURNING {}", *INSERT_UNNEST, super::tasks::COLUMNS))
        .await
        .map_err(pg_err)?;
    let rows = client.query(&stmt, &columns.params()).await.map_err(pg_err)?;
    let mut results = HashMap::with_capacity(tasks.len());
    for row in &rows {
        let task = task_from_row(row)?;
        results.insert(task.id, Ok(task));
    }
    if results.len() < tasks.len() {
        let skipped: Vec<&NewTask> = tasks.iter().copied().filter(|t| !results.contains_key(&t.id)).collect();
        let keys: Vec<&str> = skipped.iter().filter_map(|t| t.idempotency_key.as_deref()).collect();
        let holders: HashMap<String, TaskId> = client
            .query("SELECT idempotency_key, id FROM tasks WHERE idempotency_key = ANY($1)", &[&keys])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), TaskId(r.get(1))))
            .collect();
        for t in skipped {
            let answer = match t.idempotency_key.as_ref().and_then(|k| holders.get(k)) {
                Some(existing) => Err(EnqueueError::Duplicate { existing: *existing }),
                None => Err(StoreError::internal("insert skipped a row without a key").into()),
            };
            results.insert(t.id, answer);
        }
    }
    Ok(results)
}
