-- The dashboard (/ui): the same indexes as on PostgreSQL (see migrations/postgres/V7).
CREATE INDEX tasks_status_idx ON tasks (status, id);
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL;
