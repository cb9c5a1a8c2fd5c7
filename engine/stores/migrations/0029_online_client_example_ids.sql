-- A client's id of an online example (OnlineExample.client_example_id, engine/online): AddExamples and
-- StreamExamples are idempotent per (session, client_example_id), as feedback ingestion is per (tenant_id,
-- client_event_id). An example whose id the session already holds is not stored again (INSERT ... ON CONFLICT DO
-- NOTHING on the index below, engine/stores/online_store.py) and is answered as a duplicate: a client that retries
-- after UNAVAILABLE, once the first call had committed, does not store its batch twice.
--
-- Empty: the example has no id (every example stored before this column existed, those made from feedback, and
-- those a client sends without one); such examples are never duplicates, so the index leaves them out.
ALTER TABLE online_examples ADD COLUMN client_example_id text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX online_examples_client_example_id_idx ON online_examples (session_id, client_example_id)
    WHERE client_example_id <> '';
