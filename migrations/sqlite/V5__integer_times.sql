-- Times in `tasks` become INTEGER microseconds since the Unix epoch (UTC), so every
-- comparison (the claim's `run_at <= now`, the rescuer's `locked_until < now`, ordering by
-- `run_at`) is a comparison of numbers, right by construction. Before, times were text in one
-- fixed-width form, and a row written by hand the way SQLite users write times
-- (`datetime('now', '+1 hour')`, `YYYY-MM-DD HH:MM:SS`) compared wrongly: a space sorts before
-- `T`, so a task due in an hour was claimed at once.
--
-- A time written by hand as text (any form julianday() understands: `YYYY-MM-DD HH:MM:SS`
-- with or without a fraction, a `T`, a `Z` or a `+HH:MM` zone; or a julian day number as a
-- REAL) is converted by the triggers below on INSERT and UPDATE; text that is not a time is
-- refused. Hand-written text keeps milliseconds (SQLite's own date functions go no finer),
-- the daemon's own fixed form (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) keeps microseconds. An INTEGER
-- is taken as microseconds already. The CWOM tables keep their text times: nothing compares
-- them but equality and ordering of values the daemon wrote itself in its fixed form.
--
-- SQLite cannot change a column's type in place: the table is rebuilt (as in V4) and every
-- stored time converted.
CREATE TABLE tasks_v5 (
    id              TEXT PRIMARY KEY NOT NULL DEFAULT (
                        printf('%08x-%04x-7%03x-%x%03x-%012x',
                               CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) >> 16,
                               CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) & 65535,
                               random() & 4095, 8 + (random() & 3), random() & 4095,
                               random() & 281474976710655)),
    type            TEXT NOT NULL CHECK (length(type) BETWEEN 1 AND 128),
    payload         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    status          TEXT NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    queue           TEXT NOT NULL DEFAULT 'default',
    priority        INTEGER NOT NULL DEFAULT 0,
    run_at          INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER) * 1000),
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_seconds INTEGER NOT NULL DEFAULT 900 CHECK (timeout_seconds >= 1),
    idempotency_key TEXT,
    trace_id        TEXT,
    locked_by       TEXT,
    locked_until    INTEGER,
    result          TEXT CHECK (result IS NULL OR json_valid(result)),
    last_error      TEXT,
    created_at      INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER) * 1000),
    updated_at      INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER) * 1000),
    started_at      INTEGER,
    finished_at     INTEGER,
    cwom_issue_id   TEXT REFERENCES cwom_issues (id)
);

INSERT INTO tasks_v5 (id, type, payload, status, queue, priority, run_at, attempts, max_attempts, timeout_seconds, idempotency_key, trace_id, locked_by, locked_until, result, last_error, created_at, updated_at, started_at, finished_at, cwom_issue_id)
SELECT
       id,
       type,
       payload,
       status,
       queue,
       priority,
       CASE WHEN typeof(run_at) NOT IN ('text', 'real') THEN run_at
                 WHEN run_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(run_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(run_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', run_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', run_at), 4) AS INTEGER) * 1000 END,
       attempts,
       max_attempts,
       timeout_seconds,
       idempotency_key,
       trace_id,
       locked_by,
       CASE WHEN typeof(locked_until) NOT IN ('text', 'real') THEN locked_until
                 WHEN locked_until GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(locked_until, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(locked_until, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', locked_until) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', locked_until), 4) AS INTEGER) * 1000 END,
       result,
       last_error,
       CASE WHEN typeof(created_at) NOT IN ('text', 'real') THEN created_at
                 WHEN created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(created_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(created_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', created_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', created_at), 4) AS INTEGER) * 1000 END,
       CASE WHEN typeof(updated_at) NOT IN ('text', 'real') THEN updated_at
                 WHEN updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(updated_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(updated_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', updated_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', updated_at), 4) AS INTEGER) * 1000 END,
       CASE WHEN typeof(started_at) NOT IN ('text', 'real') THEN started_at
                 WHEN started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(started_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(started_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', started_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', started_at), 4) AS INTEGER) * 1000 END,
       CASE WHEN typeof(finished_at) NOT IN ('text', 'real') THEN finished_at
                 WHEN finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(finished_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(finished_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', finished_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', finished_at), 4) AS INTEGER) * 1000 END,
       cwom_issue_id
FROM tasks;

DROP TABLE tasks;
ALTER TABLE tasks_v5 RENAME TO tasks;

CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at, id) WHERE status = 'queued';
CREATE INDEX tasks_lease_idx ON tasks (locked_until) WHERE status = 'running';
CREATE INDEX tasks_cwom_issue_idx ON tasks (cwom_issue_id) WHERE cwom_issue_id IS NOT NULL;
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- A time written as text (or as a julian day number) by another service becomes
-- microseconds as soon as the row lands; text that is no time aborts the statement.
CREATE TRIGGER tasks_times_on_insert AFTER INSERT ON tasks
WHEN typeof(NEW.run_at) IN ('text', 'real') OR typeof(NEW.locked_until) IN ('text', 'real') OR typeof(NEW.created_at) IN ('text', 'real') OR typeof(NEW.updated_at) IN ('text', 'real') OR typeof(NEW.started_at) IN ('text', 'real') OR typeof(NEW.finished_at) IN ('text', 'real')
BEGIN
    SELECT RAISE(ABORT, 'tasks: a time column holds text that is not a time')
    WHERE (typeof(NEW.run_at) IN ('text', 'real') AND strftime('%s', NEW.run_at) IS NULL)
       OR (typeof(NEW.locked_until) IN ('text', 'real') AND strftime('%s', NEW.locked_until) IS NULL)
       OR (typeof(NEW.created_at) IN ('text', 'real') AND strftime('%s', NEW.created_at) IS NULL)
       OR (typeof(NEW.updated_at) IN ('text', 'real') AND strftime('%s', NEW.updated_at) IS NULL)
       OR (typeof(NEW.started_at) IN ('text', 'real') AND strftime('%s', NEW.started_at) IS NULL)
       OR (typeof(NEW.finished_at) IN ('text', 'real') AND strftime('%s', NEW.finished_at) IS NULL);
    UPDATE tasks SET
        run_at = CASE WHEN typeof(run_at) NOT IN ('text', 'real') THEN run_at
                 WHEN run_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(run_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(run_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', run_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', run_at), 4) AS INTEGER) * 1000 END,
        locked_until = CASE WHEN typeof(locked_until) NOT IN ('text', 'real') THEN locked_until
                 WHEN locked_until GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(locked_until, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(locked_until, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', locked_until) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', locked_until), 4) AS INTEGER) * 1000 END,
        created_at = CASE WHEN typeof(created_at) NOT IN ('text', 'real') THEN created_at
                 WHEN created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(created_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(created_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', created_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', created_at), 4) AS INTEGER) * 1000 END,
        updated_at = CASE WHEN typeof(updated_at) NOT IN ('text', 'real') THEN updated_at
                 WHEN updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(updated_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(updated_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', updated_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', updated_at), 4) AS INTEGER) * 1000 END,
        started_at = CASE WHEN typeof(started_at) NOT IN ('text', 'real') THEN started_at
                 WHEN started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(started_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(started_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', started_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', started_at), 4) AS INTEGER) * 1000 END,
        finished_at = CASE WHEN typeof(finished_at) NOT IN ('text', 'real') THEN finished_at
                 WHEN finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(finished_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(finished_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', finished_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', finished_at), 4) AS INTEGER) * 1000 END
    WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER tasks_times_on_update AFTER UPDATE ON tasks
WHEN typeof(NEW.run_at) IN ('text', 'real') OR typeof(NEW.locked_until) IN ('text', 'real') OR typeof(NEW.created_at) IN ('text', 'real') OR typeof(NEW.updated_at) IN ('text', 'real') OR typeof(NEW.started_at) IN ('text', 'real') OR typeof(NEW.finished_at) IN ('text', 'real')
BEGIN
    SELECT RAISE(ABORT, 'tasks: a time column holds text that is not a time')
    WHERE (typeof(NEW.run_at) IN ('text', 'real') AND strftime('%s', NEW.run_at) IS NULL)
       OR (typeof(NEW.locked_until) IN ('text', 'real') AND strftime('%s', NEW.locked_until) IS NULL)
       OR (typeof(NEW.created_at) IN ('text', 'real') AND strftime('%s', NEW.created_at) IS NULL)
       OR (typeof(NEW.updated_at) IN ('text', 'real') AND strftime('%s', NEW.updated_at) IS NULL)
       OR (typeof(NEW.started_at) IN ('text', 'real') AND strftime('%s', NEW.started_at) IS NULL)
       OR (typeof(NEW.finished_at) IN ('text', 'real') AND strftime('%s', NEW.finished_at) IS NULL);
    UPDATE tasks SET
        run_at = CASE WHEN typeof(run_at) NOT IN ('text', 'real') THEN run_at
                 WHEN run_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(run_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(run_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', run_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', run_at), 4) AS INTEGER) * 1000 END,
        locked_until = CASE WHEN typeof(locked_until) NOT IN ('text', 'real') THEN locked_until
                 WHEN locked_until GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(locked_until, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(locked_until, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', locked_until) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', locked_until), 4) AS INTEGER) * 1000 END,
        created_at = CASE WHEN typeof(created_at) NOT IN ('text', 'real') THEN created_at
                 WHEN created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(created_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(created_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', created_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', created_at), 4) AS INTEGER) * 1000 END,
        updated_at = CASE WHEN typeof(updated_at) NOT IN ('text', 'real') THEN updated_at
                 WHEN updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(updated_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(updated_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', updated_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', updated_at), 4) AS INTEGER) * 1000 END,
        started_at = CASE WHEN typeof(started_at) NOT IN ('text', 'real') THEN started_at
                 WHEN started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(started_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(started_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', started_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', started_at), 4) AS INTEGER) * 1000 END,
        finished_at = CASE WHEN typeof(finished_at) NOT IN ('text', 'real') THEN finished_at
                 WHEN finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
                 THEN CAST(strftime('%s', substr(finished_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(finished_at, 21, 6) AS INTEGER)
                 ELSE CAST(strftime('%s', finished_at) AS INTEGER) * 1000000 + CAST(substr(strftime('%f', finished_at), 4) AS INTEGER) * 1000 END
    WHERE rowid = NEW.rowid;
END;
