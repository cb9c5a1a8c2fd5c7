-- Traffic splits of a serving target: canaries (decided by their policy) and manual A/B splits. At most one per
-- target is in force (end_time NULL); a restarted server resumes it. The figures are the latest counts of both
-- sides (saved at each check of a canary, and when it ends); a canary's decision and its reason stay with it.
CREATE TABLE lora_traffic_splits (
    id                 bigserial PRIMARY KEY,
    target             text NOT NULL,
    kind               text NOT NULL,
    active_version     text NOT NULL,
    candidate_version  text NOT NULL,
    share              double precision NOT NULL,
    policy             jsonb,
    actor              text NOT NULL DEFAULT '',
    reason             text NOT NULL DEFAULT '',
    start_time         timestamptz NOT NULL,
    figures            jsonb,
    end_time           timestamptz,
    decision           text,
    end_reason         text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX lora_traffic_splits_in_force_idx ON lora_traffic_splits (target) WHERE end_time IS NULL;
CREATE INDEX lora_traffic_splits_version_idx ON lora_traffic_splits (target, candidate_version, id DESC);

-- Both sides' figures on the operation that ended or changed a split.
ALTER TABLE lora_operations ADD COLUMN traffic jsonb;
