-- A schedule starts a task or a workflow (DESIGN.md, "Schedules"): `target` says which, and
-- `template` (V9's `task`) holds the enqueue body or the workflow body each fire uses.
ALTER TABLE schedules RENAME COLUMN task TO template;
ALTER TABLE schedules ADD COLUMN target TEXT NOT NULL DEFAULT 'task' CHECK (target IN ('task', 'workflow'));
-- A workflow schedule's last fire (`last_task_id` stays a task schedule's).
ALTER TABLE schedules ADD COLUMN last_workflow_id TEXT;
ALTER TABLE schedule_fires ADD COLUMN workflow_id TEXT;

-- A fired workflow is still going while any of its steps is waiting, queued or running: the
-- overlap policies ask for those. A plain task is never `waiting`, so for a task schedule
-- the index holds the same rows as V9's.
DROP INDEX tasks_schedule_active_idx;
CREATE INDEX tasks_schedule_active_idx ON tasks (schedule_name)
    WHERE schedule_name IS NOT NULL AND status IN ('waiting', 'queued', 'running');
