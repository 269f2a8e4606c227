-- The dashboard (/ui): listing tasks of one status newest first (keyset paging on id) and
-- counting a status up to a cap both read this index instead of the table; without it a
-- rare status (the few failed tasks among a million completed) costs a scan of the table.
CREATE INDEX tasks_status_idx ON tasks (status, id);
-- Completions and failures per minute over the last hour: only finished rows have an entry.
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL;
