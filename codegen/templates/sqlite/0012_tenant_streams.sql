-- Stream ids, snapshots, checkpoints and dead letters belong to their
-- tenant, as on PostgreSQL: acme's `user-1` and globex's `user-1` are two
-- streams, each with its own versions. A stream's tenant is its events'
-- `tenant_id` ('' for none). SQLite cannot drop a table constraint, so the
-- event table is rebuilt without `UNIQUE (stream_id, version)`, every row
-- and position kept, and a unique index takes the tenant in; snapshots and
-- checkpoints are rebuilt with the tenant in their keys (the unscoped
-- store's rows carry '').

DROP TRIGGER {p}events_no_update;
DROP TRIGGER {p}events_no_delete;
CREATE TABLE {p}events_by_tenant_stream (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
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
    hash            BLOB,
    chain_key       INTEGER
);
INSERT INTO {p}events_by_tenant_stream (position, commit_id, event_id, stream_id, version,
        event_type, schema_version, payload, tenant_id, correlation_id, causation_id, actor,
        trace_context, headers, recorded_at, hash, chain_key)
    SELECT position, commit_id, event_id, stream_id, version, event_type, schema_version,
           payload, tenant_id, correlation_id, causation_id, actor, trace_context, headers,
           recorded_at, hash, chain_key
    FROM {p}events ORDER BY position;
DROP TABLE {p}events;
ALTER TABLE {p}events_by_tenant_stream RENAME TO {p}events;
CREATE UNIQUE INDEX {p}events_stream_version ON {p}events (stream_id, COALESCE(tenant_id, ''), version);
CREATE INDEX {p}events_by_type   ON {p}events (event_type, position);
CREATE INDEX {p}events_by_tenant ON {p}events (tenant_id, position) WHERE tenant_id IS NOT NULL;
CREATE INDEX {p}events_by_corr   ON {p}events (correlation_id, position) WHERE correlation_id IS NOT NULL;
CREATE INDEX {p}events_by_time   ON {p}events (recorded_at, position);
CREATE INDEX {p}events_by_type_time ON {p}events (event_type, recorded_at, position);
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
CREATE TRIGGER {p}events_no_delete BEFORE DELETE ON {p}events
BEGIN
    SELECT RAISE(ABORT, '{p}events is append-only: DELETE is not allowed');
END;

CREATE TABLE {p}snapshots_by_tenant (
    tenant_id        TEXT    NOT NULL DEFAULT '',
    stream_id        TEXT    NOT NULL,
    version          INTEGER NOT NULL CHECK (version > 0),
    snapshot_version INTEGER NOT NULL,
    encoding         INTEGER NOT NULL,
    data             BLOB    NOT NULL,
    taken_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, stream_id, version)
);
INSERT INTO {p}snapshots_by_tenant (tenant_id, stream_id, version, snapshot_version, encoding, data, taken_at)
    SELECT '', stream_id, version, snapshot_version, encoding, data, taken_at FROM {p}snapshots;
DROP TABLE {p}snapshots;
ALTER TABLE {p}snapshots_by_tenant RENAME TO {p}snapshots;
CREATE INDEX {p}snapshots_by_time ON {p}snapshots (taken_at);

CREATE TABLE {p}checkpoints_by_tenant (
    tenant_id        TEXT    NOT NULL DEFAULT '',
    name             TEXT    NOT NULL,
    commit_id        INTEGER NOT NULL,
    sequence         INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    owner            TEXT,
    generation       INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    renewed_at       INTEGER,
    PRIMARY KEY (tenant_id, name)
);
INSERT INTO {p}checkpoints_by_tenant (tenant_id, name, commit_id, sequence, updated_at, owner,
        generation, lease_expires_at, renewed_at)
    SELECT '', name, commit_id, sequence, updated_at, owner, generation, lease_expires_at,
           renewed_at FROM {p}checkpoints;
DROP TABLE {p}checkpoints;
ALTER TABLE {p}checkpoints_by_tenant RENAME TO {p}checkpoints;

ALTER TABLE {p}dead_letters ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
