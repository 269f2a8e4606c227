//! The PostgreSQL driver: tokio-postgres on deadpool pools, owning every PostgreSQL
//! statement (tasks in `tasks.rs`, `intake.rs` and `ends.rs`, workflows in `workflows.rs`,
//! CWOM in `cwom.rs`), the LISTEN connection (`listener.rs`) and the migrations in
//! `migrations/postgres/`.
//!
//! Every hot operation is one round trip with a cached prepared statement: the claim is a
//! `FOR UPDATE SKIP LOCKED` CTE plus `UPDATE … RETURNING`, a whole batch of finished
//! attempts is one `UPDATE … FROM unnest(…)`, and concurrent enqueues are folded into one
//! INSERT by the `intake` module. Times come from the database clock (`now()`), so several
//! daemons on several hosts agree on leases and schedules.
//!
//! Three pools, because writes need different durability and plans. Enqueues (and the
//! API's other writes) commit durably: a 201 means the task survives a crash. The worker's
//! bookkeeping (claim, renew, finish, rescue, leadership) commits with
//! `synchronous_commit = off`: a commit lost in a database crash only means the task is
//! claimed or run again, which at-least-once delivery already allows, and not waiting for
//! the WAL flush on every claim and finish is most of the drain rate. Those connections
//! also pin their plans ([`WORKER_SETTINGS`]); the claim has connections and planner
//! settings of its own ([`CLAIM_SETTINGS`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::error::{StoreError, StoreResult};
use crate::tunables::{CLAIM_POOL_SIZE, CONNECT_TIMEOUT, DB_POOL_MIN, POOL_WAIT, WORKER_POOL_SIZE};

mod cwom;
mod ends;
mod intake;
mod listener;
mod queues;
mod schedules;
mod tasks;
mod workers;
mod workflows;

pub(crate) use cwom::PgCwom;
pub use listener::{PgListener, APPLICATION_NAME as LISTENER_APPLICATION_NAME};
pub use tasks::{CLAIM, FINISH, FINISH_IDS, LEAD, RELEASE, RENEW, RESCUE};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The channel the insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "jct_tasks";

/// The channel a cancelled running task's id is sent on, for the daemon running it.
pub const CANCEL_CHANNEL: &str = "jct_cancel";

/// Settings of the worker's bookkeeping connections (claim, heartbeat, finish, release,
/// rescue).
///
/// `synchronous_commit = off`: see the module doc. The rest pins the plans. Every statement
/// there reaches its rows by id (or through a partial index), so a join is always a nested
/// loop over the primary key. A custom plan sees the batch's real size and this daemon's
/// worker id, and on a table the planner knows little about (right after a bulk load, never
/// analyzed) it expected one running row for this worker and seq-scanned the table for
/// every finish. The generic plan expects a few ids and looks each one up through the
/// primary key whatever the statistics say, and is planned once per connection.
pub const WORKER_SETTINGS: &[(&str, &str)] = &[
    ("synchronous_commit", "off"),
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// What the claim's own connections set on top of [`WORKER_SETTINGS`]: no bitmap scans.
/// A table that has never been analyzed makes the planner expect a few hundred queued
/// rows, and it then prefers a bitmap scan of every queued row plus a sort to the claim
/// index's ordered scan, until autovacuum analyzes the table. Only the claim runs without
/// them: the heartbeat's and release's lookups of many ids use them. (The worker's join
/// settings matter to the claim too: its generic plan guesses a tenth of the table for
/// `LIMIT $1`, and with hash joins allowed it would join the claimed ids by hashing a scan
/// of the whole table.)
pub const CLAIM_SETTINGS: &[(&str, &str)] = &[("enable_bitmapscan", "off")];

/// Serialises migrations across daemons starting at once (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x004a_4354_5f6d_6967; // "JCT_mig"

/// An open, migrated PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    url: String,
    /// Durable commits: enqueue, cancel, reads, and CWOM.
    pool: Pool,
    /// [`WORKER_SETTINGS`]: the worker's finish/lease bookkeeping.
    worker_pool: Pool,
    /// The same plus [`CLAIM_SETTINGS`]: claims only (a daemon has one in flight at a time).
    claim_pool: Pool,
    intake: intake::Intake,
    /// Attempt ends reported by remote workers, coalesced into few statements.
    ends: ends::Ends,
    /// Whether the last claim found a paused or limited queue: the next claims around it.
    controlled_seen: Arc<AtomicBool>,
}

impl PgStore {
    /// Migrates the database (under an advisory lock) and opens a pool of `pool_size`.
    pub async fn connect(url: &str, pool_size: usize) -> StoreResult<Self> {
        migrate(url).await?;
        Self::connect_no_migrate(url, pool_size)
    }

    /// A pool without running migrations (for tools that know the schema is current).
    pub fn connect_no_migrate(url: &str, pool_size: usize) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::internal("bad PostgreSQL URL").caused_by(e))?;
        if config.get_application_name().is_none() {
            config.application_name("jct");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let pool = build_pool(config.clone(), pool_size.max(DB_POOL_MIN))?;
        let worker = with_settings(config, WORKER_SETTINGS);
        let worker_pool = build_pool(worker.clone(), WORKER_POOL_SIZE)?;
        let claim_pool = build_pool(with_settings(worker, CLAIM_SETTINGS), CLAIM_POOL_SIZE)?;
        let intake = intake::Intake::start(pool.clone());
        let ends = ends::Ends::start(worker_pool.clone());
        Ok(PgStore {
            url: url.to_string(),
            pool,
            worker_pool,
            claim_pool,
            intake,
            ends,
            controlled_seen: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The URL this store connects to (the listener opens its own connection with it).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A pooled connection with durable commits.
    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        checkout(&self.pool).await
    }

    /// A pooled connection for the worker's bookkeeping (commits not waited for).
    async fn worker_client(&self) -> StoreResult<deadpool_postgres::Object> {
        checkout(&self.worker_pool).await
    }

    /// A pooled connection for claims.
    async fn claim_client(&self) -> StoreResult<deadpool_postgres::Object> {
        checkout(&self.claim_pool).await
    }
}

async fn checkout(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        other => StoreError::unavailable("no database connection available").caused_by(other),
    })
}

/// `config` with server settings added to its startup options (`-c name=value`).
fn with_settings(mut config: tokio_postgres::Config, settings: &[(&str, &str)]) -> tokio_postgres::Config {
    let mut options = config.get_options().unwrap_or_default().to_string();
    for (name, value) in settings {
        options.push_str(&format!(" -c {name}={value}"));
    }
    config.options(options.trim_start());
    config
}

fn build_pool(config: tokio_postgres::Config, size: usize) -> StoreResult<Pool> {
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::internal("cannot build the connection pool").caused_by(e))
}

/// Runs the embedded migrations on their own connection, one daemon at a time.
pub async fn migrate(url: &str) -> StoreResult<()> {
    let (mut client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(pg_err)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_err)?;
    let result = embedded::migrations::runner().run_async(&mut client).await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    drop(client);
    let _ = driver.await;
    result.map(|_| ()).map_err(|e| StoreError::internal("PostgreSQL migration failed").caused_by(e))
}

/// The one conversion of a tokio-postgres error. Connection-class SQLSTATEs (08…), a
/// server shutting down or refusing connections, and errors without a SQLSTATE (the socket
/// broke or never opened) are "unavailable"; the rest are internal. The SQLSTATE and the
/// server's own message are kept (tokio-postgres displays a server error as "db error").
fn pg_err(e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    };
    let unavailable = match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
        None => true,
    };
    // Data exceptions (22), integrity constraint violations (23) and exceptions raised by
    // a trigger (P0001): the database refused this statement's data.
    let refused = e
        .code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23") || *c == SqlState::RAISE_EXCEPTION);
    let base = if unavailable {
        StoreError::unavailable(message)
    } else if refused {
        StoreError::refused(message)
    } else {
        StoreError::internal(message)
    };
    let base = match e.code() {
        Some(code) => base.with_code(code.code()),
        None => base,
    };
    base.caused_by(e)
}

/// Seconds of a lease as the float the statements take.
fn lease_secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}
