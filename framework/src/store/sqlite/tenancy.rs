//! Tenant handles: the tenant a handle is scoped to, and which tenant holds a
//! stream id.

use std::sync::Arc;

use sqlx::{QueryBuilder, Sqlite};

use crate::error::Result;
use crate::store::StreamAppend;
use crate::store::stream::StreamId;

use super::{SqliteEventStore, failed};

impl SqliteEventStore {
    /// A handle on the same file scoped to `tenant`: it reads, queries and
    /// replays only the tenant's events, snapshots, checkpoints, dead letters
    /// and data subjects, and stamps the tenant on the events it appends
    /// (refusing events that name another tenant). Stream ids belong to
    /// their tenant, as on PostgreSQL: `acme`'s `user-1` and `globex`'s
    /// `user-1` are two streams. The unscoped store addresses a stream by its
    /// id alone, and refuses an id several tenants hold
    /// ([`Error::InvalidInput`](crate::Error::InvalidInput), field `stream id`).
    ///
    /// SQLite has no row-level security: the scoping is this code's, and
    /// anything with the file (or the pool) reads every tenant.
    ///
    /// ```
    /// use annals::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteEventStore::open(dir.path().join("tenants.db")).await?;
    /// let acme = store.for_tenant("acme")?;
    /// let globex = store.for_tenant("globex")?;
    /// let user = StreamId::new("user-1")?;
    /// let registered = || NewEvent::json("iam.user.registered", &serde_json::json!({}));
    /// acme.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// assert!(globex.read_stream(&user, 1, 100).await?.is_empty());
    /// globex.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// assert!(matches!(store.read_stream(&user, 1, 100).await, Err(Error::InvalidInput { .. })));
    /// # Ok::<(), annals::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn for_tenant(&self, tenant: impl Into<String>) -> Result<SqliteEventStore> {
        let tenant = tenant.into();
        crate::store::tenancy::validate_tenant_id(&tenant)?;
        Ok(SqliteEventStore {
            tenant: Some(Arc::from(tenant)),
            ..self.clone()
        })
    }

    /// The tenant this handle keeps its own rows under (`""` unscoped).
    pub(super) fn own_tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or("")
    }

    /// A tenant handle's condition on events, after the query's first one.
    pub(super) fn push_scope(&self, sql: &mut QueryBuilder<Sqlite>) {
        if let Some(tenant) = self.tenant.as_deref() {
            sql.push(" AND tenant_id = ").push_bind(tenant.to_owned());
        }
    }

    /// A tenant handle's appends carry its tenant.
    pub(super) fn stamp(&self, batch: &mut [StreamAppend]) -> Result<()> {
        if let Some(tenant) = self.tenant.as_deref() {
            for append in batch {
                crate::store::tenancy::stamp_tenant(tenant, &mut append.events)?;
            }
        }
        Ok(())
    }

    /// The tenant whose stream `stream` means: this handle's, or for the
    /// unscoped store the one tenant holding the id (refused when several
    /// do; `""` when none does).
    pub(super) async fn stream_owner(&self, stream: &StreamId) -> Result<String> {
        if let Some(tenant) = self.tenant.as_deref() {
            return Ok(tenant.to_owned());
        }
        let holders: Vec<String> = sqlx::query_scalar(self.tables.sql(
            "SELECT COALESCE(tenant_id, '') FROM annals_events WHERE stream_id = ? AND version = 1",
        ))
        .bind(stream.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(failed("find the stream's tenant"))?;
        crate::store::tenancy::check_one_holder(stream, holders.len())?;
        Ok(holders.into_iter().next().unwrap_or_default())
    }
}
