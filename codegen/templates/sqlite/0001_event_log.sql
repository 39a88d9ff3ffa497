-- Annals event log for SQLite.
-- Applied by the runtime on open (see `annals::store::SqliteEventStore`),
-- inside a transaction, once; recorded in {p}schema_history.

CREATE TABLE {p}events (
    -- Global sequence. Writers are serialised (BEGIN IMMEDIATE), so it is in
    -- commit order and has no holes.
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Sequence of the first event of the writing append; shared by its events.
    commit_id       INTEGER NOT NULL,
    event_id        BLOB    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    tenant_id       TEXT,
    correlation_id  BLOB,
    causation_id    BLOB,
    actor           TEXT,
    trace_context   TEXT,
    headers         TEXT    NOT NULL DEFAULT '{}',
    -- Microseconds since the Unix epoch, UTC.
    recorded_at     INTEGER NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE INDEX {p}events_by_type   ON {p}events (event_type, position);
CREATE INDEX {p}events_by_tenant ON {p}events (tenant_id, position) WHERE tenant_id IS NOT NULL;
CREATE INDEX {p}events_by_corr   ON {p}events (correlation_id, position) WHERE correlation_id IS NOT NULL;
CREATE INDEX {p}events_by_time   ON {p}events (recorded_at, position);

-- Events are immutable.
CREATE TRIGGER {p}events_no_update BEFORE UPDATE ON {p}events
BEGIN
    SELECT RAISE(ABORT, '{p}events is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER {p}events_no_delete BEFORE DELETE ON {p}events
BEGIN
    SELECT RAISE(ABORT, '{p}events is append-only: DELETE is not allowed');
END;
