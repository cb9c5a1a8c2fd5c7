-- A reservation belongs to one publish attempt, not only to its process: ``attempt`` is the attempt's random token,
-- which also names the objects it stores (adapters/<base-model>/<version>/<attempt>.adapter.tar.gz). A number freed
-- as stale may be reserved again by the same process; every change of a reservation (publish, release, conflict)
-- then checks the attempt too, so an attempt whose reservation was lost never registers a version whose archive is
-- another's (or one swept as an orphan). Rows reserved before have none ('').
ALTER TABLE adapters ADD COLUMN attempt text NOT NULL DEFAULT '';
