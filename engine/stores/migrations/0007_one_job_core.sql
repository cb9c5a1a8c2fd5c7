-- One table for the jobs of every kind and one for their events (the typed job core, engine/jobs).
--
-- A job's doc is Job[Spec, Output]: the fields every kind shares, the kind's spec, and its output (what
-- the job produced and reports as it runs). The training and Fisher tables are folded in and dropped:
-- training's output_adapter_version, dataset, latest_metrics, device and ewc_lineage move into its output,
-- Fisher's output_snapshot likewise. Events that only inform become "Noticed"; those a person should look
-- at stay "Warned". Adapter records gain their data's provenance (source and objective on their dataset),
-- taken from the job that trained them, so a continuation never needs to look the job up.
CREATE TABLE jobs (
    id            text PRIMARY KEY,
    kind          text NOT NULL,
    request_id    text,
    state         text NOT NULL,
    create_time   timestamptz NOT NULL,
    doc           jsonb NOT NULL
);
CREATE UNIQUE INDEX jobs_request_id_idx ON jobs (kind, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX jobs_list_idx ON jobs (kind, create_time DESC, id DESC);
CREATE INDEX jobs_state_idx ON jobs (kind, state);

CREATE TABLE job_events (
    job_id    text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    sequence  bigint NOT NULL,
    time      timestamptz NOT NULL,
    type      text NOT NULL,
    payload   jsonb NOT NULL,
    PRIMARY KEY (job_id, sequence)
);

INSERT INTO jobs (id, kind, request_id, state, create_time, doc)
SELECT id, 'training', request_id, state, create_time,
       (doc - 'output_adapter_version' - 'dataset' - 'latest_metrics' - 'device' - 'ewc_lineage')
       || jsonb_build_object(
            'kind', 'training',
            'output', jsonb_build_object(
                'adapter_version', COALESCE(doc -> 'output_adapter_version', '""'::jsonb),
                'dataset', COALESCE(doc -> 'dataset', 'null'::jsonb),
                'latest_metrics', COALESCE(doc -> 'latest_metrics', 'null'::jsonb),
                'device', COALESCE(doc -> 'device', '""'::jsonb),
                'ewc_lineage', COALESCE(doc -> 'ewc_lineage', 'null'::jsonb)))
FROM training_jobs;

INSERT INTO jobs (id, kind, request_id, state, create_time, doc)
SELECT id, 'fisher', request_id, state, create_time,
       (doc - 'output_snapshot')
       || jsonb_build_object(
            'kind', 'fisher',
            'output', jsonb_build_object('snapshot', COALESCE(doc -> 'output_snapshot', '""'::jsonb)))
FROM fisher_jobs;

INSERT INTO job_events (job_id, sequence, time, type, payload)
SELECT job_id, sequence, time, kind, payload FROM training_job_events
UNION ALL
SELECT job_id, sequence, time, kind, payload FROM fisher_job_events;

UPDATE job_events SET type = 'Noticed'
WHERE type = 'Warned' AND payload ->> 'code' IN (
    'FISHER_COMPUTED_AUTOMATICALLY', 'FISHER_SNAPSHOT_STORED', 'EWC_PENALTY_NORMALIZATION', 'REPLAY_MIXED');

-- Checkpoint events were never sent; none can exist, but a row of that type would no longer decode.
DELETE FROM job_events WHERE type = 'CheckpointSaved';

UPDATE adapters AS a
SET doc = jsonb_set(
        jsonb_set(a.doc, '{dataset,source}', j.doc -> 'spec' -> 'dataset'),
        '{dataset,objective}', COALESCE(j.doc -> 'spec' -> 'objective', '"SFT"'::jsonb))
FROM jobs AS j
WHERE j.kind = 'training'
  AND a.doc ->> 'training_job' = 'trainingJobs/' || j.id
  AND jsonb_typeof(a.doc -> 'dataset') = 'object';

DROP TABLE training_job_events;
DROP TABLE training_jobs;
DROP TABLE fisher_job_events;
DROP TABLE fisher_jobs;
