-- Queue controls (DESIGN.md, "Queues"): a pause and three limits per queue, enforced inside
-- the claim. A queue needs no row: a task's queue is any name, and a row appears when a
-- setting is made. `concurrency` caps the queue's running tasks, `key_concurrency` its
-- running tasks per `concurrency_key`, `rate_limit` its starts per `rate_per_s` seconds.
CREATE TABLE queues (
    name            text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 128),
    paused          boolean NOT NULL DEFAULT false,
    concurrency     integer CHECK (concurrency >= 1),
    key_concurrency integer CHECK (key_concurrency >= 1),
    rate_limit      integer CHECK (rate_limit >= 1),
    rate_per_s      double precision CHECK (rate_per_s > 0),
    -- The start times of the queue's last `rate_limit` claims, oldest first: a sliding log,
    -- so that no window of `rate_per_s` seconds ever holds more than `rate_limit` starts.
    rate_log        timestamptz[] NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_limit IS NULL) = (rate_per_s IS NULL))
);

-- A claim from one queue (a limited one, or each queue in turn around a limited queue's
-- backlog) finds its tasks here, instead of walking the whole claim index past the tasks of
-- other queues.
CREATE INDEX tasks_queue_claim_idx ON tasks (queue, priority DESC, run_at, id) WHERE status = 'queued';

-- Tasks of one key run at most `key_concurrency` at a time in their queue.
ALTER TABLE tasks ADD COLUMN concurrency_key text CHECK (char_length(concurrency_key) BETWEEN 1 AND 256);
-- Set by a claim made under a queue's limits: when such a task stops running, its slot is
-- free, and the trigger below wakes the fleet to fill it. NULL for every other claim.
ALTER TABLE tasks ADD COLUMN limited boolean;

-- As tasks_notify_claimable (V8): a row trigger with a WHEN clause, so that the finish of
-- an unlimited task pays nothing, and one notification per transaction.
CREATE TRIGGER tasks_notify_slot_freed
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (OLD.limited AND OLD.status = 'running' AND NEW.status IS DISTINCT FROM 'running')
    EXECUTE FUNCTION jct_notify_tasks_claimable();
