-- Fail-closed tenancy. Two roles share Annals' tables:
--
-- * the owner role, which applies the migrations (this one included) and is
--   the explicit cross-tenant path: every table gets a `{p}cross_tenant`
--   policy for it alone, so the unscoped store connected as the owner sees
--   and writes every tenant's rows (cross-tenant projections, publishing,
--   administration);
-- * the application role (any other role, granted access with
--   `PostgresEventStore::grant_tenant_access`), which sees and writes only
--   the rows of the tenant its transaction set in `annals.tenant`, and
--   nothing at all when no tenant is set, the setting is empty, or it was
--   cleared inside the transaction. It cannot reach the owner's policy by
--   changing a setting: PostgreSQL applies a policy by role membership.
--
-- Superusers and BYPASSRLS roles pass every policy by, as PostgreSQL does.

CREATE OR REPLACE FUNCTION {s}{p}tenant_visible(tenant_id text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT tenant_id = NULLIF(current_setting('annals.tenant', true), '')
$$;

-- The owner's cross-tenant policy on every table, and the tenant policy and
-- the owner's on every partition of a partitioned events table: PostgreSQL
-- applies a parent's policies only to queries through the parent, so a
-- partition queried directly needs its own.
DO $$
DECLARE
    tbl regclass;
BEGIN
    FOR tbl IN
        SELECT to_regclass(name) FROM unnest(ARRAY[
            '{s}{p}events', '{s}{p}snapshots', '{s}{p}checkpoints', '{s}{p}dead_letters',
            '{s}{p}subject_keys', '{s}{p}subject_streams']) AS name
    LOOP
        EXECUTE format('CREATE POLICY %I ON %s TO %I USING (true) WITH CHECK (true)',
                       '{p}cross_tenant', tbl, current_user);
    END LOOP;
    FOR tbl IN
        SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = '{s}{p}events'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
        EXECUTE format('CREATE POLICY %I ON %s USING ({s}{p}tenant_visible(tenant_id)) '
                       'WITH CHECK ({s}{p}tenant_visible(tenant_id))', '{p}tenant', tbl);
        EXECUTE format('CREATE POLICY %I ON %s TO %I USING (true) WITH CHECK (true)',
                       '{p}cross_tenant', tbl, current_user);
    END LOOP;
END
$$;

-- A partitioned layout's side table of global keys (one event per stream
-- version, one row per event id) holds every tenant's stream ids. It is
-- now written only by its trigger, running as the owner (SECURITY DEFINER,
-- with a search path that a session's temporary tables cannot shadow); the
-- application role gets no privilege on it, so it can neither list other
-- tenants' streams nor plant a row that blocks one. Its rows carry their
-- tenant, under the same policies as the events.
DO $$
DECLARE
    home text;
BEGIN
    IF to_regclass('{s}{p}event_keys') IS NULL THEN
        RETURN;
    END IF;
    SELECT relnamespace::regnamespace::text INTO home
        FROM pg_class WHERE oid = '{s}{p}event_keys'::regclass;
    ALTER TABLE {s}{p}event_keys ADD COLUMN tenant_id text;
    ALTER TABLE {s}{p}event_keys DISABLE TRIGGER {p}event_keys_immutable;
    UPDATE {s}{p}event_keys k SET tenant_id = e.tenant_id
        FROM {s}{p}events e WHERE e.event_id = k.event_id;
    ALTER TABLE {s}{p}event_keys ENABLE TRIGGER {p}event_keys_immutable;
    CREATE OR REPLACE FUNCTION {s}{p}record_event_keys() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER AS $body$
    BEGIN
        INSERT INTO {s}{p}event_keys (event_id, stream_id, version, tenant_id)
            VALUES (NEW.event_id, NEW.stream_id, NEW.version, NEW.tenant_id);
        RETURN NULL;
    END
    $body$;
    EXECUTE format('ALTER FUNCTION %s.{p}record_event_keys() SET search_path = %s, pg_temp',
                   home, home);
    EXECUTE format('REVOKE ALL ON FUNCTION %s.{p}record_event_keys() FROM PUBLIC', home);
    ALTER TABLE {s}{p}event_keys ENABLE ROW LEVEL SECURITY;
    ALTER TABLE {s}{p}event_keys FORCE ROW LEVEL SECURITY;
    CREATE POLICY {p}tenant ON {s}{p}event_keys
        USING ({s}{p}tenant_visible(tenant_id)) WITH CHECK ({s}{p}tenant_visible(tenant_id));
    EXECUTE format('CREATE POLICY %I ON %s TO %I USING (true) WITH CHECK (true)',
                   '{p}cross_tenant', '{s}{p}event_keys'::regclass, current_user);
END
$$;
