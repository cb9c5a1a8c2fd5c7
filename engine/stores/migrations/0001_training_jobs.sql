-- Training jobs and their event logs.
CREATE TABLE training_jobs (
    id            text PRIMARY KEY,
    request_id    text UNIQUE,
    state         text NOT NULL,
    create_time   timestamptz NOT NULL,
    doc           jsonb NOT NULL
);
CREATE INDEX training_jobs_state_idx ON training_jobs (state);
CREATE INDEX training_jobs_create_idx ON training_jobs (create_time DESC, id DESC);

CREATE TABLE training_job_events (
    job_id    text NOT NULL REFERENCES training_jobs (id) ON DELETE CASCADE,
    sequence  bigint NOT NULL,
    time      timestamptz NOT NULL,
    kind      text NOT NULL,
    payload   jsonb NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
