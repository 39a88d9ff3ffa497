-- Events a handler still failed on after every retry, kept for inspection
-- and retry.

CREATE TABLE {p}dead_letters (
    id          BLOB    PRIMARY KEY,
    handler     TEXT    NOT NULL,
    event_id    BLOB    NOT NULL,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    -- Microseconds since the Unix epoch, UTC.
    failed_at   INTEGER NOT NULL
);

CREATE INDEX {p}dead_letters_by_handler ON {p}dead_letters (handler, failed_at);
