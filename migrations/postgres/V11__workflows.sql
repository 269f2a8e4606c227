-- Workflows (DESIGN.md, "Orchestration"): steps are rows of `tasks` with a workflow, a key
-- and the status `waiting` until their parents are done. A plain task is unchanged: every
-- new column of `tasks` is NULL for it, and `INSERT INTO tasks (type, payload) …` still
-- makes a queued task.
CREATE TABLE workflows (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
    idempotency_key text CHECK (char_length(idempotency_key) BETWEEN 1 AND 256),
    cwom_issue_id   text REFERENCES cwom_issues (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX workflows_idempotency_key_idx ON workflows (idempotency_key) WHERE idempotency_key IS NOT NULL;
-- GET /workflows pages newest first by id (time-ordered, as task ids).
CREATE INDEX workflows_name_idx ON workflows (name, id);

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('waiting', 'queued', 'running', 'completed', 'failed', 'cancelled'));

-- No foreign key to workflows: PostgreSQL queues an RI trigger event for every inserted row,
-- NULL or not, and measured here that cost every enqueue (a plain task's too) about a tenth of
-- a bare insert. A step is inserted in its workflow's own transaction and no workflow row is
-- ever deleted, so the reference holds without it.
ALTER TABLE tasks ADD COLUMN workflow_id uuid;
ALTER TABLE tasks ADD COLUMN step_key text CHECK (step_key ~ '^[A-Za-z0-9_.-]{1,64}$');
-- What a step does when a parent ends failed or cancelled: 'cancel' (itself, and so on
-- down) or 'run' (it runs and sees the parent's status in `parents`).
ALTER TABLE tasks ADD COLUMN on_parent_failure text CHECK (on_parent_failure IN ('cancel', 'run'));
-- Parents not yet ended. Decremented under the step's row lock by each parent's end, so
-- of two parents ending at once on two daemons exactly one sees it reach zero.
ALTER TABLE tasks ADD COLUMN pending_parents integer CHECK (pending_parents >= 0);
ALTER TABLE tasks ADD CONSTRAINT tasks_step_check
    CHECK ((workflow_id IS NULL) = (step_key IS NULL) AND (workflow_id IS NULL) = (pending_parents IS NULL));
-- A workflow's steps by key; also serves "every step of this workflow".
CREATE UNIQUE INDEX tasks_workflow_step_idx ON tasks (workflow_id, step_key) WHERE workflow_id IS NOT NULL;

-- The edges: `task_id` waits for `parent_id`. Both in the same workflow.
CREATE TABLE task_dependencies (
    task_id   uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    -- No cascade: a parent that still has a dependant cannot be deleted alone (a step
    -- must never be left waiting for a row that is gone).
    parent_id uuid NOT NULL REFERENCES tasks (id),
    -- Set by the parent's first end: an edge is counted off once, so a parent that ends
    -- again (retried after a failure) never takes a second count from its dependants.
    counted   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (task_id, parent_id)
);
-- A parent's end finds its dependants here.
CREATE INDEX task_dependencies_parent_idx ON task_dependencies (parent_id);

-- The release, in the transaction of the parent's end whatever wrote it (the finish of a
-- local or remote attempt, a cancel, the rescuer's last attempt, anyone's SQL). A row
-- trigger with a WHEN clause, as V8's: a plain task (no workflow) pays nothing.
--
-- A parent that did not complete cancels its `cancel` dependants at once (their own end
-- fires this trigger again: the cancel goes on down). Every other dependant counts the
-- parent off, once per edge (`counted`: a retried parent's second end counts nothing);
-- the one update that takes its count to zero makes it `queued`, which fires V8's
-- tasks_notify_claimable: the fleet wakes in the same commit. One parent's dependants are
-- locked in id order (a batch ending parents of shared dependants on two daemons can still
-- meet in a deadlock, which PostgreSQL breaks: the completer and the ends lane write again).
CREATE FUNCTION jct_release_dependants() RETURNS trigger
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
           status = CASE WHEN tasks.pending_parents = 1 THEN 'queued' ELSE tasks.status END,
           updated_at = now()
    FROM (SELECT t.id FROM tasks t JOIN task_dependencies d ON d.task_id = t.id
          WHERE d.parent_id = NEW.id AND NOT d.counted AND t.status = 'waiting'
          ORDER BY t.id FOR UPDATE OF t) w
    WHERE tasks.id = w.id AND tasks.status = 'waiting';
    UPDATE task_dependencies SET counted = true WHERE parent_id = NEW.id AND NOT counted;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_release_dependants
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (NEW.workflow_id IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION jct_release_dependants();
