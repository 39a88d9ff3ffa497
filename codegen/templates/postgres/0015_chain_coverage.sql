-- The hash chain covers what orders the log, and can be keyed.
--
-- Each new link's digest ends with the event's position and transaction id,
-- so moving an event in the log (to hide it below a reader's checkpoint, or
-- to reorder a stream) breaks its link. The append statement draws the
-- position from the identity's sequence itself, to hash it before the row
-- is written. `chain_key` records how a link was made: NULL for links made
-- before this migration (whose digest has neither), 0 for an unkeyed
-- link, n for HMAC-SHA-256 with the application's key n. The key never
-- reaches a table: the append passes HMAC's padded keys as parameters. The
-- format is documented in `annals::hash_chain`.

ALTER TABLE {s}{p}events ADD COLUMN chain_key smallint;

-- The append names the sequence: make sure it has the name PostgreSQL
-- gives an identity's sequence when nothing is in the way.
DO $$
DECLARE
    sequence regclass := pg_get_serial_sequence('{s}{p}events', 'position')::regclass;
BEGIN
    IF sequence IS DISTINCT FROM to_regclass('{s}{p}events_position_seq') THEN
        EXECUTE format('ALTER SEQUENCE %s RENAME TO {p}events_position_seq', sequence);
    END IF;
END
$$;

-- The roles that may append need the sequence too.
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT acl.grantee::regrole::text
        FROM pg_class c, aclexplode(c.relacl) AS acl
        WHERE c.oid = '{s}{p}events'::regclass AND acl.privilege_type = 'INSERT'
          AND acl.grantee <> 0 AND acl.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE {s}{p}events_position_seq TO %s', grantee);
    END LOOP;
END
$$;

-- SHA-256 over an event's stored columns, then its position and commit.
CREATE FUNCTION {s}{p}event_link_digest(
    event_id uuid, stream_id text, version bigint, event_type text, schema_version integer,
    payload text, tenant_id text, correlation_id uuid, causation_id uuid, actor text,
    trace_context text, headers text, recorded_at timestamptz, event_position bigint,
    commit_id bigint
) RETURNS bytea
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN sha256(
        uuid_send(event_id)
        || {s}{p}hash_text(stream_id)
        || int8send(version)
        || {s}{p}hash_text(event_type)
        || int4send(schema_version)
        || {s}{p}hash_text(payload)
        || {s}{p}hash_text(tenant_id)
        || {s}{p}hash_uuid(correlation_id)
        || {s}{p}hash_uuid(causation_id)
        || {s}{p}hash_text(actor)
        || {s}{p}hash_text(trace_context)
        || {s}{p}hash_text(headers)
        || int8send((extract(epoch FROM recorded_at) * 1000000)::int8)
        || int8send(event_position)
        || int8send(commit_id));
END
$$;

-- One link, unkeyed (no pads) or HMAC-SHA-256 (RFC 2104) from the key's
-- inner and outer pads: SHA-256(outer || SHA-256(inner || message)).
CREATE FUNCTION {s}{p}keyed_chain_step(
    link bytea, previous bytea, digest bytea, inner_pad bytea, outer_pad bytea
) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF inner_pad IS NULL THEN
        RETURN sha256(coalesce(link, previous) || digest);
    END IF;
    RETURN sha256(outer_pad || sha256(inner_pad || coalesce(link, previous) || digest));
END
$$;

-- Used as a window over a stream's new events in version order:
-- {p}keyed_chain(head_link, digest, inner, outer) OVER (PARTITION BY stream_id ORDER BY version).
CREATE AGGREGATE {s}{p}keyed_chain(bytea, bytea, bytea, bytea) (
    SFUNC = {s}{p}keyed_chain_step,
    STYPE = bytea
);
