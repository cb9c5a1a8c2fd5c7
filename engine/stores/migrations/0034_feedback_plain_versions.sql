-- A feedback event names the adapter it was served as its plain version (`v1.2`) or as the serving name of that
-- version (`<base>@v1.2`, what the gateway's x-served-model shows): one version either way. Events are stored with
-- the plain version from now on (engine.feedback.ingest, engine.lora.state.version_of), so that every count by
-- version (stats, feedback datasets, canaries, rollback) sees both spellings as one; the events stored before are
-- rewritten here. One that recorded no base model ('') takes the serving name's; one whose base model differs from
-- the name's is left as it is (it was never this version of its base model). An online session's live name
-- (`<base>@<session>`) is no version and stays.
UPDATE feedback_events
SET base_model = substring(adapter_version FROM '^(.+)@v[1-9][0-9]{0,5}\.(?:0|[1-9][0-9]{0,5})(?:\.[1-9][0-9]{0,5})?$'),
    adapter_version = substring(adapter_version FROM '@(v[1-9][0-9]{0,5}\.(?:0|[1-9][0-9]{0,5})(?:\.[1-9][0-9]{0,5})?)$')
WHERE adapter_version LIKE '%@v%'
  AND base_model IN (substring(adapter_version FROM '^(.+)@v[1-9][0-9]{0,5}\.(?:0|[1-9][0-9]{0,5})(?:\.[1-9][0-9]{0,5})?$'), '')
  AND substring(adapter_version FROM '^(.+)@v[1-9][0-9]{0,5}\.(?:0|[1-9][0-9]{0,5})(?:\.[1-9][0-9]{0,5})?$') IS NOT NULL;
