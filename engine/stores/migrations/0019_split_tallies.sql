-- What each serving process's gateway counted for a traffic split: requests, errors, fail-overs and seconds on
-- each side, since the split started or the process took it up. A split's counts are the sum of its rows, so a
-- canary behind several gateways decides on all of their traffic; each process writes its own row only.
CREATE TABLE lora_split_tallies (
    split_id    bigint NOT NULL REFERENCES lora_traffic_splits (id) ON DELETE CASCADE,
    process     text NOT NULL,
    active      jsonb NOT NULL,
    candidate   jsonb NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (split_id, process)
);

-- The serving process that decides a canary, and until when: it renews the lease at each check; when the lease
-- has run out (the process stopped), another serving process of the target takes the decisions over.
ALTER TABLE lora_traffic_splits ADD COLUMN decider text NOT NULL DEFAULT '';
ALTER TABLE lora_traffic_splits ADD COLUMN decider_until timestamptz;
