-- Data subjects are named within their tenant: tenant B may keep personal
-- data for its own subject `1` after tenant A used `1`, and forgetting one
-- tenant's subject never shreds another's. A key's identity is
-- (tenant_id, subject), with '' for subjects of events without a tenant.

ALTER TABLE {s}{p}subject_keys
    ALTER COLUMN tenant_id SET DEFAULT COALESCE(current_setting('annals.tenant', true), '');
UPDATE {s}{p}subject_keys SET tenant_id = '' WHERE tenant_id IS NULL;
ALTER TABLE {s}{p}subject_keys ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE {s}{p}subject_keys DROP CONSTRAINT {p}subject_keys_pkey;
ALTER TABLE {s}{p}subject_keys ADD CONSTRAINT {p}subject_keys_pkey PRIMARY KEY (tenant_id, subject);

ALTER TABLE {s}{p}subject_streams
    ALTER COLUMN tenant_id SET DEFAULT COALESCE(current_setting('annals.tenant', true), '');
UPDATE {s}{p}subject_streams SET tenant_id = '' WHERE tenant_id IS NULL;
ALTER TABLE {s}{p}subject_streams ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE {s}{p}subject_streams DROP CONSTRAINT {p}subject_streams_pkey;
ALTER TABLE {s}{p}subject_streams
    ADD CONSTRAINT {p}subject_streams_pkey PRIMARY KEY (tenant_id, subject, stream_id);
