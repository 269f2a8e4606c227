//! The PostgreSQL side: a throwaway database per scenario run and the bench's own SQL.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::support::{Context, Result, TaskCounts};

/// Connects, driving the connection on a task of its own.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The server named by TEST_DATABASE_URL, through a superuser connection that creates
/// and drops the scenario databases.
pub struct PgServer {
    admin: Client,
    admin_url: String,
}

/// One scenario run's database: created empty, so every run starts from the same state.
pub struct PgDatabase {
    name: String,
    pub url: String,
}

impl PgServer {
    pub async fn connect(admin_url: &str) -> Result<PgServer> {
        Ok(PgServer { admin: connect(admin_url).await?, admin_url: admin_url.to_string() })
    }

    pub async fn version(&self) -> Result<String> {
        let row = self.admin.query_one("SHOW server_version", &[]).await.context("SHOW server_version")?;
        Ok(row.get(0))
    }

    pub async fn create_database(&self) -> Result<PgDatabase> {
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        self.admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let url = with_database(&self.admin_url, &name)?;
        Ok(PgDatabase { name, url })
    }

    /// Drops the database even if a daemon still holds connections to it. A failure is
    /// only printed: it costs disk space, not correctness.
    pub async fn drop_database(&self, db: PgDatabase) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name);
        if let Err(e) = self.admin.batch_execute(&sql).await {
            eprintln!("[bench] warning: {sql} failed: {e}");
        }
    }
}

/// Inserts `n` echo tasks exactly as another service would, one statement (and so one
/// NOTIFY) each, `pause` apart so that the daemon sees them one by one.
pub async fn insert_one_by_one(client: &Client, n: usize, pause: Duration) -> Result<()> {
    let insert = client
        .prepare("INSERT INTO tasks (type, payload) VALUES ('echo', '{}')")
        .await
        .context("preparing the INSERT")?;
    for _ in 0..n {
        client.execute(&insert, &[]).await.context("INSERT INTO tasks")?;
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

/// Inserts `n` echo tasks in one statement: a backlog for the worker to drain.
pub async fn insert_backlog(client: &Client, n: usize) -> Result<()> {
    let sql = format!(
        "INSERT INTO tasks (type, payload) \
         SELECT 'echo', jsonb_build_object('i', g) FROM generate_series(1, {n}) g"
    );
    client.batch_execute(&sql).await.context("inserting the backlog")
}

/// Inserts a backlog of `n` no-op tasks in the queue `limited` (with `keys` concurrency keys
/// in turn, none when 0) and that queue's row with the limit `setting` (SQL, e.g.
/// `concurrency = 64`).
pub async fn insert_keyed_backlog(client: &Client, n: usize, keys: usize, setting: &str) -> Result<()> {
    let key = if keys == 0 { "NULL".to_string() } else { format!("'k' || (g % {keys})") };
    let sql = format!(
        "INSERT INTO queues (name) VALUES ('limited'); UPDATE queues SET {setting} WHERE name = 'limited'; \
         INSERT INTO tasks (type, payload, queue, concurrency_key) \
         SELECT 'echo', jsonb_build_object('i', g), 'limited', {key} FROM generate_series(1, {n}) g"
    );
    client.batch_execute(&sql).await.context("inserting the limited backlog")
}

/// Inserts `n` schedules that do not tick during a drain (at midnight on the first of
/// January, UTC), in one statement.
pub async fn insert_idle_schedules(client: &Client, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO schedules (name, cron, timezone, template, catch_up, catch_up_window_s, overlap, fired_through) \
         SELECT 'idle-' || g, '0 0 1 1 *', 'UTC', '{{\"type\": \"echo\"}}'::jsonb, 'skip', 3600, 'skip', now() \
         FROM generate_series(1, {n}) g"
    );
    client.batch_execute(&sql).await.context("inserting the idle schedules")
}

/// Inserts `n` tasks of history for the dashboard scenarios, in one statement, then lets
/// the database catch up as autovacuum would (VACUUM ANALYZE: statistics and the visibility
/// map). A day's worth: 95% completed, 3% failed, 1% cancelled, 1% queued; five queues,
/// three types; finished times spread over the last 24 hours (about 40,000 in the chart's
/// last hour at a million rows). Returns the id of a failed task in the middle, where a
/// second page of failed tasks starts.
pub async fn insert_history(client: &Client, n: usize) -> Result<String> {
    let sql = format!(
        "INSERT INTO tasks (type, payload, queue, status, attempts, created_at, updated_at, started_at, finished_at, last_error, result) \
         SELECT (ARRAY['echo', 'build', 'deploy'])[1 + g % 3], jsonb_build_object('i', g), 'q' || (g % 5), s, \
                CASE WHEN s = 'queued' THEN 0 ELSE 1 END, t - interval '2 seconds', t, \
                CASE WHEN s = 'queued' THEN NULL ELSE t - interval '1 second' END, \
                CASE WHEN s = 'queued' THEN NULL ELSE t END, \
                CASE WHEN s = 'failed' THEN 'exit status 1: tests failed' END, \
                CASE WHEN s = 'completed' THEN jsonb_build_object('ok', true) END \
         FROM (SELECT g, now() - ({n} - g) * (interval '86400 seconds' / {n}) AS t, \
                      CASE WHEN g % 100 < 95 THEN 'completed' WHEN g % 100 < 98 THEN 'failed' \
                           WHEN g % 100 < 99 THEN 'cancelled' ELSE 'queued' END AS s \
               FROM generate_series(1, {n}) g) AS h"
    );
    client.batch_execute(&sql).await.context("inserting the history")?;
    client.batch_execute("VACUUM ANALYZE tasks").await.context("VACUUM ANALYZE tasks")?;
    let stored: i64 = client.query_one("SELECT count(*) FROM tasks", &[]).await.context("counting the history")?.get(0);
    if stored != n as i64 {
        return Err(format!("inserted {n} tasks of history, but {stored} are stored").into());
    }
    let row = client
        .query_one(
            "SELECT id::text FROM tasks WHERE status = 'failed' ORDER BY id OFFSET (SELECT count(*) / 2 FROM tasks WHERE status = 'failed') LIMIT 1",
            &[],
        )
        .await
        .context("finding a failed task in the middle")?;
    Ok(row.get(0))
}

/// Whether any task is still queued or running. Each half reads the first entry of a
/// partial index, so watching a drain costs the database next to nothing (a full count
/// took 20-40 ms of its CPU on a 100,000-task table, five times a second).
pub async fn any_unfinished(client: &Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'queued') \
                 OR EXISTS (SELECT 1 FROM tasks WHERE status = 'running')",
            &[],
        )
        .await
        .context("looking for unfinished tasks")?;
    Ok(row.get(0))
}

pub async fn task_counts(client: &Client) -> Result<TaskCounts> {
    let row = client
        .query_one(
            "SELECT count(*), \
                    count(*) FILTER (WHERE status = 'completed'), \
                    count(*) FILTER (WHERE status IN ('failed', 'cancelled')), \
                    min(last_error) FILTER (WHERE status IN ('failed', 'cancelled')) \
             FROM tasks",
            &[],
        )
        .await
        .context("counting tasks")?;
    Ok(TaskCounts { total: row.get(0), completed: row.get(1), failed: row.get(2), sample_error: row.get(3) })
}

/// Dispatch latency of every task, `started_at - created_at`, both on the database clock.
pub async fn start_latencies_ms(client: &Client) -> Result<Vec<f64>> {
    let rows = client
        .query(
            "SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8 FROM tasks \
             WHERE started_at IS NOT NULL",
            &[],
        )
        .await
        .context("reading latencies")?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Seconds from the first claim to the last completion, on the database clock.
pub async fn drain_seconds(client: &Client) -> Result<f64> {
    let row = client
        .query_one("SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 FROM tasks", &[])
        .await
        .context("reading the drain span")?;
    Ok(row.get::<_, Option<f64>>(0).ok_or("no task was run")?)
}

/// `url` with its database name replaced (and its query string kept).
fn with_database(url: &str, name: &str) -> Result<String> {
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| format!("TEST_DATABASE_URL is not a URL: {}", redact(url)))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_string(),
    }
}
