//! A small IAM domain written with the Annals macros, the way a user would:
//! tenants with one struct per event, users with one enum of events, a
//! tenant directory (in memory), role counts (SQL) and two handlers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use annals::{Apply, Handle, RecordedEvent, aggregate, event, handler, projection};
use serde::Deserialize;
use serde_json::{Value, json};

/// A tenant was created.
#[event(name = "test.tenant.created")]
pub struct TenantCreated {
    /// Its display name.
    pub name: String,
}

/// A tenant was renamed. Version 1 had only `new_name`.
#[event(name = "test.tenant.renamed", version = 2, upcast(from = 1, json = renamed_from_v1))]
pub struct TenantRenamed {
    /// The new name.
    pub name: String,
    /// Why.
    pub reason: String,
}

fn renamed_from_v1(v1: Value) -> Result<Value, String> {
    let name = v1
        .get("new_name")
        .cloned()
        .ok_or("version 1 payload lacks `new_name`")?;
    Ok(json!({ "name": name, "reason": "unspecified" }))
}

/// A tenant was suspended.
#[event(name = "test.tenant.suspended")]
pub struct TenantSuspended;

/// A tenant's state.
#[aggregate(
    name = "tenant",
    events(TenantCreated, TenantRenamed, TenantSuspended),
    snapshot_every = 50
)]
#[derive(Default, Debug, PartialEq)]
pub struct Tenant {
    /// Whether it exists.
    pub created: bool,
    /// Its name.
    pub name: String,
    /// Whether it is suspended.
    pub suspended: bool,
}

impl Apply<TenantCreated> for Tenant {
    fn apply(&mut self, event: &TenantCreated) {
        self.created = true;
        self.name = event.name.clone();
    }
}

impl Apply<TenantRenamed> for Tenant {
    fn apply(&mut self, event: &TenantRenamed) {
        self.name = event.name.clone();
    }
}

impl Apply<TenantSuspended> for Tenant {
    fn apply(&mut self, _: &TenantSuspended) {
        self.suspended = true;
    }
}

/// Why a tenant command is refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TenantError {
    /// Create on an existing tenant.
    #[error("the tenant already exists")]
    AlreadyExists,
    /// A command on a tenant that does not exist.
    #[error("no such tenant")]
    NotFound,
    /// A command on a suspended tenant.
    #[error("the tenant is suspended")]
    Suspended,
    /// An empty name.
    #[error("a tenant name may not be empty")]
    EmptyName,
}

/// Create a tenant.
pub struct CreateTenant {
    /// Its name.
    pub name: String,
}

/// Rename a tenant.
pub struct RenameTenant {
    /// The new name.
    pub name: String,
}

/// Suspend a tenant.
pub struct SuspendTenant;

impl Tenant {
    fn active(&self) -> Result<(), TenantError> {
        match (self.created, self.suspended) {
            (false, _) => Err(TenantError::NotFound),
            (true, true) => Err(TenantError::Suspended),
            (true, false) => Ok(()),
        }
    }
}

impl Handle<CreateTenant> for Tenant {
    type Error = TenantError;
    fn handle(&self, command: &CreateTenant) -> Result<Vec<TenantEvent>, TenantError> {
        if self.created {
            return Err(TenantError::AlreadyExists);
        }
        if command.name.trim().is_empty() {
            return Err(TenantError::EmptyName);
        }
        Ok(vec![
            TenantCreated {
                name: command.name.clone(),
            }
            .into(),
        ])
    }
}

impl Handle<RenameTenant> for Tenant {
    type Error = TenantError;
    fn handle(&self, command: &RenameTenant) -> Result<Vec<TenantEvent>, TenantError> {
        self.active()?;
        if command.name == self.name {
            return Ok(vec![]);
        }
        Ok(vec![
            TenantRenamed {
                name: command.name.clone(),
                reason: "requested".into(),
            }
            .into(),
        ])
    }
}

impl Handle<SuspendTenant> for Tenant {
    type Error = TenantError;
    fn handle(&self, _: &SuspendTenant) -> Result<Vec<TenantEvent>, TenantError> {
        self.active()?;
        Ok(vec![TenantSuspended.into()])
    }
}

/// Everything that happens to a user.
#[event]
pub enum UserEvent {
    /// Registered; version 1 had only the email.
    #[event(name = "test.user.registered", version = 2, upcast(from = 1, typed = registered_from_v1))]
    Registered {
        /// Email address.
        email: String,
        /// Display name.
        display_name: String,
    },
    /// A role was assigned.
    #[event(name = "test.user.role_assigned")]
    RoleAssigned {
        /// The role.
        role: String,
    },
    /// Renamed (a newtype variant).
    #[event(name = "test.user.renamed")]
    Renamed(String),
    /// Deactivated (a unit variant).
    #[event(name = "test.user.deactivated")]
    Deactivated,
}

/// The version 1 shape of `test.user.registered`.
#[derive(Deserialize)]
pub struct RegisteredV1 {
    email: String,
}

fn registered_from_v1(old: RegisteredV1) -> UserEvent {
    UserEvent::Registered {
        display_name: old.email.clone(),
        email: old.email,
    }
}

/// A user's state (aggregate name defaults to `user`).
#[aggregate(events(UserEvent))]
#[derive(Default, Debug)]
pub struct User {
    /// Email, empty before registration.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Assigned roles.
    pub roles: BTreeSet<String>,
    /// Whether deactivated.
    pub deactivated: bool,
}

impl Apply<UserEvent> for User {
    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Registered {
                email,
                display_name,
            } => {
                self.email = email.clone();
                self.display_name = display_name.clone();
            }
            UserEvent::RoleAssigned { role } => {
                self.roles.insert(role.clone());
            }
            UserEvent::Renamed(name) => self.display_name = name.clone(),
            UserEvent::Deactivated => self.deactivated = true,
        }
    }
}

/// Why a user command is refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum UserError {
    /// Register twice.
    #[error("already registered")]
    AlreadyRegistered,
    /// A command on an unregistered user.
    #[error("no such user")]
    NotFound,
}

/// Register a user.
pub struct RegisterUser {
    /// Email address.
    pub email: String,
}

/// Assign a role.
pub struct AssignRole {
    /// The role.
    pub role: String,
}

impl Handle<RegisterUser> for User {
    type Error = UserError;
    fn handle(&self, command: &RegisterUser) -> Result<Vec<UserEvent>, UserError> {
        if !self.email.is_empty() {
            return Err(UserError::AlreadyRegistered);
        }
        Ok(vec![UserEvent::Registered {
            email: command.email.clone(),
            display_name: command.email.clone(),
        }])
    }
}

impl Handle<AssignRole> for User {
    type Error = UserError;
    fn handle(&self, command: &AssignRole) -> Result<Vec<UserEvent>, UserError> {
        if self.email.is_empty() {
            return Err(UserError::NotFound);
        }
        if self.roles.contains(&command.role) {
            return Ok(vec![]);
        }
        Ok(vec![UserEvent::RoleAssigned {
            role: command.role.clone(),
        }])
    }
}

/// Tenant names by stream id (an in-memory read model).
#[derive(Default, Debug)]
pub struct TenantDirectory {
    /// Stream id to current name.
    pub names: BTreeMap<String, String>,
    /// Suspended tenants' stream ids.
    pub suspended: BTreeSet<String>,
}

#[projection(name = "test_tenant_directory", version = 3)]
impl TenantDirectory {
    fn created(&mut self, event: &TenantCreated, envelope: &RecordedEvent) {
        self.names
            .insert(envelope.stream_id.to_string(), event.name.clone());
    }

    fn renamed(&mut self, event: &TenantRenamed, envelope: &RecordedEvent) {
        self.names
            .insert(envelope.stream_id.to_string(), event.name.clone());
    }

    fn suspended(&mut self, _: &TenantSuspended, envelope: &RecordedEvent) {
        self.suspended.insert(envelope.stream_id.to_string());
    }
}

/// Role assignment counts in a SQL table `role_counts(role, users)`.
#[derive(Default, Debug)]
pub struct RoleCounts;

#[projection(name = "test_role_counts")]
impl RoleCounts {
    async fn user_event(
        &mut self,
        event: &UserEvent,
        db: &mut sqlx::SqliteConnection,
    ) -> Result<(), sqlx::Error> {
        if let UserEvent::RoleAssigned { role } = event {
            sqlx::query(
                "INSERT INTO role_counts (role, users) VALUES (?, 1) \
                 ON CONFLICT (role) DO UPDATE SET users = users + 1",
            )
            .bind(role)
            .execute(&mut *db)
            .await?;
        }
        Ok(())
    }
}

/// Emails the welcome handler has greeted (a stand-in for an outbox).
pub static WELCOMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Greets newly registered users.
#[handler(priority = 10, retry(attempts = 5, backoff = "10ms"), timeout = "2s")]
pub async fn welcome(event: &UserEvent, envelope: &RecordedEvent) -> Result<(), std::io::Error> {
    if let UserEvent::Registered { email, .. } = event {
        let mut welcomed = WELCOMED
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        welcomed.push(format!("{email} ({})", envelope.stream_id));
    }
    Ok(())
}

/// Audits every user event (runs after `welcome`).
#[handler(name = "test.audit")]
pub async fn audit(_event: &UserEvent) {}

/// Fails on purpose, for the registry's failure path.
#[handler(priority = -5)]
pub async fn always_fails(_event: &TenantSuspended) -> Result<(), String> {
    Err("the mail server is down".into())
}

/// Counts created tenants slowly (1 ms each), so a replay of it can be
/// cancelled midway.
#[derive(Default, Debug)]
pub struct SlowTenantCounter {
    /// Tenants seen.
    pub count: u64,
}

#[projection(name = "test_slow_tenant_counter")]
impl SlowTenantCounter {
    async fn created(&mut self, _event: &TenantCreated) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        self.count += 1;
    }
}

/// Role counts in SQLite that fail once, after writing, on a chosen role
/// assignment: the batch's transaction must roll back so nothing is counted
/// twice.
#[derive(Default, Debug)]
pub struct FlakySqliteRoleCounts {
    /// Fail (once) on the assignment with this ordinal (1-based).
    pub fail_on: Option<u64>,
    seen: u64,
}

impl FlakySqliteRoleCounts {
    /// Fails once on the `n`th role assignment it sees.
    pub fn failing_once_on(n: u64) -> Self {
        FlakySqliteRoleCounts {
            fail_on: Some(n),
            seen: 0,
        }
    }
}

#[projection(name = "test_role_counts_sqlite")]
impl FlakySqliteRoleCounts {
    async fn user_event(
        &mut self,
        event: &UserEvent,
        db: &mut sqlx::SqliteConnection,
    ) -> Result<(), String> {
        if let UserEvent::RoleAssigned { role } = event {
            sqlx::query("INSERT INTO role_counts (role, users) VALUES (?, 1) ON CONFLICT (role) DO UPDATE SET users = users + 1")
                .bind(role)
                .execute(&mut *db)
                .await
                .map_err(|error| error.to_string())?;
            self.seen += 1;
            if self.fail_on == Some(self.seen) {
                self.fail_on = None;
                return Err("injected failure after the write".into());
            }
        }
        Ok(())
    }
}

/// The same in PostgreSQL.
#[derive(Default, Debug)]
pub struct FlakyPostgresRoleCounts {
    /// Fail (once) on the assignment with this ordinal (1-based).
    pub fail_on: Option<u64>,
    seen: u64,
}

impl FlakyPostgresRoleCounts {
    /// Fails once on the `n`th role assignment it sees.
    pub fn failing_once_on(n: u64) -> Self {
        FlakyPostgresRoleCounts {
            fail_on: Some(n),
            seen: 0,
        }
    }
}

#[projection(name = "test_role_counts_postgres")]
impl FlakyPostgresRoleCounts {
    async fn user_event(
        &mut self,
        event: &UserEvent,
        db: &mut sqlx::PgConnection,
    ) -> Result<(), String> {
        if let UserEvent::RoleAssigned { role } = event {
            sqlx::query(
                "INSERT INTO role_counts (role, users) VALUES ($1, 1) \
                 ON CONFLICT (role) DO UPDATE SET users = role_counts.users + 1",
            )
            .bind(role)
            .execute(&mut *db)
            .await
            .map_err(|error| error.to_string())?;
            self.seen += 1;
            if self.fail_on == Some(self.seen) {
                self.fail_on = None;
                return Err("injected failure after the write".into());
            }
        }
        Ok(())
    }
}

/// Users per role in a table it declares (`role_tally`), on SQLite and
/// PostgreSQL alike: a read model an operator can rebuild in place (the
/// runner empties the declared table and starts over).
#[derive(Default, Debug)]
pub struct RoleTally;

#[projection(
    name = "test_role_tally",
    version = 1,
    table(
        name = "role_tally",
        columns(role = "text", users = "integer"),
        primary_key(role),
    )
)]
impl RoleTally {
    async fn user_event(
        &mut self,
        event: &UserEvent,
        db: &mut dyn annals::projection::sql_read_model::SqlConnection,
    ) -> annals::Result<()> {
        if let UserEvent::RoleAssigned { role } = event {
            db.execute(
                "INSERT INTO role_tally (role, users) VALUES ($1, 1) \
                 ON CONFLICT (role) DO UPDATE SET users = role_tally.users + 1",
                &[role.into()],
            )
            .await?;
        }
        Ok(())
    }
}
