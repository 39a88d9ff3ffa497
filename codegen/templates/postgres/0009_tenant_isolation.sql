-- Tenant isolation: row-level security on Annals' tables, keyed by the
-- per-transaction setting `annals.tenant`, which tenant-scoped handles
-- (`PostgresEventStore::for_tenant`) set at the start of every transaction.
-- A connection that has not set it (the unscoped store: projections across
-- tenants, administration) sees every row, as before. The policies bind the
-- tables' owner too (FORCE); only superusers and roles with BYPASSRLS pass
-- them by, and tenant-scoped handles refuse to run as such a role.

CREATE FUNCTION {s}{p}tenant_visible(tenant_id text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT COALESCE(current_setting('annals.tenant', true), '') = ''
        OR tenant_id = current_setting('annals.tenant', true)
$$;

-- Rows written by a tenant-scoped handle carry its tenant.
ALTER TABLE {s}{p}snapshots
    ADD COLUMN tenant_id text DEFAULT NULLIF(current_setting('annals.tenant', true), '');
ALTER TABLE {s}{p}checkpoints
    ADD COLUMN tenant_id text DEFAULT NULLIF(current_setting('annals.tenant', true), '');
ALTER TABLE {s}{p}dead_letters
    ADD COLUMN tenant_id text DEFAULT NULLIF(current_setting('annals.tenant', true), '');
ALTER TABLE {s}{p}subject_keys
    ADD COLUMN tenant_id text DEFAULT NULLIF(current_setting('annals.tenant', true), '');
ALTER TABLE {s}{p}subject_streams
    ADD COLUMN tenant_id text DEFAULT NULLIF(current_setting('annals.tenant', true), '');

ALTER TABLE {s}{p}events ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}{p}events FORCE ROW LEVEL SECURITY;
CREATE POLICY {p}events_tenant ON {s}{p}events
    USING ({s}{p}tenant_visible(tenant_id)) WITH CHECK ({s}{p}tenant_visible(tenant_id));

ALTER TABLE {s}{p}snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}{p}snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY {p}snapshots_tenant ON {s}{p}snapshots
    USING ({s}{p}tenant_visible(tenant_id)) WITH CHECK ({s}{p}tenant_visible(tenant_id));

ALTER TABLE {s}{p}checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}{p}checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY {p}checkpoints_tenant ON {s}{p}checkpoints
    USING ({s}{p}tenant_visible(tenant_id)) WITH CHECK ({s}{p}tenant_visible(tenant_id));

ALTER TABLE {s}{p}dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}{p}dead_letters FORCE ROW LEVEL SECURITY;
CREATE POLICY {p}dead_letters_tenant ON {s}{p}dead_letters
    USING ({s}{p}tenant_visible(tenant_id)) WITH CHECK ({s}{p}tenant_visible(tenant_id));

ALTER TABLE {s}{p}subject_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}{p}subject_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY {p}subject_keys_tenant ON {s}{p}subject_keys
    USING ({s}{p}tenant_visible(tenant_id)) WITH CHECK ({s}{p}tenant_visible(tenant_id));

ALTER TABLE {s}{p}subject_streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}{p}subject_streams FORCE ROW LEVEL SECURITY;
CREATE POLICY {p}subject_streams_tenant ON {s}{p}subject_streams
    USING ({s}{p}tenant_visible(tenant_id)) WITH CHECK ({s}{p}tenant_visible(tenant_id));
