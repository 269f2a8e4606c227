-- Remote workers (the HTTP worker protocol); see migrations/postgres/V6__workers.sql.
CREATE TABLE workers (
    id                TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    types             TEXT NOT NULL CHECK (json_valid(types)),
    queues            TEXT CHECK (queues IS NULL OR json_valid(queues)),
    max_slots         INTEGER NOT NULL DEFAULT 1 CHECK (max_slots BETWEEN 1 AND 1000),
    labels            TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels)),
    registered_at     TEXT NOT NULL,
    last_heartbeat_at TEXT NOT NULL
);
