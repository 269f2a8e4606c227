-- The tasks table (see DESIGN.md). Every column but `type` has a default:
-- `INSERT INTO tasks (type, payload) VALUES ('echo', '{"x":1}')` is a complete enqueue.
CREATE TABLE tasks (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type            text NOT NULL CHECK (char_length(type) BETWEEN 1 AND 128),
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status          text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    queue           text NOT NULL DEFAULT 'default',
    priority        integer NOT NULL DEFAULT 0,
    run_at          timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_seconds integer NOT NULL DEFAULT 900 CHECK (timeout_seconds >= 1),
    idempotency_key text UNIQUE,
    trace_id        text,
    locked_by       text,
    locked_until    timestamptz,
    result          jsonb,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);

-- Serves the claim: due queued tasks by priority, then run_at.
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at, id) WHERE status = 'queued';
-- Serves the rescuer: running tasks by lease end.
CREATE INDEX tasks_lease_idx ON tasks (locked_until) WHERE status = 'running';
-- Serves listing, newest first.
CREATE INDEX tasks_created_idx ON tasks (created_at DESC);

-- One wake-up per INSERT statement, however many rows it adds: a 10,000-row insert
-- is one notification, not 10,000. The payload is constant; the worker claims
-- through the table, never from the notification.
CREATE FUNCTION jct_notify_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jct_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_insert
    AFTER INSERT ON tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION jct_notify_tasks_inserted();
