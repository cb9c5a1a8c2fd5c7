-- Pipelines (engine/pipelines): the loop that runs unattended, and the decisions of their triggers.
--
-- A pipeline's runs are jobs of kind 'pipelineRun' in `jobs`; the pipeline they belong to is in their spec, which
-- the expression index below finds them by. A trigger decision names its occasion (a cron tick, a feedback
-- watermark) by `key`: one decision per pipeline and occasion, however many replicas see it.
CREATE TABLE pipelines (
    id           text PRIMARY KEY,
    base_model   text NOT NULL,
    enabled      boolean NOT NULL,
    etag         text NOT NULL,
    create_time  timestamptz NOT NULL,
    update_time  timestamptz NOT NULL,
    doc          jsonb NOT NULL
);

CREATE TABLE pipeline_trigger_decisions (
    pipeline_id  text NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    key          text NOT NULL,
    kind         text NOT NULL,
    fired        boolean NOT NULL,
    reason       text NOT NULL,
    run_id       text NOT NULL,
    sample_count integer NOT NULL,
    time         timestamptz NOT NULL,
    PRIMARY KEY (pipeline_id, key)
);
CREATE INDEX pipeline_trigger_decisions_time_idx ON pipeline_trigger_decisions (pipeline_id, time DESC);

CREATE INDEX jobs_pipeline_idx ON jobs ((doc -> 'spec' -> 'pipeline' ->> 'id'), create_time DESC)
    WHERE kind = 'pipelineRun';
