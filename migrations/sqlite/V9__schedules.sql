-- Schedules (see migrations/postgres/V9__schedules.sql). Times are INTEGER microseconds
-- since the Unix epoch, as in `tasks`.
CREATE TABLE schedules (
    name              TEXT PRIMARY KEY NOT NULL
                      CHECK (length(name) BETWEEN 1 AND 128 AND name NOT GLOB '*[^A-Za-z0-9_.-]*'),
    cron              TEXT NOT NULL,
    timezone          TEXT NOT NULL,
    task              TEXT NOT NULL,
    catch_up          TEXT NOT NULL CHECK (catch_up IN ('skip', 'latest', 'all')),
    catch_up_window_s INTEGER NOT NULL CHECK (catch_up_window_s >= 0),
    overlap           TEXT NOT NULL CHECK (overlap IN ('allow', 'skip', 'buffer_one', 'cancel_other')),
    paused            INTEGER NOT NULL DEFAULT 0,
    source            TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'file')),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    fired_through     INTEGER NOT NULL,
    last_fired_at     INTEGER,
    last_task_id      TEXT,
    buffered_for      INTEGER
);

CREATE TABLE schedule_fires (
    schedule_name TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('tick', 'trigger')),
    scheduled_for INTEGER NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('fired', 'skipped', 'buffered')),
    task_id       TEXT,
    fired_at      INTEGER NOT NULL,
    PRIMARY KEY (schedule_name, kind, scheduled_for)
);

ALTER TABLE tasks ADD COLUMN schedule_name TEXT;
ALTER TABLE tasks ADD COLUMN scheduled_for INTEGER;
CREATE INDEX tasks_schedule_active_idx ON tasks (schedule_name)
    WHERE schedule_name IS NOT NULL AND status IN ('queued', 'running');
