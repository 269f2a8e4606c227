//! The worker registry on PostgreSQL.

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::Row;

use super::{pg_err, PgStore};
use crate::registration::{NewWorker, WorkerRecord};
use crate::store::error::{StoreError, StoreResult};
use crate::store::workers::WorkerStore;
use crate::task::WorkerId;

const COLUMNS: &str = "id, name, types, queues, max_slots, labels, registered_at, last_heartbeat_at";

fn record(row: &Row) -> StoreResult<WorkerRecord> {
    let bad = |e: serde_json::Error| StoreError::internal("unreadable worker row").caused_by(e);
    let queues: Option<Value> = row.get(3);
    let labels: Value = row.get(5);
    Ok(WorkerRecord {
        worker_id: WorkerId(row.get(0)),
        name: row.get(1),
        types: serde_json::from_value(row.get(2)).map_err(bad)?,
        queues: queues.map(serde_json::from_value).transpose().map_err(bad)?,
        max_slots: row.get(4),
        labels: serde_json::from_value(labels).map_err(bad)?,
        registered_at: row.get(6),
        last_heartbeat_at: row.get(7),
    })
}

#[async_trait]
impl WorkerStore for PgStore {
    async fn register(&self, id: &WorkerId, worker: &NewWorker) -> StoreResult<WorkerRecord> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO workers (id, name, types, queues, max_slots, labels) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
                ),
                &[
                    &id.0,
                    &worker.name,
                    &serde_json::json!(worker.types),
                    &worker.queues.as_ref().map(|q| serde_json::json!(q)),
                    &worker.max_slots,
                    &Value::Object(worker.labels.clone()),
                ],
            )
            .await
            .map_err(pg_err)?;
        record(&row)
    }

    async fn beat(&self, id: &WorkerId) -> StoreResult<Option<WorkerRecord>> {
        let client = self.worker_client().await?;
        let row = client
            .query_opt(
                &format!("UPDATE workers SET last_heartbeat_at = now() WHERE id = $1 RETURNING {COLUMNS}"),
                &[&id.0],
            )
            .await
            .map_err(pg_err)?;
        row.as_ref().map(record).transpose()
    }

    async fn get(&self, id: &WorkerId) -> StoreResult<Option<WorkerRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {COLUMNS} FROM workers WHERE id = $1"), &[&id.0])
            .await
            .map_err(pg_err)?;
        row.as_ref().map(record).transpose()
    }

    async fn deregister(&self, id: &WorkerId) -> StoreResult<Option<u64>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let deleted = tx.execute("DELETE FROM workers WHERE id = $1", &[&id.0]).await.map_err(pg_err)?;
        if deleted == 0 {
            return Ok(None);
        }
        let released = tx
            .execute(
                "UPDATE tasks SET status = 'queued', attempts = attempts - 1, updated_at = now(), \
                   locked_by = NULL, locked_until = NULL, started_at = NULL \
                 WHERE status = 'running' AND locked_by = $1",
                &[&id.0],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(released))
    }

    async fn list(&self) -> StoreResult<Vec<(WorkerRecord, u64)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS}, (SELECT count(*) FROM tasks t WHERE t.status = 'running' AND t.locked_by = w.id) \
                     FROM workers w ORDER BY registered_at DESC, id"
                ),
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| Ok((record(r)?, r.get::<_, i64>(8) as u64))).collect()
    }

    async fn served_types(&self) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows =
            client.query("SELECT DISTINCT jsonb_array_elements_text(types) FROM workers", &[]).await.map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
