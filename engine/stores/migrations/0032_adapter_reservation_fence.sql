-- A reservation made by a publish fenced by a job's lease (a training job's result) records that lease: the job
-- (fence_job) and its lease token then (fence_token). Once the job's lease is another's (its worker froze mid-publish,
-- process and lock session alive, and another worker took the job over), the reservation can never be registered:
-- its registration checks that lease. The lease holder's publish of the same request then supersedes it
-- (SUPERSEDED): the request id is free for it, and the number is retired, never handed out again, since the frozen
-- publisher may yet write that number's manifest. Rows reserved before have none (NULL): never superseded.
ALTER TABLE adapters ADD COLUMN fence_job text, ADD COLUMN fence_token text;
ALTER TABLE adapters DROP CONSTRAINT adapters_state_check;
ALTER TABLE adapters ADD CONSTRAINT adapters_state_check
    CHECK (state IN ('RESERVED', 'PUBLISHED', 'DELETED', 'CONFLICT', 'SUPERSEDED'));
