-- Who holds a RESERVED version number: a random id per server process, which holds a
-- PostgreSQL session advisory lock on that id while it has reservations outstanding. A
-- RESERVED row whose owner's lock can be taken belongs to a process that ended mid-publish
-- (PostgreSQL drops a session's locks with it), and is released at the next start.
ALTER TABLE adapters ADD COLUMN reserved_by bigint;
