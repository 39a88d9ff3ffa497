-- Checkpoint names belong to their tenant: two tenants, and the owner's
-- unscoped store, may each keep a checkpoint called `directory` without
-- colliding or learning of each other. A row's tenant is the transaction's
-- `annals.tenant`, or '' for the unscoped store (a row no tenant sees), and
-- readers look a name up within their own tenant.

ALTER TABLE {s}{p}checkpoints
    ALTER COLUMN tenant_id SET DEFAULT COALESCE(current_setting('annals.tenant', true), '');
UPDATE {s}{p}checkpoints SET tenant_id = '' WHERE tenant_id IS NULL;
ALTER TABLE {s}{p}checkpoints ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE {s}{p}checkpoints DROP CONSTRAINT {p}checkpoints_pkey;
ALTER TABLE {s}{p}checkpoints ADD CONSTRAINT {p}checkpoints_pkey PRIMARY KEY (tenant_id, name);
