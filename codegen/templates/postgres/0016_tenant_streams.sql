-- Stream ids belong to their tenant: a stream is identified by its tenant
-- (the events' tenant_id, '' for none) and its id, so two tenants may each
-- have a stream `user-1`, and neither learns of the other's by appending.
-- The rule "one event per stream version" becomes one per tenant, stream
-- and version, under the same name (the runtime recognises it). Its index
-- leads with (stream_id, version), so it still serves reading a stream and
-- finding its head. Partitioned layouts keep the rule in {p}event_keys,
-- whose rows carry their tenant since migration 0010.

DO $$
BEGIN
    IF to_regclass('{s}{p}event_keys') IS NULL THEN
        ALTER TABLE {s}{p}events DROP CONSTRAINT {p}events_stream_version;
        CREATE UNIQUE INDEX {p}events_stream_version
            ON {s}{p}events (stream_id, version, (coalesce(tenant_id, '')));
    ELSE
        ALTER TABLE {s}{p}event_keys DROP CONSTRAINT {p}events_stream_version;
        CREATE UNIQUE INDEX {p}events_stream_version
            ON {s}{p}event_keys (stream_id, version, (coalesce(tenant_id, '')));
    END IF;
END
$$;
