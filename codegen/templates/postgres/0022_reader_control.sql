-- What an operator asks of running readers, kept in the rows they read:
-- `paused` stops a reader (its checkpoint writes are refused while it is
-- set, and its owner waits, keeping its lease), and `retry_requested_at`
-- marks a dead letter for its handler registry to run again.

ALTER TABLE {s}{p}checkpoints ADD COLUMN paused boolean NOT NULL DEFAULT false;
ALTER TABLE {s}{p}dead_letters ADD COLUMN retry_requested_at timestamptz;
