-- Read model of projection `user_permissions` v3 (ddl_snapshots::UserPermissions).
CREATE TABLE IF NOT EXISTS user_permissions_v3 (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    permission TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    revoked INTEGER NOT NULL,
    grants INTEGER NOT NULL,
    weight REAL NOT NULL,
    detail TEXT,
    signature BLOB,
    PRIMARY KEY (tenant_id, user_id, permission)
);
CREATE INDEX IF NOT EXISTS user_permissions_v3_by_user_id ON user_permissions_v3 (user_id);
CREATE INDEX IF NOT EXISTS user_permissions_v3_by_tenant_id_permission ON user_permissions_v3 (tenant_id, permission);

