-- The users whose feedback an online example was made from (feedback on the live model routed into its session;
-- examples clients send name none). DeleteUserFeedback deletes every example naming the user in the transaction
-- that deletes their events, and counts an erasure on each session it took examples from, so that a running
-- session drops them from the examples it holds in memory too.
ALTER TABLE online_examples ADD COLUMN users text[] NOT NULL DEFAULT '{}';
CREATE INDEX online_examples_users_idx ON online_examples USING gin (users);
ALTER TABLE online_controls ADD COLUMN erasures integer NOT NULL DEFAULT 0;
