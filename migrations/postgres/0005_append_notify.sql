-- Wake readers of the log when events are committed: one NOTIFY per append
-- statement on channel `annals_events`, the payload naming the schema.
-- (Readers poll as well: a notification is a hint, never the source of truth.)

CREATE FUNCTION annals_notify_append() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('annals_events', current_schema());
    RETURN NULL;
END
$$;

CREATE TRIGGER annals_events_notify
    AFTER INSERT ON annals_events
    FOR EACH STATEMENT EXECUTE FUNCTION annals_notify_append();
