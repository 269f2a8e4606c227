-- Wake-ups on every path that makes a task claimable, not only INSERT: a retry, a release,
-- a deregistered worker's tasks, a rescued lease, a failed attempt queued again. Any UPDATE
-- that turns a row `queued` notifies `jct_tasks`, whoever runs it (this daemon, another
-- daemon, another service's plain SQL).
--
-- A row-level trigger with a WHEN clause, not a statement-level one: the WHEN is evaluated
-- without calling anything, so the hot path (claim: queued -> running; finish: running ->
-- completed) pays nothing, where a statement-level trigger would fire on every claim and
-- finish and need transition tables to tell. The payload is constant, and PostgreSQL
-- delivers identical notifications of one transaction once: a bulk retry of 10,000 rows in
-- one statement is one wake-up.
CREATE FUNCTION jct_notify_tasks_claimable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jct_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_claimable
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (NEW.status = 'queued' AND OLD.status IS DISTINCT FROM 'queued')
    EXECUTE FUNCTION jct_notify_tasks_claimable();

-- Leadership of the maintenance services that should run on one daemon at a time: a lease
-- per name, taken when free or expired and renewed by its holder. Only an efficiency:
-- every maintenance statement is correct when two daemons run it at once.
CREATE TABLE leaders (
    name       text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 128),
    holder     text NOT NULL CHECK (char_length(holder) BETWEEN 1 AND 256),
    expires_at timestamptz NOT NULL
);
