-- An online session's live alias outlives the session (engine/online/serving.py): once the session ends, the alias
-- keeps serving the version it served then (a publication that passed the gate, or one an operator chose) on every
-- serving process, across restarts, until an operator moves or removes it. Its name, base model and state live on
-- the session's controls, so that serving processes find the aliases to route without reading the sessions' jobs:
--
--   alias_state  ''          : the session named no live alias
--                'FOLLOWING' : the session runs (or has ended and a serving process has yet to settle its alias)
--                'KEPT'      : the session ended; the alias serves alias_version until moved or removed
--                'ENDED'     : the session ended with no publication that passed the gate; the alias is not routed
--                'REMOVED'   : an operator removed it (RemoveLiveAlias); not routed
--
-- At most one session holds an alias name (FOLLOWING or KEPT) at a time: CreateOnlineSession takes the name under
-- a lock (engine/stores/online_store.py) and refuses one held by another session.
ALTER TABLE online_controls
    ADD COLUMN base_model    text NOT NULL DEFAULT '',
    ADD COLUMN start_version text NOT NULL DEFAULT '',
    ADD COLUMN live_alias    text NOT NULL DEFAULT '',
    ADD COLUMN alias_state   text NOT NULL DEFAULT '';

-- Sessions created before: their aliases ended with them (what the server did then); running ones follow.
UPDATE online_controls c
SET base_model = coalesce(j.doc -> 'spec' ->> 'base_model', ''),
    start_version = coalesce(j.doc -> 'spec' ->> 'start_version', ''),
    live_alias = coalesce(j.doc -> 'spec' ->> 'live_alias', ''),
    alias_state = CASE
        WHEN coalesce(j.doc -> 'spec' ->> 'live_alias', '') = '' THEN ''
        WHEN j.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN 'ENDED'
        ELSE 'FOLLOWING' END
FROM jobs j
WHERE j.id = c.session_id AND j.kind = 'onlineSession';

CREATE INDEX online_controls_routed_aliases_idx ON online_controls (base_model, live_alias)
    WHERE alias_state IN ('FOLLOWING', 'KEPT');
