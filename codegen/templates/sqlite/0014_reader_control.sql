-- What an operator asks of running readers, kept in the rows they read:
-- `paused` stops a reader (its checkpoint writes are refused while it is
-- set, and its owner waits, keeping its lease), and `retry_requested_at`
-- (microseconds since the Unix epoch) marks a dead letter for its handler
-- registry to run again.

ALTER TABLE {p}checkpoints ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {p}dead_letters ADD COLUMN retry_requested_at INTEGER;
