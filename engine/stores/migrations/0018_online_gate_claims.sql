-- Which serving process runs the gate on an online session's publication: version -> {owner, until}. Every
-- serving replica follows every session; a claim (taken atomically, with a lease) lets exactly one of them judge
-- a publication, and another take over once the lease ran out (its claimer died mid-evaluation).
ALTER TABLE online_controls ADD COLUMN gate_claims jsonb NOT NULL DEFAULT '{}';
