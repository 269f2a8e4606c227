-- Level with PostgreSQL's V3 and V4 (tests/schema_parity.rs compares the two schemas):
-- * ids are time-ordered (UUIDv7) whoever inserts the row: the daemon makes them in Rust, and
--   this default makes them for a plain `INSERT INTO tasks` from another service, so listing
--   newest first goes by id and tasks_created_idx is gone;
-- * idempotency keys are unique through a partial index, as on PostgreSQL.
-- SQLite cannot change a column default or drop a UNIQUE constraint in place: the table is
-- rebuilt and its rows copied. The id default uses julianday() (any SQLite version), not
-- unixepoch('subsec') (3.42+), because other services may insert with an older library.
CREATE TABLE tasks_v4 (
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
    run_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_seconds INTEGER NOT NULL DEFAULT 900 CHECK (timeout_seconds >= 1),
    idempotency_key TEXT,
    trace_id        TEXT,
    locked_by       TEXT,
    locked_until    TEXT,
    result          TEXT CHECK (result IS NULL OR json_valid(result)),
    last_error      TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    started_at      TEXT,
    finished_at     TEXT,
    cwom_issue_id   TEXT REFERENCES cwom_issues (id)
);

INSERT INTO tasks_v4 (id, type, payload, status, queue, priority, run_at, attempts, max_attempts,
                      timeout_seconds, idempotency_key, trace_id, locked_by, locked_until, result,
                      last_error, created_at, updated_at, started_at, finished_at, cwom_issue_id)
SELECT id, type, payload, status, queue, priority, run_at, attempts, max_attempts,
       timeout_seconds, idempotency_key, trace_id, locked_by, locked_until, result,
       last_error, created_at, updated_at, started_at, finished_at, cwom_issue_id
FROM tasks;

DROP TABLE tasks;
ALTER TABLE tasks_v4 RENAME TO tasks;

CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at, id) WHERE status = 'queued';
CREATE INDEX tasks_lease_idx ON tasks (locked_until) WHERE status = 'running';
CREATE INDEX tasks_cwom_issue_idx ON tasks (cwom_issue_id) WHERE cwom_issue_id IS NOT NULL;
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
