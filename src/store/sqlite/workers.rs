//! The worker registry on SQLite.

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{conversion, fmt_ts, parse_ts, sql_err, SqliteStore};
use crate::registration::{NewWorker, WorkerRecord};
use crate::store::error::StoreResult;
use crate::store::workers::WorkerStore;
use crate::task::WorkerId;

const COLUMNS: &str = "id, name, types, queues, max_slots, labels, registered_at, last_heartbeat_at";

fn json<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| conversion(idx, e.to_string()))
}

fn time(row: &Row, idx: usize) -> rusqlite::Result<chrono::DateTime<Utc>> {
    let s: String = row.get(idx)?;
    parse_ts(&s).map_err(|m| conversion(idx, m))
}

fn record(row: &Row) -> rusqlite::Result<WorkerRecord> {
    let queues: Option<String> = row.get(3)?;
    Ok(WorkerRecord {
        worker_id: WorkerId(row.get(0)?),
        name: row.get(1)?,
        types: json(row, 2)?,
        queues: queues.map(|q| serde_json::from_str(&q).map_err(|e| conversion(3, e.to_string()))).transpose()?,
        max_slots: row.get(4)?,
        labels: json(row, 5)?,
        registered_at: time(row, 6)?,
        last_heartbeat_at: time(row, 7)?,
    })
}

fn get(conn: &Connection, id: &str) -> StoreResult<Option<WorkerRecord>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM workers WHERE id = ?1"))
        .map_err(sql_err)?
        .query_row([id], record)
        .optional()
        .map_err(sql_err)
}

#[async_trait]
impl WorkerStore for SqliteStore {
    async fn register(&self, id: &WorkerId, worker: &NewWorker) -> StoreResult<WorkerRecord> {
        let (id, worker) = (id.0.clone(), worker.clone());
        self.call(move |conn| {
            let now = fmt_ts(Utc::now());
            conn.prepare_cached(&format!(
                "INSERT INTO workers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING {COLUMNS}"
            ))
            .map_err(sql_err)?
            .query_row(
                params![
                    id,
                    worker.name,
                    serde_json::to_string(&worker.types).expect("strings serialise"),
                    worker.queues.as_ref().map(|q| serde_json::to_string(q).expect("strings serialise")),
                    worker.max_slots,
                    serde_json::Value::Object(worker.labels.clone()).to_string(),
                    now
                ],
                record,
            )
            .map_err(sql_err)
        })
        .await
    }

    async fn beat(&self, id: &WorkerId) -> StoreResult<Option<WorkerRecord>> {
        let id = id.0.clone();
        self.call(move |conn| {
            conn.prepare_cached(&format!("UPDATE workers SET last_heartbeat_at = ?2 WHERE id = ?1 RETURNING {COLUMNS}"))
                .map_err(sql_err)?
                .query_row(params![id, fmt_ts(Utc::now())], record)
                .optional()
                .map_err(sql_err)
        })
        .await
    }

    async fn get(&self, id: &WorkerId) -> StoreResult<Option<WorkerRecord>> {
        let id = id.0.clone();
        self.call(move |conn| get(conn, &id)).await
    }

    async fn deregister(&self, id: &WorkerId) -> StoreResult<Option<u64>> {
        let id = id.0.clone();
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            let deleted = tx.execute("DELETE FROM workers WHERE id = ?1", [&id]).map_err(sql_err)?;
            if deleted == 0 {
                return Ok(None);
            }
            let released = tx
                .execute(
                    "UPDATE tasks SET status = 'queued', attempts = attempts - 1, updated_at = ?2, \
                       locked_by = NULL, locked_until = NULL, started_at = NULL \
                     WHERE status = 'running' AND locked_by = ?1",
                    params![id, super::micros(Utc::now())],
                )
                .map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
            Ok(Some(released as u64))
        })
        .await
    }

    async fn list(&self) -> StoreResult<Vec<(WorkerRecord, u64)>> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, (SELECT count(*) FROM tasks t WHERE t.status = 'running' AND t.locked_by = w.id) \
                     FROM workers w ORDER BY registered_at DESC, id"
                ))
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| Ok((record(r)?, r.get::<_, i64>(8)? as u64)))
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
        })
        .await
    }

    async fn served_types(&self) -> StoreResult<Vec<String>> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT j.value FROM workers, json_each(workers.types) AS j")
                .map_err(sql_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<String>>>().map_err(sql_err)
        })
        .await
    }
}
