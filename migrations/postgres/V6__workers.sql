-- Remote workers (the HTTP worker protocol): who they are, what they serve, when they were
-- last heard from. Their claimed tasks are ordinary `tasks` rows with `locked_by` = the
-- worker's id; a worker's state (alive or dead) is computed from `last_heartbeat_at`.
CREATE TABLE workers (
    id                text PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 128),
    name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
    types             jsonb NOT NULL,
    queues            jsonb,
    max_slots         integer NOT NULL DEFAULT 1 CHECK (max_slots BETWEEN 1 AND 1000),
    labels            jsonb NOT NULL DEFAULT '{}',
    registered_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- No index on tasks (locked_by): a worker's running tasks are found through tasks_lease_idx
-- (running tasks only, a few thousand at most), and another partial index on running rows
-- would cost every claim an index write.
