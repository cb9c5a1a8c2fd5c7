-- Fisher jobs and their event logs (same shape as the training tables), and Fisher snapshots.
CREATE TABLE fisher_jobs (
    id            text PRIMARY KEY,
    request_id    text UNIQUE,
    state         text NOT NULL,
    create_time   timestamptz NOT NULL,
    doc           jsonb NOT NULL
);
CREATE INDEX fisher_jobs_state_idx ON fisher_jobs (state);
CREATE INDEX fisher_jobs_create_idx ON fisher_jobs (create_time DESC, id DESC);

CREATE TABLE fisher_job_events (
    job_id    text NOT NULL REFERENCES fisher_jobs (id) ON DELETE CASCADE,
    sequence  bigint NOT NULL,
    time      timestamptz NOT NULL,
    kind      text NOT NULL,
    payload   jsonb NOT NULL,
    PRIMARY KEY (job_id, sequence)
);

-- Metadata of stored Fisher diagonals; the tensors are safetensors files in the artifacts dir.
CREATE TABLE fisher_snapshots (
    id               text PRIMARY KEY,
    base_model       text NOT NULL,
    adapter_version  text NOT NULL,
    create_time      timestamptz NOT NULL,
    doc              jsonb NOT NULL
);
CREATE INDEX fisher_snapshots_list_idx ON fisher_snapshots (create_time DESC, id DESC);
CREATE INDEX fisher_snapshots_adapter_idx ON fisher_snapshots (base_model, adapter_version);
