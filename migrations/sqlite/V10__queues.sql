-- Queue controls (see migrations/postgres/V10__queues.sql). Times are INTEGER microseconds;
-- `rate_log` is a JSON array of them. One process writes a SQLite file, so a slot freed
-- wakes its claimers in the process, without a trigger.
CREATE TABLE queues (
    name            TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    paused          INTEGER NOT NULL DEFAULT 0,
    concurrency     INTEGER CHECK (concurrency >= 1),
    key_concurrency INTEGER CHECK (key_concurrency >= 1),
    rate_limit      INTEGER CHECK (rate_limit >= 1),
    rate_per_s      REAL CHECK (rate_per_s > 0),
    rate_log        TEXT NOT NULL DEFAULT '[]',
    updated_at      INTEGER NOT NULL,
    CHECK ((rate_limit IS NULL) = (rate_per_s IS NULL))
);

CREATE INDEX tasks_queue_claim_idx ON tasks (queue, priority DESC, run_at, id) WHERE status = 'queued';

ALTER TABLE tasks ADD COLUMN concurrency_key TEXT CHECK (length(concurrency_key) BETWEEN 1 AND 256);
ALTER TABLE tasks ADD COLUMN limited INTEGER;
