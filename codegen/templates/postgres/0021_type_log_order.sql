-- Readers of a few event types (a projection of one type in a hundred)
-- read the log in its order, (transaction_id, position), filtered by type
-- in the database. This index keeps each type's events in that order, so
-- such a read walks only the wanted types' entries from its checkpoint
-- and stops at the page.

CREATE INDEX {p}events_by_type_log_order ON {s}{p}events (event_type, transaction_id, position);
