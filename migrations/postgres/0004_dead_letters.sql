-- Events a handler still failed on after every retry, kept for inspection
-- and retry.

CREATE TABLE annals_dead_letters (
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

CREATE INDEX annals_dead_letters_by_handler ON annals_dead_letters (handler, failed_at);
