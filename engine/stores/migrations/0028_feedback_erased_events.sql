-- Right to be forgotten, per event: a digest of each erased event's identity (tenant_id, client_event_id), written
-- by DeleteUserFeedback in the transaction that deletes the events (engine/stores/feedback_store.py, delete_user).
-- Ingestion refuses an event whose identity is here, whatever its time: feedback_erasures alone refuses only the
-- events of an erased user timed at or before the erasure, and a resent event may carry a later time (none, so it
-- is stamped with its arrival; or a client clock running ahead).
--
-- The digest is sha256 of length(tenant_id) || ':' || tenant_id || ':' || client_event_id (UTF-8), so that no
-- two identities share one; neither id is kept as such. Erasures before this migration left no digests.
CREATE TABLE feedback_erased_events (
    event_digest bytea PRIMARY KEY
);
