-- Workflows (see migrations/postgres/V11__workflows.sql): steps are rows of `tasks` with a
-- workflow, a key and the status `waiting` until their parents are done.
--
-- SQLite cannot change a CHECK constraint in place, and `status` must allow 'waiting': the
-- table is rebuilt (as in V4 and V5) with the columns V9, V10 and this migration add, its
-- rows copied, and its indexes and V5's time triggers made again. Every new column is NULL
-- for a plain task, so `INSERT INTO tasks (type, payload) …` still makes a queued task.
CREATE TABLE workflows (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    idempotency_key TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 256),
    cwom_issue_id   TEXT REFERENCES cwom_issues (id),
    created_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX workflows_idempotency_key_idx ON workflows (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX workflows_name_idx ON workflows (name, id);

CREATE TABLE tasks_v11 (
    id              TEXT PRIMARY KEY NOT NULL DEFAULT (
                        printf('%08x-%04x-7%03x-%x%03x-%012x',
                               CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) >> 16,
                               CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) & 65535,
                               random() & 4095, 8 + (random() & 3), random() & 4095,
                               random() & 281474976710655)),
    type            TEXT NOT NULL CHECK (length(type) BETWEEN 1 AND 128),
    payload         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    status          TEXT NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('waiting', 'queued', 'running', 'completed', 'failed', 'cancelled')),
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
    cwom_issue_id   TEXT REFERENCES cwom_issues (id),
    schedule_name   TEXT,
    scheduled_for   INTEGER,
    concurrency_key TEXT CHECK (length(concurrency_key) BETWEEN 1 AND 256),
    limited         INTEGER,
    -- No foreign key, as on PostgreSQL (see its V11): steps are inserted with their workflow.
    workflow_id     TEXT,
    step_key        TEXT CHECK (length(step_key) BETWEEN 1 AND 64 AND step_key NOT GLOB '*[^A-Za-z0-9_.-]*'),
    on_parent_failure TEXT CHECK (on_parent_failure IN ('cancel', 'run')),
    pending_parents INTEGER CHECK (pending_parents >= 0),
    CHECK ((workflow_id IS NULL) = (step_key IS NULL) AND (workflow_id IS NULL) = (pending_parents IS NULL))
);

INSERT INTO tasks_v11 (id, type, payload, status, queue, priority, run_at, attempts, max_attempts, timeout_seconds,
                       idempotency_key, trace_id, locked_by, locked_until, result, last_error, created_at, updated_at,
                       started_at, finished_at, cwom_issue_id, schedule_name, scheduled_for, concurrency_key, limited)
SELECT id, type, payload, status, queue, priority, run_at, attempts, max_attempts, timeout_seconds,
       idempotency_key, trace_id, locked_by, locked_until, result, last_error, created_at, updated_at,
       started_at, finished_at, cwom_issue_id, schedule_name, scheduled_for, concurrency_key, limited
FROM tasks;

DROP TABLE tasks;
ALTER TABLE tasks_v11 RENAME TO tasks;

CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at, id) WHERE status = 'queued';
CREATE INDEX tasks_lease_idx ON tasks (locked_until) WHERE status = 'running';
CREATE INDEX tasks_cwom_issue_idx ON tasks (cwom_issue_id) WHERE cwom_issue_id IS NOT NULL;
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_status_idx ON tasks (status, id);
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_schedule_active_idx ON tasks (schedule_name)
    WHERE schedule_name IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX tasks_queue_claim_idx ON tasks (queue, priority DESC, run_at, id) WHERE status = 'queued';
CREATE UNIQUE INDEX tasks_workflow_step_idx ON tasks (workflow_id, step_key) WHERE workflow_id IS NOT NULL;

CREATE TABLE task_dependencies (
    task_id   TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    parent_id TEXT NOT NULL REFERENCES tasks (id),
    -- Set by the parent's first end (see the PostgreSQL migration).
    counted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, parent_id)
);
CREATE INDEX task_dependencies_parent_idx ON task_dependencies (parent_id);

-- The release, in the transaction of the parent's end (see the PostgreSQL migration). One
-- process writes a SQLite file at a time, so no row locks are needed for exactly once; the
-- cancel goes on down through the trigger firing again, which needs
-- `PRAGMA recursive_triggers = ON` (the daemon sets it on its connection; without it a
-- hand-written UPDATE cancels one level of dependants).
CREATE TRIGGER tasks_release_dependants AFTER UPDATE OF status ON tasks
WHEN NEW.workflow_id IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
     AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    UPDATE tasks SET status = 'cancelled', pending_parents = pending_parents - 1,
           finished_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER) * 1000,
           updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER) * 1000,
           last_error = 'parent step ' || NEW.step_key || ' ended ' || NEW.status
    WHERE NEW.status <> 'completed' AND status = 'waiting' AND on_parent_failure = 'cancel'
      AND id IN (SELECT task_id FROM task_dependencies WHERE parent_id = NEW.id AND NOT counted);
    UPDATE tasks SET pending_parents = pending_parents - 1,
           status = CASE WHEN pending_parents = 1 THEN 'queued' ELSE status END,
           updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER) * 1000
    WHERE status = 'waiting' AND id IN (SELECT task_id FROM task_dependencies WHERE parent_id = NEW.id AND NOT counted);
    UPDATE task_dependencies SET counted = 1 WHERE parent_id = NEW.id AND NOT counted;
END;

-- V5's triggers, dropped with the old table: times written by hand as text become
-- microseconds.
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
