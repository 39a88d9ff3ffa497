-- Tamper evidence: each event's SHA-256 link, chained to the previous event
-- of its stream over the bytes stored here (the format is documented in
-- `annals::hash_chain`). The append statement computes links with
-- {p}chain over {p}event_digest; rows written past Annals have none, and
-- verification reports them. Events stored before this migration are
-- sealed below, in stream order.

ALTER TABLE {s}{p}events ADD COLUMN hash bytea;

-- A text column's encoding: its byte length as int8, then the UTF-8 bytes;
-- eight 0xff bytes for NULL. (STABLE, like convert_to, so that PostgreSQL
-- inlines it into its callers: declared IMMUTABLE it would run as a
-- separate function call, twenty times slower.)
CREATE FUNCTION {s}{p}hash_text(value text) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN '\xffffffffffffffff'::bytea
                ELSE int8send(octet_length(value)::int8) || convert_to(value, 'UTF8') END
$$;

-- A nullable uuid's encoding: 0x00 for NULL, else 0x01 and its 16 bytes.
CREATE FUNCTION {s}{p}hash_uuid(value uuid) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN '\x00'::bytea
                ELSE '\x01'::bytea || uuid_send(value) END
$$;

-- SHA-256 over an event's stored columns, `payload` and `headers` given as
-- their jsonb text. PL/pgSQL, not SQL: an SQL function would be inlined
-- into every statement that calls it, and planning the append statement
-- then took longer than running it; this one's expression is prepared once
-- per session.
CREATE FUNCTION {s}{p}event_digest(
    event_id uuid, stream_id text, version bigint, event_type text, schema_version integer,
    payload text, tenant_id text, correlation_id uuid, causation_id uuid, actor text,
    trace_context text, headers text, recorded_at timestamptz
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
        || int8send((extract(epoch FROM recorded_at) * 1000000)::int8));
END
$$;

-- One link: the previous link (the running state, or `previous` for a
-- stream's first new event) followed by the event's digest.
CREATE FUNCTION {s}{p}chain_step(link bytea, previous bytea, digest bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN sha256(coalesce(link, previous) || digest);
END
$$;

-- Used as a window over a stream's new events in version order:
-- {p}chain(head_link, digest) OVER (PARTITION BY stream_id ORDER BY version).
CREATE AGGREGATE {s}{p}chain(bytea, bytea) (
    SFUNC = {s}{p}chain_step,
    STYPE = bytea
);

-- Seal the events already stored.
ALTER TABLE {s}{p}events DISABLE TRIGGER {p}events_immutable;

UPDATE {s}{p}events AS e SET hash = sealed.link
FROM (
    SELECT position,
           {s}{p}chain(decode(repeat('00', 32), 'hex'),
                       {s}{p}event_digest(event_id, stream_id, version, event_type, schema_version,
                                          payload::text, tenant_id, correlation_id, causation_id,
                                          actor, trace_context, headers::text, recorded_at))
               OVER (PARTITION BY stream_id ORDER BY version) AS link
    FROM {s}{p}events
) AS sealed
WHERE e.position = sealed.position;

ALTER TABLE {s}{p}events ENABLE TRIGGER {p}events_immutable;
