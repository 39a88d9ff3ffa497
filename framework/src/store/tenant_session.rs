//! Where a PostgreSQL store handle runs its statements: a pooled connection
//! for the unscoped store, or, for a tenant-scoped handle
//! ([`PostgresEventStore::for_tenant`](super::PostgresEventStore::for_tenant)),
//! a transaction that first sets `annals.tenant` for itself alone
//! (`set_config(.., true)`). Row-level security (migration 0009) then
//! confines every statement of the transaction to that tenant's rows, in the
//! database: a connection returned to the pool carries nothing over, so
//! tenants share one pool.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Transaction};

use crate::error::Result;

fn failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> crate::Error {
    super::row::failed("postgres", operation)
}

/// One operation's connection.
pub(crate) enum Session {
    /// The unscoped store: a connection in autocommit mode.
    Shared(PoolConnection<Postgres>),
    /// A tenant-scoped handle, or an operation with planner settings: a
    /// transaction with the tenant and the settings set for it alone.
    Transaction(Transaction<'static, Postgres>),
}

/// Settings (fixed names and values) a transaction sets for itself alone
/// with `SET LOCAL`, such as the planner settings a statement needs to be
/// planned well.
pub(crate) type LocalSettings = &'static [(&'static str, &'static str)];

impl Session {
    /// A connection for one operation of a handle scoped to `tenant`, if any.
    pub(crate) async fn open(pool: &PgPool, tenant: Option<&str>) -> Result<Session> {
        Session::open_with_settings(pool, tenant, &[]).await
    }

    /// A connection for one operation that needs `settings`: a transaction
    /// that sets them for itself alone, and the tenant if scoped; a pooled
    /// connection in autocommit mode when there is nothing to set. Nothing
    /// carries over to the pooled connection.
    pub(crate) async fn open_with_settings(
        pool: &PgPool,
        tenant: Option<&str>,
        settings: LocalSettings,
    ) -> Result<Session> {
        if tenant.is_none() && settings.is_empty() {
            return Ok(Session::Shared(
                pool.acquire().await.map_err(failed("acquire connection"))?,
            ));
        }
        Ok(Session::Transaction(
            begin_with_settings(pool, tenant, settings).await?,
        ))
    }

    /// The connection to run statements on.
    pub(crate) fn connection(&mut self) -> &mut PgConnection {
        match self {
            Session::Shared(connection) => connection,
            Session::Transaction(transaction) => transaction,
        }
    }

    /// Ends the operation: commits its transaction, if it has one. (Dropping a
    /// session instead rolls it back.)
    pub(crate) async fn finish(self) -> Result<()> {
        match self {
            Session::Shared(_) => Ok(()),
            Session::Transaction(transaction) => transaction
                .commit()
                .await
                .map_err(failed("commit transaction")),
        }
    }
}

/// A transaction, with `annals.tenant` set for it when scoped to a tenant.
pub(crate) async fn begin(
    pool: &PgPool,
    tenant: Option<&str>,
) -> Result<Transaction<'static, Postgres>> {
    begin_with_settings(pool, tenant, &[]).await
}

/// A transaction with `settings` set for it (`SET LOCAL`, sent with its
/// `BEGIN` in one round trip), and `annals.tenant` when scoped to a tenant.
async fn begin_with_settings(
    pool: &PgPool,
    tenant: Option<&str>,
    settings: LocalSettings,
) -> Result<Transaction<'static, Postgres>> {
    let begin = settings
        .iter()
        .fold(String::from("BEGIN"), |sql, (name, value)| {
            format!("{sql}; SET LOCAL {name} = {value}")
        });
    let mut transaction = pool
        .begin_with(sqlx::AssertSqlSafe(begin))
        .await
        .map_err(failed("begin transaction"))?;
    if let Some(tenant) = tenant {
        sqlx::query("SELECT set_config('annals.tenant', $1, true)")
            .bind(tenant)
            .execute(&mut *transaction)
            .await
            .map_err(failed("set the transaction's tenant"))?;
    }
    Ok(transaction)
}
