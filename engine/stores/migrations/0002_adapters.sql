-- Registered adapter versions. The unique constraint makes version assignment
-- atomic across processes: two publishers racing for a version cannot both win.
CREATE TABLE adapters (
    base_model   text NOT NULL,
    major        integer NOT NULL CHECK (major >= 1),
    minor        integer NOT NULL CHECK (minor >= 0),
    version      text GENERATED ALWAYS AS ('v' || major || '.' || minor) STORED,
    create_time  timestamptz NOT NULL DEFAULT now(),
    doc          jsonb NOT NULL,
    PRIMARY KEY (base_model, major, minor)
);
CREATE INDEX adapters_create_idx ON adapters (base_model, create_time DESC);
