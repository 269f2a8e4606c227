//! The store: traits of domain operations, and a driver per database that implements them.
//!
//! The rest of the daemon never sees SQL. It sees three traits, chosen once at start-up by
//! [`Backend::open`] from `DATABASE_URL`:
//! - [`TaskStore`] (`tasks.rs`): enqueue, claim, heartbeat, finish, release, cancel, list…,
//!   and workflows ([`WorkflowStore`], `workflows.rs`: a workflow stored whole, a running
//!   step's spawn, read back);
//! - [`CwomStore`] (`cwom.rs`): create, read, list and update work objects;
//! - [`WorkerStore`] (`workers.rs`): the registry of remote workers;
//! - [`ScheduleStore`] (`schedules.rs`): schedules, and the transaction that fires a tick
//!   exactly once;
//! - [`QueueStore`] (`queues.rs`): each queue's pause and limits (the claim enforces them);
//! - [`Listener`] (`listener.rs`, optional): turns the database's notifications into
//!   wake-ups; PostgreSQL has one (LISTEN/NOTIFY), SQLite none (the worker polls).
//!
//! Each driver folder owns every statement of its dialect, its migrations
//! (`migrations/<dialect>/`), its connections and its private helpers:
//! - `sqlite/`: `mod.rs` (the connection, migrations, errors, the time codec), `tasks.rs`
//!   (the task codec and [`TaskStore`]), `cwom.rs` ([`CwomStore`]);
//! - `postgres/`: `mod.rs` (pools, migrations, errors), `tasks.rs` (the task codec and
//!   [`TaskStore`]), `intake.rs` (coalesced enqueues), `cwom.rs` ([`CwomStore`]),
//!   `listener.rs` ([`Listener`]).
//!
//! `cwom_mapping.rs` is the one dialect-neutral piece: how each CWOM kind maps onto its
//! table and join tables, which both drivers execute in their own SQL. Both drivers pass
//! the same conformance suites (`tests/integration/store_conformance.rs`, `tests/integration/cwom.rs`), and
//! `tests/integration/schema_parity.rs` checks that their migrated schemas match.

use std::sync::Arc;

use crate::config::DatabaseUrl;

pub mod cwom;
pub(crate) mod cwom_mapping;
pub mod error;
pub mod listener;
pub mod postgres;
pub mod queues;
pub mod schedules;
pub mod sqlite;
pub mod tasks;
pub mod workers;
pub mod workflows;

pub use cwom::{Change, CwomStore};
pub use error::{
    CancelError, DecideError, EnqueueError, NotAwaiting, RetryError, ScheduleError, SpawnError, StoreError,
    StoreErrorKind, StoreResult, WorkflowCreateError,
};
pub use listener::{Listener, ListenerStatus, NotificationSink};
pub use postgres::PgStore;
pub use queues::QueueStore;
pub use schedules::{FireParams, Fired, ScheduleStore, SchedulesFingerprint};
pub use sqlite::SqliteStore;
pub use tasks::{
    AttemptEnd, AttemptStore, ClaimParams, Count, Finish, IntakeStore, LeadParams, LeaseState, MaintenanceStore,
    MinuteCounts, OperatorStore, Overview, RenewParams, Rescued, TaskReads, TaskStore,
};
pub use workers::WorkerStore;
pub use workflows::{Spawn, Spawned, StepCounts, WorkflowStore};

/// An open, migrated database: its task store, its CWOM store, and its listener if the
/// database can notify.
#[derive(Clone)]
pub struct Backend {
    tasks: Arc<dyn TaskStore>,
    cwom: Arc<dyn CwomStore>,
    workers: Arc<dyn WorkerStore>,
    schedules: Arc<dyn ScheduleStore>,
    queues: Arc<dyn QueueStore>,
    listener: Option<Arc<dyn Listener>>,
    /// The SQLite store itself, when that is the database (see [`Backend::wake_locally`]).
    sqlite: Option<SqliteStore>,
}

impl Backend {
    /// Opens (and migrates) the database `DATABASE_URL` names.
    pub async fn open(url: &DatabaseUrl, pool_size: usize) -> StoreResult<Backend> {
        Ok(match url {
            DatabaseUrl::Sqlite(path) => Backend::sqlite(SqliteStore::open(path).await?),
            DatabaseUrl::Postgres(url) => Backend::postgres(PgStore::connect(url, pool_size).await?),
        })
    }

    /// The stores of an open SQLite file (no listener: the worker polls).
    pub fn sqlite(db: SqliteStore) -> Backend {
        Backend {
            tasks: Arc::new(db.clone()),
            cwom: Arc::new(sqlite::SqliteCwom::new(db.clone())),
            schedules: Arc::new(db.clone()),
            queues: Arc::new(db.clone()),
            workers: Arc::new(db.clone()),
            listener: None,
            sqlite: Some(db),
        }
    }

    /// The stores of an open PostgreSQL database, with its LISTEN connection.
    pub fn postgres(db: PgStore) -> Backend {
        Backend {
            tasks: Arc::new(db.clone()),
            cwom: Arc::new(postgres::PgCwom::new(db.clone())),
            listener: Some(Arc::new(postgres::PgListener::new(db.url()))),
            schedules: Arc::new(db.clone()),
            queues: Arc::new(db.clone()),
            workers: Arc::new(db),
            sqlite: None,
        }
    }

    /// The task store on this database.
    pub fn tasks(&self) -> Arc<dyn TaskStore> {
        self.tasks.clone()
    }

    /// The CWOM store on this database.
    pub fn cwom(&self) -> Arc<dyn CwomStore> {
        self.cwom.clone()
    }

    /// The worker registry on this database.
    pub fn workers(&self) -> Arc<dyn WorkerStore> {
        self.workers.clone()
    }

    /// The schedules on this database.
    pub fn schedules(&self) -> Arc<dyn ScheduleStore> {
        self.schedules.clone()
    }

    /// Gives the in-process wake-ups to a store that has no listener (SQLite: the end of
    /// an attempt in a limited queue frees a slot, and only this process can hear it).
    pub fn wake_locally(&self, sink: Arc<dyn NotificationSink>) {
        if let Some(db) = &self.sqlite {
            db.on_slot_freed(sink);
        }
    }

    /// The queue controls on this database.
    pub fn queues(&self) -> Arc<dyn QueueStore> {
        self.queues.clone()
    }

    /// The database's notification listener, when it has one.
    pub fn listener(&self) -> Option<Arc<dyn Listener>> {
        self.listener.clone()
    }
}
