-- Wake readers of the log when events are committed: one NOTIFY per append
-- statement on channel `{p}events`, the payload naming the schema.
-- (Readers poll as well: a notification is a hint, never the source of truth.)

CREATE FUNCTION {s}{p}notify_append() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{p}events', current_schema());
    RETURN NULL;
END
$$;

CREATE TRIGGER {p}events_notify
    AFTER INSERT ON {s}{p}events
    FOR EACH STATEMENT EXECUTE FUNCTION {s}{p}notify_append();
