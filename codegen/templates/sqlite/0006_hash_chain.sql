-- Tamper evidence: each event's SHA-256 link, chained to the previous event
-- of its stream over the bytes stored here (the format is documented in
-- `annals::hash_chain`). Annals computes links as it appends; rows written
-- past Annals have none, and verification reports them.

ALTER TABLE {p}events ADD COLUMN hash BLOB;

-- Events stay immutable; the one update allowed gives a row without a link
-- its link and changes nothing else. The runtime seals the events stored
-- before this migration that way, in the migration's transaction. (It grants
-- nothing an INSERT could not do: existing links can never change.)
DROP TRIGGER {p}events_no_update;

CREATE TRIGGER {p}events_no_update BEFORE UPDATE ON {p}events
WHEN NOT (OLD.hash IS NULL AND NEW.hash IS NOT NULL
          AND NEW.position IS OLD.position AND NEW.commit_id IS OLD.commit_id
          AND NEW.event_id IS OLD.event_id AND NEW.stream_id IS OLD.stream_id
          AND NEW.version IS OLD.version AND NEW.event_type IS OLD.event_type
          AND NEW.schema_version IS OLD.schema_version AND NEW.payload IS OLD.payload
          AND NEW.tenant_id IS OLD.tenant_id AND NEW.correlation_id IS OLD.correlation_id
          AND NEW.causation_id IS OLD.causation_id AND NEW.actor IS OLD.actor
          AND NEW.trace_context IS OLD.trace_context AND NEW.headers IS OLD.headers
          AND NEW.recorded_at IS OLD.recorded_at)
BEGIN
    SELECT RAISE(ABORT, '{p}events is append-only: UPDATE is not allowed');
END;
