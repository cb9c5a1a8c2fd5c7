-- LoraControl: per serving target state, the history of operations and eval results.
-- The registry's serving_state table (0003) mirrors active/known-good for DeleteAdapter; both are
-- written in one transaction by engine/stores/lora_store.py.
CREATE TABLE lora_targets (
    target              text PRIMARY KEY,
    base_model          text NOT NULL,
    enabled             boolean NOT NULL DEFAULT true,
    active_version      text NOT NULL DEFAULT '',
    previous_version    text NOT NULL DEFAULT '',
    known_good_version  text NOT NULL DEFAULT '',
    -- Set while an activation runs: a crash leaves it behind for reconciliation at start.
    pending_version     text NOT NULL DEFAULT '',
    update_time         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lora_operations (
    id                bigserial PRIMARY KEY,
    target            text NOT NULL,
    kind              text NOT NULL,
    version           text NOT NULL DEFAULT '',
    actor             text NOT NULL DEFAULT '',
    reason            text NOT NULL DEFAULT '',
    start_time        timestamptz NOT NULL,
    duration_seconds  double precision NOT NULL,
    phases            jsonb NOT NULL DEFAULT '[]'::jsonb,
    error             jsonb
);
CREATE INDEX lora_operations_target_idx ON lora_operations (target, id DESC);

CREATE TABLE lora_evals (
    id                bigserial PRIMARY KEY,
    base_model        text NOT NULL,
    version           text NOT NULL,
    baseline_version  text NOT NULL,
    create_time       timestamptz NOT NULL DEFAULT now(),
    doc               jsonb NOT NULL
);
CREATE INDEX lora_evals_version_idx ON lora_evals (base_model, version, id DESC);
