-- The base model a feedback event is about (FeedbackEvent.base_model: named by the client, else the base of a
-- serving name `<base>@<version>` in adapter_version, else the server's default base model).
--
-- Events stored before this column existed hold '' ("not recorded"): every reader for a base model counts them,
-- as it did before (pipeline triggers, training windows, drift reports, per-version rates, stats filtered by base
-- model), so nothing that counted them stops counting them. Adding a column with a constant default rewrites no
-- row.
ALTER TABLE feedback_events ADD COLUMN base_model text NOT NULL DEFAULT '';

-- A pipeline's feedback trigger counts its base model's events (and '') received since its last run, at every
-- check: `base_model IN ($1, '') AND received_time >= $2` is two range scans of this index. Readers of event_time
-- windows (datasets, drift, stats) keep the BRIN index on event_time and filter on base_model.
CREATE INDEX feedback_events_base_received_idx ON feedback_events (base_model, received_time);
