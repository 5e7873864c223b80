-- Job records: the links along pipelines and groups (the jobs a job enqueued, the members of
-- a group), looked up by the dashboard's job page. Partial indexes: most jobs have neither.
-- Idempotent.

CREATE INDEX IF NOT EXISTS job_executions_parent
    ON job_executions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS job_executions_group
    ON job_executions (group_id) WHERE group_id IS NOT NULL;
