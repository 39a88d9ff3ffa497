-- An operator's request that a projection rebuild its read model in place
-- (`annals projections rebuild`): its owner, told at its next lease
-- renewal, empties the projection's tables and moves its checkpoint back
-- to the start of the log in one transaction, which also clears this flag.

ALTER TABLE {s}{p}checkpoints ADD COLUMN rebuild_requested boolean NOT NULL DEFAULT false;
