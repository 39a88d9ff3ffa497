-- Crypto-shredding: each data subject's key (AES-256, wrapped by the master
-- key from configuration) and the streams holding that subject's encrypted
-- fields. Forgetting a subject clears its key and keeps the row as a
-- tombstone (forgotten_at), so the subject never silently gets a new key.

CREATE TABLE {s}{p}subject_keys (
    subject      text        PRIMARY KEY,
    wrapped_key  bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_at timestamptz,
    CONSTRAINT {p}subject_keys_key_or_tombstone
        CHECK ((wrapped_key IS NULL) = (forgotten_at IS NOT NULL))
);

CREATE TABLE {s}{p}subject_streams (
    subject   text NOT NULL,
    stream_id text NOT NULL,
    PRIMARY KEY (subject, stream_id)
);
