-- Approvals (DESIGN.md, "Orchestration"): a workflow step of the built-in type `approval`
-- is never queued. When its parents are done it stays `waiting` with `pending_parents` 0,
-- awaiting `POST /tasks/{id}/decision`; the decision (or the expiry service) ends it in
-- one fenced UPDATE, and V11's trigger then releases its dependants as for any end. It
-- waits from its `updated_at`, which the release below sets in the transaction of its
-- last parent's end (a step without parents: its insert).
--
-- V11's release, with one change: the update that takes an approval step's count to zero
-- leaves it `waiting`. No worker can claim it, and no wake-up is sent for it.
CREATE OR REPLACE FUNCTION jct_release_dependants() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'completed' THEN
        UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now(),
               pending_parents = tasks.pending_parents - 1,
               last_error = format('parent step %s ended %s', NEW.step_key, NEW.status)
        FROM (SELECT t.id FROM tasks t JOIN task_dependencies d ON d.task_id = t.id
              WHERE d.parent_id = NEW.id AND NOT d.counted AND t.status = 'waiting'
                AND t.on_parent_failure = 'cancel'
              ORDER BY t.id FOR UPDATE OF t) c
        WHERE tasks.id = c.id AND tasks.status = 'waiting';
    END IF;
    UPDATE tasks SET pending_parents = tasks.pending_parents - 1,
           status = CASE WHEN tasks.pending_parents = 1 AND tasks.type <> 'approval' THEN 'queued'
                         ELSE tasks.status END,
           updated_at = now()
    FROM (SELECT t.id FROM tasks t JOIN task_dependencies d ON d.task_id = t.id
          WHERE d.parent_id = NEW.id AND NOT d.counted AND t.status = 'waiting'
          ORDER BY t.id FOR UPDATE OF t) w
    WHERE tasks.id = w.id AND tasks.status = 'waiting';
    UPDATE task_dependencies SET counted = true WHERE parent_id = NEW.id AND NOT counted;
    RETURN NULL;
END
$$;

-- The expiry service's scan: approval steps still waiting (for parents or a decision).
-- Keyed by id and partial on columns that are already indexed (`status`) or never change
-- (`type`), so no other task's update loses its HOT path and a plain task's insert only
-- evaluates the predicate.
CREATE INDEX tasks_awaiting_approval_idx ON tasks (id) WHERE type = 'approval' AND status = 'waiting';
