-- Approvals (see migrations/postgres/V13__approvals.sql): a workflow step of type
-- `approval` whose parents are done stays `waiting` with `pending_parents` 0, awaiting a
-- decision, where V11's release made it `queued`.
DROP TRIGGER tasks_release_dependants;

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
           status = CASE WHEN pending_parents = 1 AND type <> 'approval' THEN 'queued' ELSE status END,
           updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER) * 1000
    WHERE status = 'waiting' AND id IN (SELECT task_id FROM task_dependencies WHERE parent_id = NEW.id AND NOT counted);
    UPDATE task_dependencies SET counted = 1 WHERE parent_id = NEW.id AND NOT counted;
END;

-- The expiry service's scan (see the PostgreSQL migration).
CREATE INDEX tasks_awaiting_approval_idx ON tasks (id) WHERE type = 'approval' AND status = 'waiting';
