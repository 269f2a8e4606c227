-- The release of V11/V13, once per statement instead of once per row (DESIGN.md,
-- "Orchestration"). A parent's end used to run three statements in a row trigger and
-- write its dependant's row once per parent, so a 10,000-way fan-in wrote the join step
-- 10,000 times, each a new version of a row with every index of `tasks` on it. Now the
-- ends of one statement (a completer's batch, a bulk cancel, the rescuer's pass) count
-- their dependants off together: each dependant is written once per statement, by the
-- number of its parents that statement ended.
--
-- The rules are V13's. A dependant counts each edge once (`counted`: a parent that ends
-- again, retried, takes nothing more). A parent that did not complete cancels its `cancel`
-- dependants at once; their own end runs this trigger again, so the cancel goes on down.
-- The update that takes a count to zero makes the step `queued` (an approval step stays
-- `waiting` for its decision), which fires V8's tasks_notify_claimable: the fleet wakes in
-- the same commit. Dependants are locked in id order, as before.
--
-- A statement trigger cannot name columns or carry a WHEN clause, so it runs after every
-- UPDATE of `tasks`. Its first query reads only the statement's own new rows and returns
-- when none is a step that has ended: a claim, a renewal or a plain task's end does
-- nothing more. Counting only uncounted edges makes OLD rows unnecessary: a step that was
-- already ended has no uncounted edge left.
DROP TRIGGER tasks_release_dependants ON tasks;
DROP FUNCTION jct_release_dependants();

CREATE FUNCTION jct_release_ended_steps() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ended
                   WHERE workflow_id IS NOT NULL AND status IN ('completed', 'failed', 'cancelled')) THEN
        RETURN NULL;
    END IF;
    WITH counted AS (
        UPDATE task_dependencies d SET counted = true
        FROM ended e
        WHERE d.parent_id = e.id AND NOT d.counted
          AND e.workflow_id IS NOT NULL AND e.status IN ('completed', 'failed', 'cancelled')
        RETURNING d.task_id, e.step_key, e.status),
    owed AS (
        SELECT task_id, count(*)::int AS n,
               min(format('parent step %s ended %s', step_key, status))
                   FILTER (WHERE status <> 'completed') AS failure
        FROM counted GROUP BY task_id),
    locked AS (
        SELECT t.id, o.n, o.failure FROM tasks t JOIN owed o ON o.task_id = t.id
        WHERE t.status = 'waiting'
        ORDER BY t.id FOR UPDATE OF t)
    UPDATE tasks SET
        pending_parents = tasks.pending_parents - l.n,
        status = CASE
            WHEN l.failure IS NOT NULL AND tasks.on_parent_failure = 'cancel' THEN 'cancelled'
            WHEN tasks.pending_parents = l.n AND tasks.type <> 'approval' THEN 'queued'
            ELSE tasks.status END,
        finished_at = CASE WHEN l.failure IS NOT NULL AND tasks.on_parent_failure = 'cancel'
                           THEN now() ELSE tasks.finished_at END,
        last_error = CASE WHEN l.failure IS NOT NULL AND tasks.on_parent_failure = 'cancel'
                          THEN l.failure ELSE tasks.last_error END,
        updated_at = now()
    FROM locked l
    WHERE tasks.id = l.id AND tasks.status = 'waiting';
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_release_ended_steps
    AFTER UPDATE ON tasks
    REFERENCING NEW TABLE AS ended
    FOR EACH STATEMENT
    EXECUTE FUNCTION jct_release_ended_steps();
