-- One owner per reader: a checkpoint row also holds its reader's lease. A
-- worker owns the reader while `lease_expires_at` is ahead; taking the
-- lease over bumps `generation`, and every checkpoint and read-model write
-- names the generation it was made under, so a worker that lost the lease
-- can no longer move the checkpoint. Times are microseconds since the Unix
-- epoch, UTC.

ALTER TABLE {p}checkpoints ADD COLUMN owner TEXT;
ALTER TABLE {p}checkpoints ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {p}checkpoints ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE {p}checkpoints ADD COLUMN renewed_at INTEGER;
