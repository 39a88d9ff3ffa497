-- Data subjects are named within their tenant, as on PostgreSQL: a key's
-- identity is (tenant_id, subject), with '' for subjects of events without
-- a tenant. SQLite cannot change a primary key in place: the tables are
-- rebuilt, their rows kept as tenant-less subjects.

CREATE TABLE {p}subject_keys_by_tenant (
    tenant_id    TEXT    NOT NULL DEFAULT '',
    subject      TEXT    NOT NULL,
    wrapped_key  BLOB,
    -- Microseconds since the Unix epoch, UTC.
    created_at   INTEGER NOT NULL,
    forgotten_at INTEGER,
    CHECK ((wrapped_key IS NULL) = (forgotten_at IS NOT NULL)),
    PRIMARY KEY (tenant_id, subject)
);
INSERT INTO {p}subject_keys_by_tenant (tenant_id, subject, wrapped_key, created_at, forgotten_at)
    SELECT '', subject, wrapped_key, created_at, forgotten_at FROM {p}subject_keys;
DROP TABLE {p}subject_keys;
ALTER TABLE {p}subject_keys_by_tenant RENAME TO {p}subject_keys;

CREATE TABLE {p}subject_streams_by_tenant (
    tenant_id TEXT NOT NULL DEFAULT '',
    subject   TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject, stream_id)
) WITHOUT ROWID;
INSERT INTO {p}subject_streams_by_tenant (tenant_id, subject, stream_id)
    SELECT '', subject, stream_id FROM {p}subject_streams;
DROP TABLE {p}subject_streams;
ALTER TABLE {p}subject_streams_by_tenant RENAME TO {p}subject_streams;
