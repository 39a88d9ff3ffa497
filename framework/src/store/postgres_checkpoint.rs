//! The PostgreSQL checkpoint statements, shared by the store's
//! `load_checkpoint`/`save_checkpoint` and the SQL read models, which commit
//! a checkpoint with each batch. A checkpoint's identity is its tenant and
//! its name (migration 0011): the tenant is the transaction's
//! `annals.tenant` (set by a tenant handle's session), or `''` for the
//! unscoped store, so two tenants' readers of one name never share a row.

/// The position saved under `$1` in the transaction's tenant, as
/// `(commit_id, sequence)`.
pub(crate) const LOAD: &str = "SELECT commit_id, sequence FROM annals_checkpoints \
     WHERE tenant_id = COALESCE(current_setting('annals.tenant', true), '') AND name = $1";

/// Saves `($2, $3)` under `$1` in the transaction's tenant (the column's
/// default).
pub(crate) const SAVE: &str = "INSERT INTO annals_checkpoints (name, commit_id, sequence, updated_at) \
     VALUES ($1, $2, $3, now()) \
     ON CONFLICT (tenant_id, name) DO UPDATE SET commit_id = excluded.commit_id, \
     sequence = excluded.sequence, updated_at = excluded.updated_at";

/// Serialises writers of the checkpoint `$1` in the transaction's tenant,
/// schema and table prefix (the table's name, renamed with the prefix like
/// every statement), until the transaction ends.
pub(crate) const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended(\
     concat_ws(':', 'annals_checkpoints', current_schema(), \
               length(COALESCE(current_setting('annals.tenant', true), '')), \
               COALESCE(current_setting('annals.tenant', true), ''), $1::text), 0))";
