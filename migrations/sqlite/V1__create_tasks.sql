-- The tasks table (see DESIGN.md). Times are UTC text in one fixed-width form,
-- YYYY-MM-DDTHH:MM:SS.ffffffZ, so that text comparison is time comparison.
-- Every column but `type` has a default: `INSERT INTO tasks (type) VALUES ('echo')` is complete.
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY NOT NULL DEFAULT (
                        lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||
                        substr(lower(hex(randomblob(2))), 2) || '-' ||
                        substr('89ab', 1 + (abs(random()) % 4), 1) ||
                        substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
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
    idempotency_key TEXT UNIQUE,
    trace_id        TEXT,
    locked_by       TEXT,
    locked_until    TEXT,
    result          TEXT CHECK (result IS NULL OR json_valid(result)),
    last_error      TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    started_at      TEXT,
    finished_at     TEXT
);

-- Serves the claim: due queued tasks by priority, then run_at.
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at, id) WHERE status = 'queued';
-- Serves the rescuer: running tasks by lease end.
CREATE INDEX tasks_lease_idx ON tasks (locked_until) WHERE status = 'running';
-- Serves listing, newest first.
CREATE INDEX tasks_created_idx ON tasks (created_at DESC);
