-- Checkpoints of named subscriptions: the log position after which a
-- reader resumes.

CREATE TABLE {p}checkpoints (
    name        TEXT    PRIMARY KEY,
    commit_id   INTEGER NOT NULL,
    sequence    INTEGER NOT NULL,
    -- Microseconds since the Unix epoch, UTC.
    updated_at  INTEGER NOT NULL
);
