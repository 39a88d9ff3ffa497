-- Snapshots belong to the tenant that took them: a tenant handle's
-- snapshots carry its tenant, the unscoped store's carry '', and each
-- loads only its own. A snapshot saved by one tenant (or planted by the
-- application role in its own tenant's name) is never loaded for another
-- tenant or by the unscoped store, and never blocks another's snapshot at
-- the same version.

ALTER TABLE {s}{p}snapshots
    ALTER COLUMN tenant_id SET DEFAULT COALESCE(current_setting('annals.tenant', true), '');
UPDATE {s}{p}snapshots SET tenant_id = '' WHERE tenant_id IS NULL;
ALTER TABLE {s}{p}snapshots ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE {s}{p}snapshots DROP CONSTRAINT {p}snapshots_pkey;
ALTER TABLE {s}{p}snapshots ADD CONSTRAINT {p}snapshots_pkey PRIMARY KEY (tenant_id, stream_id, version);
