-- Events a handler still failed on after every retry, kept for inspection
-- and retry.

CREATE TABLE annals_dead_letters (
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

CREATE INDEX annals_dead_letters_by_handler ON annals_dead_letters (handler, failed_at);
