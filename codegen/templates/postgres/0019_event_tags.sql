-- Tags: what an event is about (`email:ada@example.test`), for queries and
-- append conditions. The event keeps its tags (NULL for none);
-- {p}event_tags indexes them by tag and tenant ('' for none) in log order,
-- so that a condition ("no event tagged t after position p") and a query
-- by tag read a few index entries. The append statement writes the rows
-- with their events; nobody changes them.

ALTER TABLE {s}{p}events ADD COLUMN tags text[];

CREATE TABLE {s}{p}event_tags (
    tag             text    NOT NULL,
    tenant_id       text,
    tenant_key      text    NOT NULL GENERATED ALWAYS AS (coalesce(tenant_id, '')) STORED,
    transaction_id  xid8    NOT NULL,
    position        bigint  NOT NULL,
    event_type      text    NOT NULL,
    PRIMARY KEY (tag, tenant_key, transaction_id, position)
);

CREATE FUNCTION {s}{p}reject_tag_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{p}event_tags is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER {p}event_tags_immutable BEFORE UPDATE OR DELETE ON {s}{p}event_tags
    FOR EACH ROW EXECUTE FUNCTION {s}{p}reject_tag_mutation();
CREATE TRIGGER {p}event_tags_no_truncate BEFORE TRUNCATE ON {s}{p}event_tags
    FOR EACH STATEMENT EXECUTE FUNCTION {s}{p}reject_tag_mutation();

-- The same tenancy as the events: the application role sees and writes
-- its tenant's rows only, the owner every tenant's.
ALTER TABLE {s}{p}event_tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}{p}event_tags FORCE ROW LEVEL SECURITY;
CREATE POLICY {p}tenant ON {s}{p}event_tags
    USING ({s}{p}tenant_visible(tenant_id)) WITH CHECK ({s}{p}tenant_visible(tenant_id));
DO $$
BEGIN
    EXECUTE format('CREATE POLICY %I ON %s TO %I USING (true) WITH CHECK (true)',
                   '{p}cross_tenant', '{s}{p}event_tags'::regclass, current_user);
END
$$;

-- The roles that may append may write tags too.
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
        EXECUTE format('GRANT SELECT, INSERT ON {s}{p}event_tags TO %s', grantee);
    END LOOP;
END
$$;

-- The append statement's condition check, run before it writes a row.
-- First it takes advisory locks, in the order given (the client sorts
-- them, so that two appends never wait on each other crosswise): shared
-- on every (tenant, tag) the append writes, exclusive on the first tag of
-- each of its conditions' criteria. Then, each query of a VOLATILE
-- function seeing everything committed before it started, it looks for an
-- event matching a criterion after the condition's position: any writer of
-- that tag that started earlier has committed by now (its shared lock was
-- held until then), and any later one waits for this transaction, so two
-- appends conditioned on the same tag are serialised and the second sees
-- the first. Returns one row per criterion broken, with the first
-- matching event's position.
CREATE FUNCTION {s}{p}check_append_conditions(
    lock_keys bigint[], lock_exclusive boolean[],
    condition_groups integer[], condition_streams text[], condition_criteria integer[],
    condition_tenants text[], condition_tags text[], condition_types text[],
    after_commits bigint[], after_sequences bigint[]
) RETURNS TABLE (
    failed_group integer, failed_stream text, failed_criterion integer,
    found_commit bigint, found_sequence bigint
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(lock_keys, 1), 0) LOOP
        IF lock_exclusive[i] THEN
            PERFORM pg_advisory_xact_lock(lock_keys[i]);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(lock_keys[i]);
        END IF;
    END LOOP;
    RETURN QUERY
    SELECT c.grp, c.stream_id, c.criterion, m.commit_id, m.sequence
    FROM unnest(condition_groups, condition_streams, condition_criteria, condition_tenants,
                condition_tags, condition_types, after_commits, after_sequences)
         AS c(grp, stream_id, criterion, tenant_key, tags, types, after_commit, after_sequence)
    CROSS JOIN LATERAL (
        SELECT t.transaction_id::text::bigint AS commit_id, t.position AS sequence
        FROM {s}{p}event_tags t
        WHERE t.tag = (c.tags::jsonb ->> 0) AND t.tenant_key = c.tenant_key
          AND (t.transaction_id, t.position) > (c.after_commit::text::xid8, c.after_sequence)
          AND (c.types::jsonb = '[]'::jsonb OR c.types::jsonb ? t.event_type)
          AND NOT EXISTS (
              SELECT 1 FROM jsonb_array_elements_text(c.tags::jsonb) AS need(tag)
              WHERE NOT EXISTS (
                  SELECT 1 FROM {s}{p}event_tags o
                  WHERE o.tag = need.tag AND o.tenant_key = t.tenant_key
                    AND o.transaction_id = t.transaction_id AND o.position = t.position))
        ORDER BY t.transaction_id, t.position
        LIMIT 1
    ) m;
END
$$;
