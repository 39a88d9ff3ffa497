//! Tenant handles: scoping a handle to one tenant, and the database role
//! grants row-level security needs.

use crate::error::{Error, Result};
use crate::store::StreamAppend;
use crate::store::tenant_roles::{self, PoolRole};

use super::{PostgresEventStore, failed};

impl PostgresEventStore {
    /// A handle on the same pool whose every statement PostgreSQL confines
    /// to `tenant`'s rows, by row-level security on Annals' tables: each
    /// operation runs in a transaction that sets `annals.tenant` for itself
    /// alone. It reads, queries and replays only the tenant's events,
    /// snapshots, checkpoints and dead letters, and stamps the tenant on the
    /// events it appends (refusing events that name another tenant).
    /// Stream ids belong to their tenant: `acme`'s `user-1` and `globex`'s
    /// `user-1` are two streams, each with its own versions, and neither
    /// tenant's appends or errors reveal the other's. The handle does not
    /// migrate and has no group commit.
    ///
    /// The unscoped store (the owner's cross-tenant path) addresses a stream
    /// by its id alone: reading an id that several tenants use is refused
    /// ([`Error::InvalidInput`], field `stream id`), and its appends go to
    /// the stream of the tenant their events name.
    ///
    /// The pool must connect as the *application role*: a role granted
    /// access with [`grant_tenant_access`](Self::grant_tenant_access), which
    /// PostgreSQL confines to the tenant its transaction names and to
    /// nothing without one. The handle refuses ([`Error::Config`]) a role
    /// the policies pass by: a superuser, a `BYPASSRLS` role, or the owner
    /// role that applied the migrations (the cross-tenant path).
    ///
    /// ```no_run
    /// use annals::prelude::*;
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// let store = PostgresEventStore::builder("postgres://iam_app@localhost/iam")
    ///     .migrate(false) // the owner role migrates
    ///     .connect()
    ///     .await?;
    /// let acme = store.for_tenant("acme").await?;
    /// let globex = store.for_tenant("globex").await?;
    /// let user = StreamId::new("user-1")?;
    /// let registered = || NewEvent::json("iam.user.registered", &serde_json::json!({}));
    /// acme.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// // globex's `user-1` is another stream: it does not exist yet.
    /// assert!(globex.read_stream(&user, 1, 100).await?.is_empty());
    /// globex.append(&user, ExpectedVersion::NoStream, vec![registered()?]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn for_tenant(&self, tenant: impl Into<String>) -> Result<PostgresEventStore> {
        let tenant = tenant.into();
        crate::store::tenancy::validate_tenant_id(&tenant)?;
        let role = self
            .role
            .get_or_try_init(|| PoolRole::read(&self.pool, &self.tables))
            .await?;
        if let Some(reason) = role.unconfined {
            return Err(Error::Config(format!(
                "a handle scoped to tenant {tenant:?} needs row-level security, but PostgreSQL \
                 does not confine role {:?} ({reason}); connect tenant handles as an \
                 application role granted access with `grant_tenant_access`",
                role.name
            )));
        }
        Ok(PostgresEventStore {
            tenant: Some(tenant.into()),
            group: None,
            flight_pool: None,
            ..self.clone()
        })
    }

    /// The statements that give `role` (an existing role: 1 to 63
    /// lowercase letters, digits or underscores) the privileges of the
    /// application role on this store's tables: `SELECT` and `INSERT` on
    /// events, read and write on snapshots, checkpoints, dead letters and
    /// subject keys, all through the row-level security policies, and
    /// nothing on a partitioned layout's side table. For a DBA to review
    /// and apply; [`grant_tenant_access`](Self::grant_tenant_access) applies
    /// them.
    ///
    /// ```no_run
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// let owner = PostgresEventStore::builder("postgres://iam_owner@localhost/iam")
    ///     .schema("iam")
    ///     .connect()
    ///     .await?;
    /// println!("{}", owner.tenant_access_sql("iam_app").await?);
    /// // GRANT USAGE ON SCHEMA iam TO iam_app;
    /// // GRANT SELECT ON iam.annals_schema_history TO iam_app;
    /// // GRANT SELECT, INSERT ON iam.annals_events TO iam_app; ...
    /// # Ok(())
    /// # }
    /// ```
    pub async fn tenant_access_sql(&self, role: &str) -> Result<String> {
        let schema = tenant_roles::home_schema(&self.pool, &self.tables).await?;
        tenant_roles::application_grants(&schema, &self.tables, role)
    }

    /// Grants `role` the application role's privileges (see
    /// [`tenant_access_sql`](Self::tenant_access_sql)). Run it connected as
    /// the owner role; the role must exist (`CREATE ROLE iam_app LOGIN`).
    ///
    /// ```no_run
    /// use annals::store::PostgresEventStore;
    ///
    /// # async fn run() -> annals::Result<()> {
    /// // Once, as the owner: migrate and grant.
    /// let owner = PostgresEventStore::connect("postgres://iam_owner@localhost/iam").await?;
    /// owner.grant_tenant_access("iam_app").await?;
    /// // Then the service, as the application role.
    /// let app = PostgresEventStore::builder("postgres://iam_app@localhost/iam")
    ///     .migrate(false)
    ///     .connect()
    ///     .await?;
    /// let acme = app.for_tenant("acme").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn grant_tenant_access(&self, role: &str) -> Result<()> {
        let sql = self.tenant_access_sql(role).await?;
        // Identifiers checked by `application_grants`: plain names only.
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map_err(failed("grant tenant access"))?;
        Ok(())
    }

    /// On a tenant-scoped handle, puts the tenant on every event, refusing
    /// an event that names another.
    pub(super) fn stamp_tenant(&self, batch: &mut [StreamAppend]) -> Result<()> {
        let Some(tenant) = &self.tenant else {
            return Ok(());
        };
        for append in batch {
            for event in &mut append.events {
                match &event.metadata.tenant_id {
                    None => event.metadata.tenant_id = Some(tenant.to_string()),
                    Some(named) if **named == **tenant => {}
                    Some(named) => {
                        return Err(Error::invalid(
                            "tenant id",
                            format!(
                                "event {} for stream `{}` names tenant {named:?}, but the handle is scoped to {tenant:?}",
                                event.event_id, append.stream_id
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
