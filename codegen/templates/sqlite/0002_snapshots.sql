-- Aggregate snapshots: the serialised state of a stream at a version.
-- Unlike events they may be deleted (retention) and are never trusted blindly:
-- one that fails to decode is skipped and the state rebuilt from events.

CREATE TABLE {p}snapshots (
    stream_id        TEXT    NOT NULL,
    -- The stream version the state reflects.
    version          INTEGER NOT NULL CHECK (version > 0),
    -- The aggregate's snapshot (shape) version.
    snapshot_version INTEGER NOT NULL,
    -- Bit 0: zstd-compressed; bit 1: AES-256-GCM-encrypted.
    encoding         INTEGER NOT NULL,
    data             BLOB    NOT NULL,
    -- Microseconds since the Unix epoch, UTC.
    taken_at         INTEGER NOT NULL,
    PRIMARY KEY (stream_id, version)
);

CREATE INDEX {p}snapshots_by_time ON {p}snapshots (taken_at);
