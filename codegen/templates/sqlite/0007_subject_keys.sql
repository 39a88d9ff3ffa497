-- Crypto-shredding: each data subject's key (AES-256, wrapped by the master
-- key from configuration) and the streams holding that subject's encrypted
-- fields. Forgetting a subject clears its key and keeps the row as a
-- tombstone (forgotten_at), so the subject never silently gets a new key.
-- Number 0006 is left to the per-stream hash chain.

CREATE TABLE {p}subject_keys (
    subject      TEXT    PRIMARY KEY,
    wrapped_key  BLOB,
    -- Microseconds since the Unix epoch, UTC.
    created_at   INTEGER NOT NULL,
    forgotten_at INTEGER,
    CHECK ((wrapped_key IS NULL) = (forgotten_at IS NOT NULL))
);

CREATE TABLE {p}subject_streams (
    subject   TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    PRIMARY KEY (subject, stream_id)
) WITHOUT ROWID;
