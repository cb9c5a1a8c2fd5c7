-- KTO's label of an online example (engine/online): whether its target is an answer to give (true) or to avoid
-- (false). Only a session learning by KTO stores one; NULL: no label (a session learning by SFT, and every example
-- stored before this column existed).
ALTER TABLE online_examples ADD COLUMN desirable boolean;
