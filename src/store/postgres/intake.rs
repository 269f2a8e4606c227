//! Intake: many single-task enqueues, one INSERT.
//!
//! A transaction that sends NOTIFY holds a cluster-wide lock until its commit is flushed,
//! so single-row notifying INSERTs top out near 4,600/s however many connections send
//! them. Requests that arrive while an insert is in flight therefore wait in a queue and
//! go together in the next one: one statement, one commit, one notification. Every
//! request still gets its own task, or its own error (a used idempotency key).

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{pg_err, task_from_row};
use crate::store::{StoreError, StoreResult};
use crate::task::{NewTask, Task, TaskId};

/// Most enqueues folded into one INSERT.
const MAX_ROWS: usize = 512;
/// Inserts in flight at once: while one waits for its commit, the next gathers requests.
const LANES: usize = 4;
/// Requests that may wait; past this, enqueue callers wait for room (backpressure).
const QUEUE: usize = 8192;

struct Pending {
    task: NewTask,
    reply: oneshot::Sender<StoreResult<Task>>,
}

/// The queue in front of the coalescing inserters.
#[derive(Clone)]
pub(super) struct Intake {
    tx: mpsc::Sender<Pending>,
}

impl Intake {
    /// Starts the inserter lanes on `pool`; they stop when every `Intake` is dropped.
    pub(super) fn start(pool: Pool) -> Intake {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..LANES {
            tokio::spawn(lane(pool.clone(), rx.clone()));
        }
        Intake { tx }
    }

    pub(super) async fn enqueue(&self, task: NewTask) -> StoreResult<Task> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { task, reply })
            .await
            .map_err(|_| StoreError::Internal("enqueue intake stopped".into()))?;
        answer.await.map_err(|_| StoreError::Internal("enqueue intake dropped a request".into()))?
    }
}

/// Takes whatever is queued (up to [`MAX_ROWS`]) and inserts it, until the queue closes.
async fn lane(pool: Pool, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    let mut batch = Vec::with_capacity(MAX_ROWS);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_ROWS).await == 0 {
                return;
            }
        }
        let tasks: Vec<&NewTask> = batch.iter().map(|p| &p.task).collect();
        match insert(&pool, &tasks).await {
            Ok(mut results) => {
                for p in batch.drain(..) {
                    let answer = results
                        .remove(&p.task.id)
                        .unwrap_or_else(|| Err(StoreError::Internal("row missing from the insert".into())));
                    let _ = p.reply.send(answer);
                }
            }
            Err(e) => {
                // StoreError is not Clone: every request gets the same words.
                let unavailable = matches!(e, StoreError::Unavailable(_));
                let msg = e.to_string();
                for p in batch.drain(..) {
                    let err = if unavailable {
                        StoreError::Unavailable(msg.clone())
                    } else {
                        StoreError::Internal(msg.clone())
                    };
                    let _ = p.reply.send(Err(err));
                }
            }
        }
    }
}

/// One INSERT for all `tasks`; a task whose idempotency key is taken (by a stored task
/// or an earlier one in the same statement) gets [`StoreError::Duplicate`].
async fn insert(pool: &Pool, tasks: &[&NewTask]) -> StoreResult<HashMap<TaskId, StoreResult<Task>>> {
    let client = pool.get().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let columns = Columns::of(tasks.iter().copied());
    let stmt = client.prepare_cached(&format!("{INSERT_UNNEST} RETURNING *")).await.map_err(pg_err)?;
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
                Some(existing) => Err(StoreError::Duplicate { existing: *existing }),
                None => Err(StoreError::Internal("insert skipped a row without a key".into())),
            };
            results.insert(t.id, answer);
        }
    }
    Ok(results)
}

/// Inserts rows from column arrays; the caller appends its RETURNING clause.
pub(super) const INSERT_UNNEST: &str = "INSERT INTO tasks (id, type, payload, queue, priority, run_at, max_attempts, \
     timeout_seconds, idempotency_key, trace_id, cwom_issue_id) \
     SELECT u.id, u.type, u.payload, u.queue, u.priority, coalesce(u.run_at, now()), \
            u.max_attempts, u.timeout_seconds, u.idempotency_key, u.trace_id, u.cwom_issue_id \
     FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[], $5::int4[], \
                 $6::timestamptz[], $7::int4[], $8::int4[], $9::text[], $10::text[], $11::text[]) \
       AS u(id, type, payload, queue, priority, run_at, max_attempts, timeout_seconds, idempotency_key, trace_id, \
            cwom_issue_id) \
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING";

/// New tasks as one array per column, the parameters of [`INSERT_UNNEST`].
pub(super) struct Columns<'a> {
    pub ids: Vec<Uuid>,
    types: Vec<&'a str>,
    payloads: Vec<&'a serde_json::Value>,
    queues: Vec<&'a str>,
    priorities: Vec<i32>,
    run_ats: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    max_attempts: Vec<i32>,
    timeouts: Vec<i32>,
    keys: Vec<Option<&'a str>>,
    trace_ids: Vec<Option<&'a str>>,
    cwom_issue_ids: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    pub(super) fn of(tasks: impl ExactSizeIterator<Item = &'a NewTask>) -> Self {
        let n = tasks.len();
        let mut c = Columns {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            queues: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            timeouts: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            trace_ids: Vec::with_capacity(n),
            cwom_issue_ids: Vec::with_capacity(n),
        };
        for t in tasks {
            c.ids.push(t.id.0);
            c.types.push(&t.task_type);
            c.payloads.push(&t.payload);
            c.queues.push(&t.queue);
            c.priorities.push(t.priority);
            c.run_ats.push(t.run_at);
            c.max_attempts.push(t.max_attempts);
            c.timeouts.push(t.timeout_seconds);
            c.keys.push(t.idempotency_key.as_deref());
            c.trace_ids.push(t.trace_id.as_deref());
            c.cwom_issue_ids.push(t.cwom_issue_id.as_deref());
        }
        c
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.ids,
            &self.types,
            &self.payloads,
            &self.queues,
            &self.priorities,
            &self.run_ats,
            &self.max_attempts,
            &self.timeouts,
            &self.keys,
            &self.trace_ids,
            &self.cwom_issue_ids,
        ]
    }
}
