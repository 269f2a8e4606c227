//! Queues on PostgreSQL: [`QueueStore`], and the lists the claims (in `tasks.rs`) use.
//!
//! The fast claim leaves out every queue that is paused or limited, by a list read once per
//! statement (an empty array when no queue has a control). A limited queue is claimed from
//! one queue per transaction:
//! 1. `SELECT … FROM queues WHERE name = $1 FOR UPDATE SKIP LOCKED`: one claim of this
//!    queue at a time in the whole fleet. A claimer that finds the row taken takes nothing
//!    from the queue rather than waiting in line (with four daemons and four workers woken by
//!    one freed slot, waiting serialised every one of them behind the lock for each slot);
//! 2. one statement (its snapshot is taken after the lock, so it sees every running task
//!    the claims before it made) counts the queue's running tasks, per key too, and the
//!    starts in the rate's window, picks the first queued tasks by priority and `run_at`
//!    that fit, claims them (`limited = true`, so their end wakes the fleet through the
//!    `tasks_notify_slot_freed` trigger) and appends their start to the rate's log;
//! 3. when it left room and work behind (it wanted fewer than fit), it notifies the fleet
//!    before committing, so a claimer that skipped the lock comes back for the rest.
//!
//! No counter is kept anywhere: the running rows are the count, so every way an attempt
//! ends (finish, cancel, release, rescue after a lease ran out) frees its slot.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{pg_err, PgStore, NOTIFY_CHANNEL};
use crate::queue::{QueueCounts, QueueSettings, QueueView, Rate, SettingsChange};
use crate::store::error::StoreResult;
use crate::store::queues::QueueStore;

/// A queue row with a limit set ([`crate::queue::QueueSettings::limited`] in SQL).
macro_rules! limits_set {
    () => {
        "(concurrency IS NOT NULL OR key_concurrency IS NOT NULL OR rate_limit IS NOT NULL)"
    };
}

/// The queues the fast claim must leave to the limited claim: paused or limited ones.
pub(super) const CONTROLLED: &str = concat!("ARRAY(SELECT name FROM queues WHERE paused OR ", limits_set!(), ")");

/// Every controlled queue, and whether a claim may take from it under its limits (it is
/// limited and not paused), by name. No row: no queue has a control, and the claim is the
/// plain one.
pub(super) const CONTROLLED_LIST: &str = concat!(
    "SELECT name, NOT paused AND ",
    limits_set!(),
    " FROM queues WHERE paused OR ",
    limits_set!(),
    " ORDER BY name"
);

pub(super) const SETTINGS: &str = "paused, concurrency, key_concurrency, rate_limit, rate_per_s";

pub(super) fn settings_from_row(row: &Row, at: usize) -> QueueSettings {
    let get_limit = |i: usize| row.get::<_, Option<i32>>(at + i).map(i64::from);
    QueueSettings {
        paused: row.get(at),
        concurrency: get_limit(1),
        key_concurrency: get_limit(2),
        rate: match (row.get::<_, Option<i32>>(at + 3), row.get::<_, Option<f64>>(at + 4)) {
            (Some(limit), Some(per_s)) => Some(Rate { limit: limit.into(), per_s }),
            _ => None,
        },
    }
}

fn counts_from_row(row: &Row, at: usize) -> QueueCounts {
    QueueCounts { queued: row.get(at), running: row.get(at + 1), waiting: 0 }
}

#[async_trait]
impl QueueStore for PgStore {
    async fn list_queues(&self) -> StoreResult<Vec<QueueView>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH live AS ( \
                       SELECT queue, count(*) FILTER (WHERE status = 'queued') AS queued, \
                              count(*) FILTER (WHERE status = 'running') AS running \
                       FROM tasks WHERE status IN ('queued', 'running') GROUP BY queue) \
                     SELECT coalesce(q.name, live.queue), coalesce(q.paused, false), q.concurrency, \
                            q.key_concurrency, q.rate_limit, q.rate_per_s, \
                            coalesce(live.queued, 0), coalesce(live.running, 0) \
                     FROM queues q FULL JOIN live ON live.queue = q.name ORDER BY 1",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| QueueView { name: r.get(0), settings: settings_from_row(r, 1), counts: counts_from_row(r, 6) })
            .collect())
    }

    async fn get_queue(&self, name: &str) -> StoreResult<QueueView> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(q.paused, false), q.concurrency, q.key_concurrency, q.rate_limit, q.rate_per_s, \
                       (SELECT count(*) FROM tasks WHERE status = 'queued' AND queue = $1), \
                       (SELECT count(*) FROM tasks WHERE status = 'running' AND queue = $1) \
                     FROM (SELECT 1) one LEFT JOIN queues q ON q.name = $1",
                &[&name],
            )
            .await
            .map_err(pg_err)?;
        Ok(QueueView { name: name.to_string(), settings: settings_from_row(&row, 0), counts: counts_from_row(&row, 5) })
    }

    async fn change_queue(&self, name: &str, change: &SettingsChange) -> StoreResult<QueueSettings> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute("INSERT INTO queues (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", &[&name])
            .await
            .map_err(pg_err)?;
        let row = tx
            .query_one(&format!("SELECT {SETTINGS} FROM queues WHERE name = $1 FOR UPDATE"), &[&name])
            .await
            .map_err(pg_err)?;
        let s = change.applied_to(settings_from_row(&row, 0));
        let limit = |v: Option<i64>| v.map(|n| n as i32);
        tx.execute(
            "UPDATE queues SET concurrency = $2, key_concurrency = $3, rate_limit = $4, rate_per_s = $5, \
               updated_at = now() WHERE name = $1",
            &[
                &name,
                &limit(s.concurrency),
                &limit(s.key_concurrency),
                &limit(s.rate.map(|r| r.limit)),
                &s.rate.map(|r| r.per_s),
            ],
        )
        .await
        .map_err(pg_err)?;
        // A raised or removed limit frees slots: wake whoever waits for them.
        tx.execute("SELECT pg_notify($1, '')", &[&NOTIFY_CHANNEL]).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(s)
    }

    async fn set_queue_paused(&self, name: &str, paused: bool) -> StoreResult<QueueSettings> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO queues (name, paused) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET paused = $2, updated_at = now() RETURNING {SETTINGS}"
                ),
                &[&name, &paused],
            )
            .await
            .map_err(pg_err)?;
        if !paused {
            tx.execute("SELECT pg_notify($1, '')", &[&NOTIFY_CHANNEL]).await.map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(settings_from_row(&row, 0))
    }
}
