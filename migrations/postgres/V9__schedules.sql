-- Schedules: a cron pattern in a time zone and the task each tick enqueues (DESIGN.md,
-- "Schedules"). Exactly one fire per schedule and tick comes from `schedule_fires`: its
-- primary key is inserted in the same transaction as the fired task, under a lock of the
-- schedule's row, whatever the number of daemons ticking.
CREATE TABLE schedules (
    name              text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,128}$'),
    cron              text NOT NULL,
    timezone          text NOT NULL,
    -- The enqueue body each fire uses (without run_at and idempotency_key).
    task              jsonb NOT NULL,
    catch_up          text NOT NULL CHECK (catch_up IN ('skip', 'latest', 'all')),
    catch_up_window_s integer NOT NULL CHECK (catch_up_window_s >= 0),
    overlap           text NOT NULL CHECK (overlap IN ('allow', 'skip', 'buffer_one', 'cancel_other')),
    paused            boolean NOT NULL DEFAULT false,
    -- 'api', or 'file' for those JCT_SCHEDULES_FILE manages.
    source            text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'file')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Every tick up to here was dealt with (fired, skipped, buffered or missed).
    fired_through     timestamptz NOT NULL,
    last_fired_at     timestamptz,
    last_task_id      uuid,
    -- A tick `buffer_one` holds back until the previous fires are over.
    buffered_for      timestamptz
);

-- One row per schedule, kind ('tick' or 'trigger') and instant: the exactly-once key.
-- Deleted with their schedule (its tasks stay); kept whatever the tasks' retention.
CREATE TABLE schedule_fires (
    schedule_name text NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('tick', 'trigger')),
    scheduled_for timestamptz NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('fired', 'skipped', 'buffered')),
    task_id       uuid,
    fired_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_name, kind, scheduled_for)
);

-- A fired task carries its schedule and tick.
ALTER TABLE tasks ADD COLUMN schedule_name text;
ALTER TABLE tasks ADD COLUMN scheduled_for timestamptz;
-- The overlap policies ask for a schedule's fires that are still queued or running.
CREATE INDEX tasks_schedule_active_idx ON tasks (schedule_name)
    WHERE schedule_name IS NOT NULL AND status IN ('queued', 'running');
