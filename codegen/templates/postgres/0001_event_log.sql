-- Annals event log for PostgreSQL.
-- Applied by the runtime on connect (see `annals::store::PostgresEventStore`),
-- inside a transaction, once; recorded in {p}schema_history.

CREATE TABLE {s}{p}events (
    -- Global sequence. Unique and increasing within a transaction, but not in
    -- commit order across transactions: readers order by (transaction_id, position).
    position        bigint      GENERATED ALWAYS AS IDENTITY{position_key},
    -- The writing transaction. Readers of the global log only return rows with
    -- transaction_id < pg_snapshot_xmin(pg_current_snapshot()), i.e. written by
    -- transactions that can no longer commit late.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    payload         jsonb       NOT NULL,
    tenant_id       text,
    correlation_id  uuid,
    causation_id    uuid,
    actor           text,
    trace_context   text,
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(){global_keys}
){partition_by};
{partitions}
-- One index per read path.
CREATE INDEX {p}events_log_order   ON {s}{p}events (transaction_id, position);
CREATE INDEX {p}events_by_type     ON {s}{p}events (event_type, position);
CREATE INDEX {p}events_by_tenant   ON {s}{p}events (tenant_id, position) WHERE tenant_id IS NOT NULL;
CREATE INDEX {p}events_by_corr     ON {s}{p}events (correlation_id, position) WHERE correlation_id IS NOT NULL;
CREATE INDEX {p}events_by_time     ON {s}{p}events (recorded_at, position);
CREATE INDEX {p}events_by_header   ON {s}{p}events USING gin (headers jsonb_path_ops);

-- Events are immutable: no UPDATE, DELETE or TRUNCATE, whoever asks.
CREATE FUNCTION {s}{p}reject_event_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{p}events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER {p}events_immutable
    BEFORE UPDATE OR DELETE ON {s}{p}events
    FOR EACH ROW EXECUTE FUNCTION {s}{p}reject_event_mutation();

CREATE TRIGGER {p}events_no_truncate
    BEFORE TRUNCATE ON {s}{p}events
    FOR EACH STATEMENT EXECUTE FUNCTION {s}{p}reject_event_mutation();
