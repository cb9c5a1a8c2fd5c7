-- A publish's request_id (a job's result, an import) names the version it published: it stays unique among the
-- rows that are or may become that version (RESERVED, PUBLISHED) only. A number retired as a CONFLICT, or a
-- version deleted since, no longer holds it, so the request can be published again; before, the row kept it in
-- this index while by_request_id looks at published versions only, and every retry was ABORTED
-- IMPORT_IN_PROGRESS for good.
DROP INDEX adapters_request_id_idx;
CREATE UNIQUE INDEX adapters_request_id_idx ON adapters (base_model, request_id)
    WHERE request_id IS NOT NULL AND state IN ('RESERVED', 'PUBLISHED');
