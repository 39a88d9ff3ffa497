-- Tags: what an event is about (`email:ada@example.test`), for queries and
-- append conditions. The event keeps its tags (a JSON array, NULL for
-- none); {p}event_tags indexes them by tag and tenant ('' for none) in log
-- order, so that a condition ("no event tagged t after position p") and a
-- query by tag read a few index entries. Rows are written with their
-- events, in the same transaction, and never changed.

ALTER TABLE {p}events ADD COLUMN tags TEXT;

CREATE TABLE {p}event_tags (
    tag         TEXT    NOT NULL,
    tenant_key  TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    PRIMARY KEY (tag, tenant_key, position)
) WITHOUT ROWID;

CREATE TRIGGER {p}event_tags_no_update BEFORE UPDATE ON {p}event_tags
BEGIN
    SELECT RAISE(ABORT, '{p}event_tags is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER {p}event_tags_no_delete BEFORE DELETE ON {p}event_tags
BEGIN
    SELECT RAISE(ABORT, '{p}event_tags is append-only: DELETE is not allowed');
END;
