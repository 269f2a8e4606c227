-- Leadership of the maintenance services (see migrations/postgres/V8__wakeups_and_leaders.sql).
-- SQLite has no NOTIFY: the daemon holding the file wakes its own waiters in process.
-- expires_at: INTEGER microseconds since the Unix epoch, as the times of `tasks`.
CREATE TABLE leaders (
    name       TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    holder     TEXT NOT NULL CHECK (length(holder) BETWEEN 1 AND 256),
    expires_at INTEGER NOT NULL
);
