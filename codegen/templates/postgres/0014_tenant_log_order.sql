-- A tenant's read of the global log costs in proportion to its own events:
-- a tenant handle's gap-safe read (`(transaction_id, position) > ...`
-- ordered by both, confined by row-level security to `tenant_id = ...`)
-- walks this index from its tenant's last position instead of scanning
-- every other tenant's events since then.

CREATE INDEX {p}events_tenant_log_order ON {s}{p}events (tenant_id, transaction_id, position);
