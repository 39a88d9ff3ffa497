-- Events a handler still failed on after every retry, kept for inspection
-- and retry.

CREATE TABLE {s}{p}dead_letters (
    id          uuid        PRIMARY KEY,
    handler     text        NOT NULL,
    event_id    uuid        NOT NULL,
    stream_id   text        NOT NULL,
    version     bigint      NOT NULL,
    event_type  text        NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX {p}dead_letters_by_handler ON {s}{p}dead_letters (handler, failed_at);
