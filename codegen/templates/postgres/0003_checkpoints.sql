-- Checkpoints of named subscriptions: the log position after which a
-- reader resumes.

CREATE TABLE {s}{p}checkpoints (
    name        text        PRIMARY KEY,
    commit_id   bigint      NOT NULL,
    sequence    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
