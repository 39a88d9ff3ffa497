-- One owner per reader: a checkpoint row also holds its reader's lease. A
-- worker owns the reader while `lease_expires_at` (the database's clock) is
-- ahead; taking the lease over bumps `generation`, and every checkpoint and
-- read-model write names the generation it was made under, so a worker that
-- lost the lease (stalled, cut off) can no longer move the checkpoint.
-- The row is keyed by schema, table prefix, tenant and name, like the
-- checkpoint itself, and needs no session state (works behind a pooler).

ALTER TABLE {s}{p}checkpoints ADD COLUMN owner text;
ALTER TABLE {s}{p}checkpoints ADD COLUMN generation bigint NOT NULL DEFAULT 0;
ALTER TABLE {s}{p}checkpoints ADD COLUMN lease_expires_at timestamptz;
ALTER TABLE {s}{p}checkpoints ADD COLUMN renewed_at timestamptz;
