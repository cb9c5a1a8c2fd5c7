-- Online learning (engine/online): the examples clients send to a session, and what clients and the serving side
-- ask of it while its worker runs.
--
-- A session is a job of kind 'onlineSession' in `jobs` (its spec, stats and publications are the job's output,
-- written only by the worker that holds it). Everything else writes here: the API stores examples and controls,
-- the serving side records what the live alias serves. Every example is kept, so a worker that takes a session
-- over after a crash reads from its last checkpoint's sequence number on and loses nothing.
CREATE TABLE online_examples (
    session_id   text NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    prompt       text NOT NULL,
    target       text NOT NULL,   -- empty: self-supervised (the prompt is text to continue)
    weight       double precision NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE online_controls (
    session_id       text PRIMARY KEY,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text NOT NULL DEFAULT '',
    learning_rate    double precision NOT NULL,
    force_updates    integer NOT NULL DEFAULT 0,   -- requests so far; the worker acts on each one it has not seen
    publish_requests integer NOT NULL DEFAULT 0,
    refused_examples bigint NOT NULL DEFAULT 0,    -- examples the API refused (empty, too long)
    alias_version    text NOT NULL DEFAULT '',     -- what the session's live alias serves ('' : its start version)
    gates            jsonb NOT NULL DEFAULT '{}',  -- version -> the gate's verdict on it, from the serving side
    update_time      timestamptz NOT NULL DEFAULT now()
);
