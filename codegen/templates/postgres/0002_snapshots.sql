-- Aggregate snapshots: the serialised state of a stream at a version.
-- Unlike events they may be deleted (retention) and are never trusted blindly:
-- one that fails to decode is skipped and the state rebuilt from events.

CREATE TABLE {s}{p}snapshots (
    stream_id        text        NOT NULL,
    -- The stream version the state reflects.
    version          bigint      NOT NULL CHECK (version > 0),
    -- The aggregate's snapshot (shape) version.
    snapshot_version integer     NOT NULL,
    -- Bit 0: zstd-compressed; bit 1: AES-256-GCM-encrypted.
    encoding         smallint    NOT NULL,
    data             bytea       NOT NULL,
    taken_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);

CREATE INDEX {p}snapshots_by_time ON {s}{p}snapshots (taken_at);
