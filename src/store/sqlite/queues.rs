//! Queues on SQLite: [`QueueStore`], and the lists the claim uses. The claim (in `tasks.rs`)
//! is one `BEGIN IMMEDIATE` transaction (one writer at a time, even across
//! processes), so the counts it reads cannot change before it writes: it counts the
//! queue's running tasks (per key too) and the starts in the rate's window, takes the first
//! queued tasks by priority and `run_at` that fit, and appends their start to the log. As
//! on PostgreSQL no counter is kept: the running rows are the count.

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{micros, sql_err, SqliteStore};
use crate::queue::{QueueCounts, QueueSettings, QueueView, Rate, SettingsChange};
use crate::store::error::StoreResult;
use crate::store::queues::QueueStore;

/// The queues the fast claim leaves to the limited claim: paused or limited ones.
pub(super) const CONTROLLED: &str = "SELECT name FROM queues WHERE paused OR concurrency IS NOT NULL \
     OR key_concurrency IS NOT NULL OR rate_limit IS NOT NULL";

/// Every controlled queue with its settings, by name: what one claim reads first.
pub(super) fn controlled_queues(conn: &Connection) -> StoreResult<Vec<(String, QueueSettings)>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT name, {SETTINGS} FROM queues WHERE name IN ({CONTROLLED}) ORDER BY name"))
        .map_err(sql_err)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, settings_from_row(r, 1)?))).map_err(sql_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
}

pub(super) const SETTINGS: &str = "paused, concurrency, key_concurrency, rate_limit, rate_per_s";

pub(super) fn settings_from_row(row: &Row, at: usize) -> rusqlite::Result<QueueSettings> {
    Ok(QueueSettings {
        paused: row.get::<_, Option<bool>>(at)?.unwrap_or(false),
        concurrency: row.get(at + 1)?,
        key_concurrency: row.get(at + 2)?,
        rate: match (row.get::<_, Option<i64>>(at + 3)?, row.get::<_, Option<f64>>(at + 4)?) {
            (Some(limit), Some(per_s)) => Some(Rate { limit, per_s }),
            _ => None,
        },
    })
}

fn counts(conn: &Connection, name: &str) -> rusqlite::Result<QueueCounts> {
    conn.query_row(
        "SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'running') \
         FROM tasks WHERE status IN ('queued', 'running') AND queue = ?1",
        params![name],
        |r| Ok(QueueCounts { queued: r.get(0)?, running: r.get(1)?, waiting: 0 }),
    )
}

fn settings_of(conn: &Connection, name: &str) -> rusqlite::Result<QueueSettings> {
    Ok(conn
        .query_row(&format!("SELECT {SETTINGS} FROM queues WHERE name = ?1"), params![name], |r| {
            settings_from_row(r, 0)
        })
        .optional()?
        .unwrap_or_default())
}

fn ensure_row(conn: &Connection, name: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO queues (name, updated_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        params![name, now],
    )
    .map(drop)
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn list_queues(&self) -> StoreResult<Vec<QueueView>> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name FROM queues UNION \
                     SELECT DISTINCT queue FROM tasks WHERE status IN ('queued', 'running') ORDER BY 1",
                )
                .map_err(sql_err)?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql_err)?;
            let names = names.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)?;
            names
                .into_iter()
                .map(|name| {
                    let settings = settings_of(conn, &name).map_err(sql_err)?;
                    let counts = counts(conn, &name).map_err(sql_err)?;
                    Ok(QueueView { name, settings, counts })
                })
                .collect()
        })
        .await
    }

    async fn get_queue(&self, name: &str) -> StoreResult<QueueView> {
        let name = name.to_string();
        self.call(move |conn| {
            let settings = settings_of(conn, &name).map_err(sql_err)?;
            let counts = counts(conn, &name).map_err(sql_err)?;
            Ok(QueueView { name, settings, counts })
        })
        .await
    }

    async fn change_queue(&self, name: &str, change: &SettingsChange) -> StoreResult<QueueSettings> {
        let (name, change) = (name.to_string(), *change);
        self.call(move |conn| {
            let now = micros(Utc::now());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_err)?;
            ensure_row(&tx, &name, now).map_err(sql_err)?;
            let s = change.applied_to(settings_of(&tx, &name).map_err(sql_err)?);
            tx.execute(
                "UPDATE queues SET concurrency = ?2, key_concurrency = ?3, rate_limit = ?4, rate_per_s = ?5, \
                 updated_at = ?6 WHERE name = ?1",
                params![name, s.concurrency, s.key_concurrency, s.rate.map(|r| r.limit), s.rate.map(|r| r.per_s), now],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
            Ok(s)
        })
        .await
    }

    async fn set_queue_paused(&self, name: &str, paused: bool) -> StoreResult<QueueSettings> {
        let name = name.to_string();
        self.call(move |conn| {
            let now = micros(Utc::now());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_err)?;
            ensure_row(&tx, &name, now).map_err(sql_err)?;
            tx.execute("UPDATE queues SET paused = ?2, updated_at = ?3 WHERE name = ?1", params![name, paused, now])
                .map_err(sql_err)?;
            let s = settings_of(&tx, &name).map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
            Ok(s)
        })
        .await
    }
}
