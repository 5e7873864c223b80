-- Job records: the message and actor names compare byte by byte (COLLATE "C"). They are
-- identifiers, never sorted for people, and a byte comparison is several times cheaper than
-- a locale's: every row written descends the primary key twice (the conflict check, then the
-- insert) and the actor index once, so this is a measurable part of each write. Lookups by
-- equality are unchanged.
--
-- On a large existing table this rebuilds the primary key and the actor index, holding a
-- lock that blocks writes meanwhile (the recorder buffers, then retries): apply it when the
-- table is small or during a quiet hour. Idempotent: applying it twice changes nothing.

ALTER TABLE job_executions ALTER COLUMN message_id TYPE text COLLATE "C";
ALTER TABLE job_executions ALTER COLUMN actor_name TYPE text COLLATE "C";
