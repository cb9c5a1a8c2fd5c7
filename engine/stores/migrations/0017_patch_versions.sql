-- Patch versions (v1.1.1): an online session publishes patches of the version it started from. A version's
-- number becomes (major, minor, patch); patch 0 is the minor version itself and is never spelled (v1.1).
ALTER TABLE serving_state DROP CONSTRAINT serving_state_base_model_major_minor_fkey;

ALTER TABLE adapters ADD COLUMN patch integer NOT NULL DEFAULT 0 CHECK (patch >= 0);
ALTER TABLE adapters DROP COLUMN version;
ALTER TABLE adapters ADD COLUMN version text GENERATED ALWAYS AS (
    'v' || major || '.' || minor || CASE WHEN patch > 0 THEN '.' || patch ELSE '' END
) STORED;
ALTER TABLE adapters DROP CONSTRAINT adapters_pkey, ADD PRIMARY KEY (base_model, major, minor, patch);

DROP INDEX adapters_list_idx;
CREATE INDEX adapters_list_idx ON adapters (create_time DESC, base_model DESC, major DESC, minor DESC, patch DESC)
    WHERE state = 'PUBLISHED';

ALTER TABLE serving_state ADD COLUMN patch integer NOT NULL DEFAULT 0;
ALTER TABLE serving_state ADD FOREIGN KEY (base_model, major, minor, patch)
    REFERENCES adapters (base_model, major, minor, patch);
