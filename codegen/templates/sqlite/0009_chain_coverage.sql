-- The hash chain covers what orders the log: each new link's digest ends
-- with the event's position and commit_id (Annals gives both on insert),
-- and `chain_key` records how the link was made: NULL for links made
-- before this migration (whose digest has neither), 0 for an unkeyed
-- link, n for HMAC-SHA-256 with the application's key n (the format is
-- documented in `annals::hash_chain`).

ALTER TABLE {p}events ADD COLUMN chain_key INTEGER;
