-- How far an online session learning from feedback (engine/online/session.py, _take_feedback) has made the
-- feedback on its live model into examples: the end, by event time, of the last window it read (NULL: none read
-- yet; the first window starts at the session's creation). It moves in the transaction that stores the window's
-- examples (engine/stores/online_store.py, add_feedback). Before, it was only on the session's job
-- (output.feedback_through), stored after the examples: a worker that died in between left the examples stored and
-- the window unread, and the worker that took the session over made the same feedback into examples, and trained
-- on them, a second time. The job still shows it, copied from here.
ALTER TABLE online_controls ADD COLUMN feedback_through timestamptz;

-- Sessions created before: from where their jobs had got to.
UPDATE online_controls c
SET feedback_through = (j.doc -> 'output' ->> 'feedback_through')::timestamptz
FROM jobs j
WHERE j.id = c.session_id AND j.kind = 'onlineSession' AND j.doc -> 'output' ->> 'feedback_through' IS NOT NULL;
