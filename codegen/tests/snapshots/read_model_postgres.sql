-- Read model of projection `user_permissions` v3 (ddl_snapshots::UserPermissions).
CREATE TABLE IF NOT EXISTS user_permissions_v3 (
    tenant_id text NOT NULL,
    user_id uuid NOT NULL,
    permission text NOT NULL,
    granted_at timestamptz NOT NULL,
    revoked boolean NOT NULL,
    grants bigint NOT NULL,
    weight double precision NOT NULL,
    detail jsonb,
    signature bytea,
    PRIMARY KEY (tenant_id, user_id, permission)
);
CREATE INDEX IF NOT EXISTS user_permissions_v3_by_user_id ON user_permissions_v3 (user_id);
CREATE INDEX IF NOT EXISTS user_permissions_v3_by_tenant_id_permission ON user_permissions_v3 (tenant_id, permission);

