//! The SQLite driver: one file through rusqlite, owning every SQLite statement (tasks in
//! `tasks.rs`, workflows in `workflows.rs`, CWOM in `cwom.rs`), the migrations in
//! `migrations/sqlite/`, and the forms of times in the file: INTEGER microseconds since the Unix epoch in `tasks` (compared as
//! numbers, right by construction; V5's triggers convert times written by hand as text),
//! fixed-width UTC text in the CWOM tables.
//!
//! SQLite serialises writers, so one connection behind a mutex is both simple and as fast
//! as the file allows; every call runs on tokio's blocking pool so the async workers never
//! wait on disk. WAL mode and a busy timeout let a second process (another daemon, or a
//! service inserting rows by hand) share the file. No transaction is ever held while a
//! handler runs: each operation is one short statement or batch.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::Connection;

use super::error::{StoreError, StoreResult};
use crate::tunables::{SQLITE_BUSY_TIMEOUT, SQLITE_MIGRATE_RETRY, SQLITE_MIGRATE_TRIES};

mod cwom;
mod queues;
mod schedules;
mod tasks;
mod workers;
mod workflows;

pub(crate) use cwom::SqliteCwom;

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

/// An open, migrated SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Told when an attempt in a limited queue ends: one process writes the file, so this
    /// is how the slot it freed reaches its claimers (PostgreSQL has a trigger and NOTIFY).
    slot_freed: Arc<std::sync::RwLock<Option<Arc<dyn crate::store::NotificationSink>>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database file.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let p = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> StoreResult<Connection> {
            let mut conn = Connection::open(&p)
                .map_err(|e| StoreError::unavailable(format!("cannot open {}", p.display())).caused_by(e))?;
            conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(sql_err)?;
            conn.pragma_update(None, "journal_mode", "WAL").map_err(sql_err)?;
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql_err)?;
            conn.pragma_update(None, "foreign_keys", "ON").map_err(sql_err)?;
            // A step's cancel goes on down through V11's trigger firing again.
            conn.pragma_update(None, "recursive_triggers", "ON").map_err(sql_err)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::internal("the SQLite open job failed").caused_by(e))??;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)), slot_freed: Arc::default() })
    }

    /// Where the end of an attempt in a limited queue is announced (the daemon's wake-ups).
    pub fn on_slot_freed(&self, sink: Arc<dyn crate::store::NotificationSink>) {
        *self.slot_freed.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Wakes the claimers when `ended` attempts included one in a limited queue.
    fn slots_freed(&self, ended: bool) {
        if ended {
            if let Some(sink) = self.slot_freed.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
                sink.tasks_claimable();
            }
        }
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-done statement behind
            // (SQLite rolls back), so a poisoned lock is still a usable connection.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::internal("a SQLite job failed").caused_by(e))?
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    // Two processes starting on a fresh file race to create refinery's history table;
    // the loser sees "already exists" and simply tries again.
    let mut last = None;
    for _ in 0..SQLITE_MIGRATE_TRIES {
        match embedded::migrations::runner().run(conn) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = Some(e);
                std::thread::sleep(SQLITE_MIGRATE_RETRY);
            }
        }
    }
    let e = StoreError::internal("SQLite migration failed");
    Err(match last {
        Some(cause) => e.caused_by(cause),
        None => e,
    })
}

/// The one conversion of a rusqlite error: busy, locked, unopenable, full or read-only
/// files are "unavailable" (try again later); constraint violations are "refused"; the
/// rest are internal. The result code's
/// name is kept as the error's code.
fn sql_err(e: rusqlite::Error) -> StoreError {
    let (kind_unavailable, refused, code) = match &e {
        rusqlite::Error::SqliteFailure(err, _) => (
            matches!(
                err.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::ReadOnly
            ),
            // A CHECK, NOT NULL, UNIQUE or foreign key, or a trigger's RAISE(ABORT).
            err.code == rusqlite::ErrorCode::ConstraintViolation,
            Some(format!("{:?}", err.code)),
        ),
        _ => (false, false, None),
    };
    let message = e.to_string();
    let base = if kind_unavailable {
        StoreError::unavailable(message)
    } else if refused {
        StoreError::refused(message)
    } else {
        StoreError::internal(message)
    };
    let base = match code {
        Some(code) => base.with_code(code),
        None => base,
    };
    base.caused_by(e)
}

/// A time in `tasks`: INTEGER microseconds since the Unix epoch (migration V5), so every
/// comparison in SQL is a comparison of numbers.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Reads a time of `tasks`: microseconds as stored by the daemon and by V5's triggers; text
/// is still read (a row changed by hand with the triggers dropped) rather than failing.
fn time_from_sql(v: rusqlite::types::ValueRef<'_>) -> Result<DateTime<Utc>, String> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Integer(us) => {
            DateTime::from_timestamp_micros(us).ok_or_else(|| format!("time {us} µs out of range"))
        }
        ValueRef::Text(t) => parse_ts(&String::from_utf8_lossy(t)),
        other => Err(format!("unreadable time of type {:?}", other.data_type())),
    }
}

/// The text form of a time in the CWOM tables: fixed width, so text order is time order.
/// (Those tables keep text: only the daemon writes their times, always in this form.)
fn fmt_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // SQLite's own datetime() form, for rows written by hand.
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .map(|n| n.and_utc())
        .map_err(|_| format!("unreadable time {s:?}"))
}

fn conversion(idx: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, msg.into())
}
