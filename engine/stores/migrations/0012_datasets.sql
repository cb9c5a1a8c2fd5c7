-- Datasets as resources (engine/training/stored_datasets.py): one row per version of a dataset.
--
-- A version's bytes live in the artifact store under a key derived from their sha256 (object_key); its row is
-- inserted only once they are durable, so a row is never listed for bytes half written. A deleted version stays as
-- a tombstone (state DELETED, its bytes removed unless a live version shares them), so its number is never given
-- again. Versions are created and deleted under a session advisory lock per dataset.
CREATE TABLE datasets (
    dataset      text NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    name         text NOT NULL UNIQUE,
    state        text NOT NULL CHECK (state IN ('READY', 'DELETED')),
    sha256       text NOT NULL,
    split        jsonb NOT NULL,
    object_key   text NOT NULL,
    create_time  timestamptz NOT NULL,
    delete_time  timestamptz,
    doc          jsonb NOT NULL,
    PRIMARY KEY (dataset, version)
);
CREATE INDEX datasets_list_idx ON datasets (create_time DESC, name DESC) WHERE state = 'READY';
CREATE INDEX datasets_content_idx ON datasets (dataset, sha256) WHERE state = 'READY';
