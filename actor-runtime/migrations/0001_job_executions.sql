-- Job records: one row per message (keyed by Dramatiq's `message_id`), written by the
-- actor-runtime recorder. Unqualified names: apply it with the target schema first on the
-- search_path (the `migrate` command does `SET search_path`), so a Python application's own
-- migration tool can apply this same file. Idempotent: applying it twice changes nothing.

CREATE TABLE IF NOT EXISTS job_executions (
    message_id   text        PRIMARY KEY,
    queue_name   text        NOT NULL,
    actor_name   text        NOT NULL,
    -- enqueued, delayed, running, retrying, succeeded, failed, dead, skipped, cancelled
    state        text        NOT NULL,
    -- The state's rank within one attempt (enqueued/delayed 1, running 2, retrying 3, final
    -- states 4; an operator's requeue 0): with `attempt`, what makes a write newer.
    state_order  smallint    NOT NULL,
    -- Runs so far: Dramatiq's `retries` option + 1 (1 before the first run).
    attempt      integer     NOT NULL DEFAULT 1,
    max_retries  integer,
    enqueued_at  timestamptz,
    eta          timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz,
    duration_ms  double precision,
    worker_id    text,
    last_error   text,
    -- The last errors, oldest first, at most 10: [{"attempt", "at", "type", "message"}].
    errors       jsonb       NOT NULL DEFAULT '[]',
    parent_id    text,
    group_id     text,
    -- The arguments ({"args", "kwargs"}), only for actors opted in; NULL otherwise.
    args         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- When the row was last written (the write itself, not its transaction's start).
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_executions_state_check CHECK (state IN ('enqueued', 'delayed', 'running',
        'retrying', 'succeeded', 'failed', 'dead', 'skipped', 'cancelled'))
) WITH (fillfactor = 80); -- room on each page for HOT updates

-- Only columns that never change after insert are indexed (state changes stay HOT where
-- the partial index below allows), plus one small partial index of the problem states.
CREATE INDEX IF NOT EXISTS job_executions_actor_created
    ON job_executions (actor_name, created_at DESC);
CREATE INDEX IF NOT EXISTS job_executions_created
    ON job_executions (created_at);
CREATE INDEX IF NOT EXISTS job_executions_problems
    ON job_executions (created_at DESC) WHERE state IN ('failed', 'dead', 'retrying');
