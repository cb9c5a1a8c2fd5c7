-- The adapter registry proper.
--
-- A row is a version number: RESERVED while its artifacts are being stored,
-- PUBLISHED once they are durable, DELETED (a tombstone: artifacts removed, the
-- row kept for lineage and so the number is never handed out again) or CONFLICT
-- (the object store already held a manifest at that version that this database
-- did not know; it was left untouched). Only PUBLISHED rows are versions.
ALTER TABLE adapters
    ADD COLUMN state text NOT NULL DEFAULT 'PUBLISHED'
        CHECK (state IN ('RESERVED', 'PUBLISHED', 'DELETED', 'CONFLICT')),
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN request_id text,
    ADD COLUMN delete_time timestamptz;
ALTER TABLE adapters ALTER COLUMN doc SET DEFAULT '{}'::jsonb;

CREATE INDEX adapters_list_idx ON adapters (create_time DESC, base_model DESC, major DESC, minor DESC)
    WHERE state = 'PUBLISHED';
CREATE INDEX adapters_labels_idx ON adapters USING gin (labels);
CREATE UNIQUE INDEX adapters_request_id_idx ON adapters (base_model, request_id) WHERE request_id IS NOT NULL;

-- Which versions the serving side (LoraControl) relies on. One row per
-- base model and role. The foreign key makes every writer take a KEY SHARE lock
-- on the adapter row, so a write here and a delete of that version serialise.
CREATE TABLE serving_state (
    base_model   text NOT NULL,
    role         text NOT NULL CHECK (role IN ('ACTIVE', 'KNOWN_GOOD')),
    major        integer NOT NULL,
    minor        integer NOT NULL,
    update_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_model, role),
    FOREIGN KEY (base_model, major, minor) REFERENCES adapters (base_model, major, minor)
);
