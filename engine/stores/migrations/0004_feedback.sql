-- Feedback events (scrubbed before they get here) and the erasure log of the right to be forgotten.
--
-- Idempotency: (tenant_id, client_event_id) is the key; ingestion COPYs a batch into a temporary
-- staging table and moves it with INSERT ... ON CONFLICT DO NOTHING.
CREATE TABLE feedback_events (
    tenant_id        text        NOT NULL,
    client_event_id  text        NOT NULL,
    kind             text        NOT NULL,
    rating           smallint,
    correction       text,
    dwell_seconds    double precision,
    -- The interaction carried by this event (has_content) or referred to by it.
    interaction_id   text        NOT NULL,
    has_content      boolean     NOT NULL,
    messages         jsonb,
    prompt           text,
    response         text,
    adapter_version  text        NOT NULL,
    user_id          text        NOT NULL,
    event_time       timestamptz NOT NULL,
    received_time    timestamptz NOT NULL,
    labels           jsonb       NOT NULL,
    -- Names of the PII scrubbing rules that fired on this event's text.
    scrubbed_rules   text[]      NOT NULL,
    PRIMARY KEY (tenant_id, client_event_id)
);
-- Time-window queries (stats, dataset windows). Events arrive roughly in time order, so a BRIN index
-- costs almost nothing on insert; the btree on (adapter_version, event_time) serves per-version windows.
CREATE INDEX feedback_events_time_brin ON feedback_events USING brin (event_time);
CREATE INDEX feedback_events_adapter_time_idx ON feedback_events (adapter_version, event_time);
CREATE INDEX feedback_events_user_idx ON feedback_events (user_id);
-- Resolving interaction_ref: events that carry an interaction's content.
CREATE INDEX feedback_events_interaction_idx ON feedback_events (tenant_id, interaction_id)
    WHERE has_content AND interaction_id <> '';

-- Right to be forgotten: who was erased and when. Stored as sha256(user_id), not the id itself.
-- Events of an erased user timed at or before erased_at are refused at ingestion and excluded
-- from datasets.
CREATE TABLE feedback_erasures (
    user_hash   text PRIMARY KEY,
    erased_at   timestamptz NOT NULL
);
